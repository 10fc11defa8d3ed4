"""A declarative model, version 1: frozen dataclasses, strict parsing, canonical form and hash.

The `[model]` table of a job spec, as tomllib parses it, in one of two forms:

    format = 1
    layers = [{ type = "linear", out = 256 }, { type = "relu" }, { type = "linear" }]

a chain, each layer taking the previous one's output (the first takes the model input);
or a graph, for residual and multi-branch models:

    format = 1
    graph = [
      { name = "a", type = "linear", out = 784, inputs = ["input"] },
      { name = "b", type = "add", inputs = ["a", "input"] },
      { name = "logits", type = "linear", inputs = ["b"] },
    ]
    output = "logits"

with nodes in topological order: each input names an earlier node or the model input
`input`, names are unique, and every node contributes to `output`. Either form may add
`weights_sha256 = "<64 lowercase hex>"`: the model then starts from the public
safetensors file of that hash (`weights`), streamed with the job, instead of drawn weights. A layer's `type` is
one of `ops.OPS`; its other keys are that op's parameters. The input shape and the
number of classes come from the dataset, not from here: the linear layer producing
the output may omit `out`, which then means "one per class".

The canonical form (`to_canonical`) fills in every default and spells every value one
way (kernel = 3 is [3, 3] in 2-D, p = 0 is 0.0, an omitted optional value is null), so
two TOML spellings of one model share `sha256`, and any change of value changes it.
`weights_sha256` is in it only when given, so it binds the initial weights without
changing the hash of any model that has none.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from enclave.hazmat.cbor import dumps as canonical_dumps
from enclave.training.modelfmt.errors import ModelFormatError, RefusedOp, UnknownOp
from enclave.training.modelfmt.limits import MAX_LAYERS, MAX_NAME_LENGTH
from enclave.training.modelfmt.ops import OPS, REFUSED, OpDef
from enclave.training.modelfmt.params import Value, describe, shown_int

__all__ = ["FORMAT_VERSION", "MODEL_INPUT", "ModelFormat", "Node", "parse_model"]

FORMAT_VERSION = 1
#: The name graph nodes use for the model's input (the dataset's feature tensor).
MODEL_INPUT = "input"

Form = Literal["layers", "graph"]

_NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_NAME_LENGTH - 1}}}")
_TOP_KEYS = ("format", "layers", "graph", "output", "weights_sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NODE_KEYS = {"layers": ("type",), "graph": ("name", "type", "inputs")}


@dataclass(frozen=True)
class Node:
    """One layer: its op, every parameter (defaults filled in) and where its inputs come from."""

    form: Form
    index: int
    name: str
    op: str
    inputs: tuple[str, ...]
    args: tuple[tuple[str, Value], ...]

    @property
    def label(self) -> str:
        """How messages name this layer: `model.layers[3] (linear)`, `model.graph[2] 'proj' (linear)`."""
        if self.form == "layers":
            return f"model.layers[{self.index}] ({self.op})"
        return f"model.graph[{self.index}] {self.name!r} ({self.op})"

    @property
    def arguments(self) -> dict[str, Value]:
        return dict(self.args)


@dataclass(frozen=True)
class ModelFormat:
    """A parsed, validated model; build it with `parse_model`, size it with `plan.plan_model`."""

    form: Form
    nodes: tuple[Node, ...]
    output: str
    #: Hex SHA-256 of the public safetensors file the model starts from; None: CSPRNG-drawn weights.
    weights_sha256: str | None = None

    def to_canonical(self) -> dict[str, Any]:
        """The model as plain containers in its one spelling (see the module docstring)."""
        nodes = []
        for node in self.nodes:
            entry: dict[str, Any] = {"type": node.op}
            if self.form == "graph":
                entry["name"] = node.name
                entry["inputs"] = list(node.inputs)
            entry.update({key: _canonical_value(value) for key, value in node.args})
            nodes.append(entry)
        canonical: dict[str, Any] = {"format": FORMAT_VERSION, self.form: nodes}
        if self.form == "graph":
            canonical["output"] = self.output
        # Only when given: a model without initial weights keeps the hash it had before they existed.
        if self.weights_sha256 is not None:
            canonical["weights_sha256"] = self.weights_sha256
        return canonical

    def canonical_cbor(self) -> bytes:
        return canonical_dumps(self.to_canonical())

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of `canonical_cbor()`."""
        return hashlib.sha256(self.canonical_cbor()).hexdigest()


def _canonical_value(value: Value) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def parse_model(raw: object) -> ModelFormat:
    """Validate a parsed `[model]` table; ModelFormatError (one line, naming the layer) otherwise."""
    if not isinstance(raw, Mapping):
        raise ModelFormatError(f"model must be a table, got {describe(raw)}")
    _check_keys(raw, "model", _TOP_KEYS)
    if "format" not in raw:
        raise ModelFormatError("model.format is required (format = 1)")
    version = raw["format"]
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        shown = shown_int(version) if isinstance(version, int) and not isinstance(version, bool) else describe(version)
        raise ModelFormatError(f"model.format must be {FORMAT_VERSION}, got {shown}")
    if ("layers" in raw) == ("graph" in raw):
        raise ModelFormatError("model needs exactly one of layers (a chain) and graph (named nodes)")
    form: Form = "layers" if "layers" in raw else "graph"
    entries = raw[form]
    if not isinstance(entries, (list, tuple)):
        raise ModelFormatError(f"model.{form} must be an array of tables, got {describe(entries)}")
    if not 1 <= len(entries) <= MAX_LAYERS:
        raise ModelFormatError(f"model.{form} must hold 1..{MAX_LAYERS} layers, got {len(entries)}")
    if form == "layers":
        if "output" in raw:
            raise ModelFormatError("model.output belongs to the graph form; a chain's output is its last layer")
        nodes = tuple(_parse_layer(entry, index) for index, entry in enumerate(entries))
        output = nodes[-1].name
    else:
        nodes = _parse_graph(entries)
        output = _parse_output(raw, nodes)
    _check_open_out(nodes, output)
    return ModelFormat(form=form, nodes=nodes, output=output, weights_sha256=_parse_weights(raw))


def _parse_weights(raw: Mapping[str, object]) -> str | None:
    value = raw.get("weights_sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        shown = describe(value) if not isinstance(value, str) else repr(value[:72]) + ("..." * (len(value) > 72))
        raise ModelFormatError(f"model.weights_sha256 must be 64 lowercase hex digits (the SHA-256 of the "
                               f"initial weights file), got {shown}")
    return value


def _check_keys(table: Mapping[Any, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in table:
        if not isinstance(key, str):
            raise ModelFormatError(f"{where}: keys must be strings, got {describe(key)}")
        if key not in allowed:
            shown = key if len(key) <= MAX_NAME_LENGTH else key[:MAX_NAME_LENGTH] + "..."
            raise ModelFormatError(f"{where}: unknown key {shown!r} (allowed: {', '.join(allowed)})")


def _op_of(entry: object, where: str) -> tuple[Mapping[str, object], OpDef]:
    if not isinstance(entry, Mapping):
        raise ModelFormatError(f"{where} must be a table, got {describe(entry)}")
    if "type" not in entry:
        raise ModelFormatError(f"{where}: type is required")
    kind = entry["type"]
    if not isinstance(kind, str):
        raise ModelFormatError(f"{where}: type must be a string, got {describe(kind)}")
    refused = REFUSED.get(kind)
    if refused is not None:
        raise RefusedOp(f"{where}: {refused}")
    op = OPS.get(kind)
    if op is None:
        shown = kind if len(kind) <= MAX_NAME_LENGTH and kind.isprintable() else kind[:MAX_NAME_LENGTH] + "..."
        raise UnknownOp(f"{where}: unknown layer type {shown!r} (supported: {', '.join(sorted(OPS))})")
    return entry, op


def _parse_layer(entry: object, index: int) -> Node:
    where = f"model.layers[{index}]"
    table, op = _op_of(entry, where)
    at = f"{where} ({op.name})"
    _check_keys(table, at, (*_NODE_KEYS["layers"], *op.keys))
    if op.min_inputs > 1:
        raise ModelFormatError(f"{at}: takes {op.min_inputs} or more inputs, which needs the graph form")
    args = op.read_args(table, at)
    previous = MODEL_INPUT if index == 0 else f"layers[{index - 1}]"
    return Node("layers", index, f"layers[{index}]", op.name, (previous,), tuple(args.items()))


def _parse_graph(entries: list[object] | tuple[object, ...]) -> tuple[Node, ...]:
    nodes: list[Node] = []
    known = {MODEL_INPUT}
    for index, entry in enumerate(entries):
        where = f"model.graph[{index}]"
        table, op = _op_of(entry, where)
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            shown = describe(name) if not isinstance(name, str) else repr(name[: MAX_NAME_LENGTH + 1])
            raise ModelFormatError(
                f"{where} ({op.name}): name must be 1..{MAX_NAME_LENGTH} characters of [a-z0-9_] "
                f"starting with a letter, got {shown}"
            )
        at = f"{where} {name!r} ({op.name})"
        if name in known:
            what = "the model input" if name == MODEL_INPUT else "an earlier node"
            raise ModelFormatError(f"{at}: the name is already taken by {what}")
        _check_keys(table, at, (*_NODE_KEYS["graph"], *op.keys))
        inputs = _parse_inputs(table.get("inputs"), at, op, known)
        args = op.read_args(table, at)
        nodes.append(Node("graph", index, name, op.name, inputs, tuple(args.items())))
        known.add(name)
    return tuple(nodes)


def _parse_inputs(raw: object, at: str, op: OpDef, known: set[str]) -> tuple[str, ...]:
    count = f"{op.min_inputs}" if op.min_inputs == op.max_inputs else f"{op.min_inputs}..{op.max_inputs}"
    if raw is None:
        raise ModelFormatError(f"{at}: inputs is required (an array of {count} earlier node names or 'input')")
    if not isinstance(raw, (list, tuple)):
        raise ModelFormatError(f"{at}: inputs must be an array of node names, got {describe(raw)}")
    if not op.min_inputs <= len(raw) <= op.max_inputs:
        raise ModelFormatError(f"{at}: takes {count} inputs, got {len(raw)}")
    for value in raw:
        if not isinstance(value, str):
            raise ModelFormatError(f"{at}: inputs must be node names, got {describe(value)}")
        if value not in known:
            shown = value[: MAX_NAME_LENGTH + 1]
            raise ModelFormatError(f"{at}: input {shown!r} is neither 'input' nor an earlier node")
    return tuple(raw)


def _parse_output(raw: Mapping[str, object], nodes: tuple[Node, ...]) -> str:
    output = raw.get("output")
    if output is None:
        raise ModelFormatError("model.output is required in the graph form (the name of the node giving the logits)")
    names = {node.name: node for node in nodes}
    if not isinstance(output, str) or output not in names:
        shown = repr(output[: MAX_NAME_LENGTH + 1]) if isinstance(output, str) else describe(output)
        raise ModelFormatError(f"model.output must name a node of the graph, got {shown}")
    # Every node must feed the output: an unused one would be trained (and counted) for nothing.
    used = {output}
    for node in reversed(nodes):
        if node.name in used:
            used.update(node.inputs)
        else:
            raise ModelFormatError(f"{node.label}: the node does not contribute to model.output {output!r}")
    return output


def _check_open_out(nodes: tuple[Node, ...], output: str) -> None:
    for node in nodes:
        if node.op == "linear" and node.arguments["out"] is None and node.name != output:
            raise ModelFormatError(f"{node.label}: out is required (only the layer giving the output may omit it)")
