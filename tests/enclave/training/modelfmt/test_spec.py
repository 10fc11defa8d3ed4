"""Parsing the declarative model format: strict refusals with one-line messages, canonical form and hash."""
from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import ConfigError
from enclave.training.modelfmt.errors import ModelFormatError, RefusedOp, UnknownOp
from enclave.training.modelfmt.limits import MAX_LAYERS
from enclave.training.modelfmt.presets import PRESETS
from enclave.training.modelfmt.spec import ModelFormat, Node, parse_model
from tests.enclave.training.modelfmt.cases import CASES

ROOT = Path(__file__).resolve().parents[4]

#: SHA-256 of the canonical CBOR of the "mlp" preset. Changing it changes every spec hash
#: of a model in this format: only with a new format version.
MLP_SHA256 = "3a3307400853f95f4d816e8e47c0f4a1519d52ed9ac382b6467364ef81d53cff"


def _model(text: str) -> Any:
    return tomllib.loads(text)["model"]


def _refused(raw: Any, match: str, error: type[ModelFormatError] = ModelFormatError) -> str:
    with pytest.raises(error) as info:
        parse_model(raw)
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message and isinstance(info.value, ConfigError) and info.value.code == "config"
    return message


def _layers(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "layers": list(layers)}


# -- accepted forms ------------------------------------------------------------------------------


def test_the_layers_form_parses_from_toml() -> None:
    spec = parse_model(
        _model(
            '[model]\nformat = 1\nlayers = [{ type = "linear", out = 256 }, { type = "relu" }, '
            '{ type = "linear", out = 26 }]\n'
        )
    )
    assert spec.form == "layers" and spec.output == "layers[2]"
    assert [n.op for n in spec.nodes] == ["linear", "relu", "linear"]
    assert spec.nodes[0] == Node("layers", 0, "layers[0]", "linear", ("input",), (("out", 256), ("bias", True)))
    assert spec.nodes[2].inputs == ("layers[1]",) and spec.nodes[2].label == "model.layers[2] (linear)"


def test_the_graph_form_parses_from_toml() -> None:
    spec = parse_model(
        _model(
            """
            [model]
            format = 1
            output = "logits"
            graph = [
              { name = "a", type = "linear", out = 64, inputs = ["input"] },
              { name = "b", type = "add", inputs = ["a", "a"] },
              { name = "logits", type = "linear", inputs = ["b"] },
            ]
            """
        )
    )
    assert spec.form == "graph" and spec.output == "logits"
    assert [(n.name, n.inputs) for n in spec.nodes] == [("a", ("input",)), ("b", ("a", "a")), ("logits", ("b",))]
    assert spec.nodes[1].label == "model.graph[1] 'b' (add)"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_parse_and_are_read_only(name: str) -> None:
    assert isinstance(parse_model(PRESETS[name]), ModelFormat)
    with pytest.raises(TypeError):
        PRESETS[name]["format"] = 2  # type: ignore[index]
    form = "layers" if "layers" in PRESETS[name] else "graph"
    with pytest.raises(TypeError):
        PRESETS[name][form][0]["type"] = "relu"  # type: ignore[index]


def test_parsed_models_are_frozen() -> None:
    spec = parse_model(PRESETS["mlp"])
    with pytest.raises(AttributeError):
        spec.output = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        spec.nodes[0].op = "relu"  # type: ignore[misc]


# -- canonical form and hash ---------------------------------------------------------------------

_TERSE = """
[model]
format = 1
layers = [
  { type = "conv2d", out_channels = 16, kernel = 8, stride = 2, padding = 3 },
  { type = "tanh" },
  { type = "max_pool2d", kernel = 2, stride = 1 },
  { type = "avg_pool1d", kernel = 3 },
  { type = "dropout", p = 0 },
  { type = "linear", out = 32 },
]
"""

_SPELLED_OUT = """
[model]
format = 1

[[model.layers]]
padding = [3, 3]
groups = 1
bias = true
kernel = [8, 8]
type = "conv2d"
stride = [2, 2]
out_channels = 16

[[model.layers]]
type = "tanh"

[[model.layers]]
type = "max_pool2d"
kernel = [2, 2]
stride = [1, 1]
padding = 0

[[model.layers]]
stride = 3
type = "avg_pool1d"
kernel = [3]
padding = [0]

[[model.layers]]
type = "dropout"
p = 0.0

[[model.layers]]
type = "linear"
bias = true
out = 32
"""


def test_two_spellings_of_one_model_have_one_canonical_form_and_hash() -> None:
    terse, spelled = parse_model(_model(_TERSE)), parse_model(_model(_SPELLED_OUT))
    assert terse == spelled
    assert terse.canonical_cbor() == spelled.canonical_cbor() and terse.sha256 == spelled.sha256
    canonical = terse.to_canonical()
    assert canonical["layers"][0] == {
        "type": "conv2d", "out_channels": 16, "kernel": [8, 8], "stride": [2, 2], "padding": [3, 3],
        "groups": 1, "bias": True,
    }
    assert canonical["layers"][3] == {"type": "avg_pool1d", "kernel": [3], "stride": [3], "padding": [0]}
    assert canonical["layers"][4] == {"type": "dropout", "p": 0.0} and isinstance(canonical["layers"][4]["p"], float)


def _changes(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of `raw` with exactly one value changed (every parameter of every layer in turn)."""
    out = []
    for i, layer in enumerate(raw["layers"]):
        for key, value in layer.items():
            if key == "type":
                continue
            changed = copy.deepcopy(raw)
            if isinstance(value, bool):
                changed["layers"][i][key] = not value
            elif isinstance(value, float):
                changed["layers"][i][key] = value / 2
            else:
                changed["layers"][i][key] = value + 1
            out.append(changed)
    changed = copy.deepcopy(raw)
    changed["layers"][-1]["out"] = 10  # stating the class count is not the same as omitting it
    out.append(changed)
    changed = copy.deepcopy(raw)
    changed["layers"][7]["bias"] = True  # stating a default is the same model
    out.append(changed)
    return out


def test_any_change_of_value_changes_the_hash() -> None:
    raw = copy.deepcopy({"format": 1, "layers": [dict(layer) for layer in PRESETS["tanh_cnn"]["layers"]]})
    base = parse_model(raw).sha256
    *changed, same = _changes(raw)
    hashes = {parse_model(c).sha256 for c in changed}
    assert len(hashes) == len(changed) and base not in hashes
    assert parse_model(same).sha256 == base


def test_the_graph_form_hashes_names_wiring_and_output() -> None:
    def graph(name: str, wiring: list[str]) -> dict[str, Any]:
        return {
            "format": 1, "output": "out",
            "graph": [
                {"name": name, "type": "linear", "out": 4, "inputs": ["input"]},
                {"name": "r", "type": "relu", "inputs": [name]},
                {"name": "out", "type": "add", "inputs": wiring},
            ],
        }

    base = parse_model(graph("a", ["a", "r"]))
    assert base.to_canonical()["graph"][2] == {"name": "out", "type": "add", "inputs": ["a", "r"]}
    others = [graph("b", ["b", "r"]), graph("a", ["r", "a"]), graph("a", ["a", "r", "r"])]
    assert len({base.sha256, *(parse_model(g).sha256 for g in others)}) == 4


def test_the_hash_of_the_mlp_preset_is_pinned() -> None:
    spec = parse_model(PRESETS["mlp"])
    assert spec.to_canonical() == {
        "format": 1,
        "layers": [
            {"type": "flatten"},
            {"type": "linear", "out": 128, "bias": True},
            {"type": "relu"},
            {"type": "dropout", "p": 0.2},
            {"type": "linear", "out": None, "bias": True},
        ],
    }
    assert spec.sha256 == MLP_SHA256


# -- refusals ------------------------------------------------------------------------------------


def test_batch_norm_is_refused_because_it_mixes_examples() -> None:
    message = _refused(_layers({"type": "linear", "out": 3}, {"type": "batch_norm"}), "", RefusedOp)
    assert message == (
        "model.layers[1]: batch_norm mixes examples in a batch, which per-example clipping cannot bound; "
        "use group_norm or layer_norm"
    )
    _refused(_layers({"type": "batch_norm2d"}), "batch_norm2d mixes examples", RefusedOp)


def test_unknown_types_are_refused_with_the_supported_list() -> None:
    message = _refused(_layers({"type": "relu"}, {"type": "lstm"}), "model.layers[1]: unknown layer type 'lstm'", UnknownOp)
    assert "supported: adaptive_avg_pool1d, adaptive_avg_pool2d, add," in message and "transformer_encoder" in message
    # Names are looked up in the op table only, never as attributes of torch.
    for name in ("Linear", "__class__", "nn.Linear", "MultiheadAttention", "load", "eval"):
        _refused(_layers({"type": name}), "unknown layer type", UnknownOp)
    _refused(_layers({"type": "x" * 5000}), "'" + "x" * 32 + "...'", UnknownOp)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"type": "linear", "outs": 3}, "model.layers[0] (linear): unknown key 'outs' (allowed: type, out, bias)"),
        ({"type": "linear", "out": True}, "model.layers[0] (linear): out must be an integer, got a boolean"),
        ({"type": "linear", "out": 3.0}, "out must be an integer, got a float"),
        ({"type": "linear", "out": "3"}, "out must be an integer, got a string"),
        ({"type": "linear", "out": 0}, "out must be in [1, 65536], got 0"),
        ({"type": "linear", "out": 2**70}, "out must be in [1, 65536], got an integer beyond 64 bits"),
        ({"type": "linear", "out": -(10**5000)}, "out must be in [1, 65536], got an integer beyond 64 bits"),
        ({"type": "dropout", "p": 10**5000}, "p is out of range"),
        ({"type": "linear", "out": 3, "bias": 1}, "bias must be true or false, got an integer"),
        ({"type": "dropout"}, "model.layers[0] (dropout): p is required"),
        ({"type": "dropout", "p": 1.0}, "p must be in [0, 1), got 1"),
        ({"type": "dropout", "p": -0.1}, "p must be in [0, 1)"),
        ({"type": "dropout", "p": float("nan")}, "p must be in [0, 1), got nan"),
        ({"type": "dropout", "p": True}, "p must be a number, got a boolean"),
        ({"type": "conv2d", "out_channels": 4, "kernel": [3, 3, 3]}, "kernel must be an integer or an array of 2 integers, got an array of 3"),
        ({"type": "conv2d", "out_channels": 4, "kernel": [3, True]}, "kernel must be an integer, got a boolean"),
        ({"type": "conv1d", "out_channels": 4, "kernel": 65}, "kernel must be in [1, 64], got 65"),
        ({"type": "conv1d", "out_channels": 6, "kernel": 3, "groups": 4}, "out_channels 6 is not divisible by groups 4"),
        ({"type": "max_pool1d", "kernel": 2, "padding": 2}, "padding [2] exceeds half the kernel [2]"),
        ({"type": "reshape", "shape": []}, "shape must be an array of 1..4 integers, got an array of 0"),
        ({"type": "reshape", "shape": [2, 0]}, "shape must be in [1, 65536], got 0"),
        ({"type": "embedding", "vocab": 5, "dim": 2, "padding_idx": 5}, "padding_idx 5 is not below vocab 5"),
        ({"type": "embedding", "dim": 2}, "vocab is required"),
        ({"type": "embedding", "vocab": 2**20 + 1, "dim": 2}, "vocab must be in [1, 1048576], got 1048577"),
        ({"type": "transformer_encoder", "dim": 10, "heads": 4, "ff_dim": 8}, "dim 10 is not divisible by heads 4"),
        ({"type": "transformer_encoder", "dim": 64, "heads": 65, "ff_dim": 8}, "heads must be in [1, 64], got 65"),
        ({"type": "scatter", "J": 0}, "J must be in [1, 4], got 0"),
        ({"type": "add"}, "model.layers[0] (add): takes 2 or more inputs, which needs the graph form"),
        ({"type": "relu", "inputs": ["input"]}, "unknown key 'inputs' (allowed: type)"),
        ({"type": "relu", 3: 4}, "model.layers[0] (relu): keys must be strings, got an integer"),
        ({"type": "relu", "k" * 10_000: 4}, "unknown key '" + "k" * 32 + "...' (allowed: type)"),
        ({"type": 3}, "model.layers[0]: type must be a string, got an integer"),
        ({"out": 3}, "model.layers[0]: type is required"),
    ],
)
def test_bad_layers_are_refused_naming_layer_and_key(layer: dict[Any, Any], match: str) -> None:
    _refused(_layers(layer), match)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([{"type": "relu"}], "model must be a table, got an array"),
        ({"layers": [{"type": "relu"}]}, "model.format is required"),
        ({"format": 2, "layers": [{"type": "relu"}]}, "model.format must be 1, got 2"),
        ({"format": True, "layers": [{"type": "relu"}]}, "model.format must be 1, got a boolean"),
        ({"format": 10**5000, "layers": [{"type": "relu"}]}, "model.format must be 1, got an integer beyond 64 bits"),
        ({"format": "1", "layers": [{"type": "relu"}]}, "model.format must be 1, got a string"),
        ({"format": 1, "name": "mlp", "layers": []}, "model: unknown key 'name' (allowed: format, layers, graph, output, weights_sha256)"),
        ({"format": 1}, "exactly one of layers (a chain) and graph"),
        ({"format": 1, "layers": [], "graph": []}, "exactly one of layers (a chain) and graph"),
        ({"format": 1, "layers": []}, f"model.layers must hold 1..{MAX_LAYERS} layers, got 0"),
        ({"format": 1, "layers": [{"type": "relu"}] * (MAX_LAYERS + 1)}, f"got {MAX_LAYERS + 1}"),
        ({"format": 1, "layers": {"type": "relu"}}, "model.layers must be an array of tables, got a table"),
        ({"format": 1, "layers": ["relu"]}, "model.layers[0] must be a table, got a string"),
        ({"format": 1, "layers": [{"type": "relu"}], "output": "x"}, "model.output belongs to the graph form"),
        (_layers({"type": "linear"}, {"type": "relu"}), "model.layers[0] (linear): out is required (only the layer giving the output may omit it)"),
    ],
)
def test_bad_structure_is_refused(raw: Any, match: str) -> None:
    _refused(raw, match)


def _node(name: Any, op: str = "relu", inputs: Any = ("input",), **params: Any) -> dict[str, Any]:
    node = {"name": name, "type": op, **params}
    if inputs is not None:
        node["inputs"] = list(inputs) if isinstance(inputs, tuple) else inputs
    return node


@pytest.mark.parametrize(
    ("nodes", "output", "match"),
    [
        ([_node("a"), _node("a", inputs=("a",))], "a", "model.graph[1] 'a' (relu): the name is already taken by an earlier node"),
        ([_node("input")], "input", "model.graph[0] 'input' (relu): the name is already taken by the model input"),
        ([_node("A")], "A", "model.graph[0] (relu): name must be 1..32 characters of [a-z0-9_] starting with a letter, got 'A'"),
        ([_node("1a")], "1a", "got '1a'"),
        ([_node("a.b")], "a.b", "got 'a.b'"),
        ([_node("a" * 33)], "a", "name must be 1..32 characters"),
        ([_node(None)], "a", "got NoneType"),
        ([_node("a", inputs=("b",)), _node("b")], "b", "model.graph[0] 'a' (relu): input 'b' is neither 'input' nor an earlier node"),
        ([_node("a", inputs=("a",))], "a", "input 'a' is neither 'input' nor an earlier node"),
        ([_node("a", inputs=None)], "a", "model.graph[0] 'a' (relu): inputs is required"),
        ([_node("a", inputs="input")], "a", "inputs must be an array of node names, got a string"),
        ([_node("a", inputs=[1])], "a", "inputs must be node names, got an integer"),
        ([_node("a", inputs=("input", "input"))], "a", "model.graph[0] 'a' (relu): takes 1 inputs, got 2"),
        ([_node("a", "add")], "a", "model.graph[0] 'a' (add): takes 2..16 inputs, got 1"),
        ([_node("a", "add", inputs=("input",) * 17)], "a", "takes 2..16 inputs, got 17"),
        ([_node("a")], None, "model.output is required in the graph form"),
        ([_node("a")], "b", "model.output must name a node of the graph, got 'b'"),
        ([_node("a")], "input", "model.output must name a node of the graph, got 'input'"),
        ([_node("a")], 3, "model.output must name a node of the graph, got an integer"),
        ([_node("a"), _node("b")], "b", "model.graph[0] 'a' (relu): the node does not contribute to model.output 'b'"),
        ([_node("a"), _node("b")], "a", "model.graph[1] 'b' (relu): the node does not contribute"),
        ([_node("a", "linear"), _node("b", "linear", inputs=("a",), out=3)], "b", "model.graph[0] 'a' (linear): out is required"),
        ([_node("a", "batch_norm")], "a", "model.graph[0]: batch_norm mixes examples in a batch"),
        ([_node("a", "relu", p=0.5)], "a", "model.graph[0] 'a' (relu): unknown key 'p' (allowed: name, type, inputs)"),
    ],
)
def test_bad_graphs_are_refused(nodes: list[dict[str, Any]], output: Any, match: str) -> None:
    raw: dict[str, Any] = {"format": 1, "graph": nodes}
    if output is not None:
        raw["output"] = output
    _refused(raw, match)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_case_round_trips_through_its_canonical_form(case: Any) -> None:
    spec = parse_model(case.model)
    assert parse_model(spec.to_canonical()) == spec


def test_parsing_planning_and_hashing_do_not_load_torch() -> None:
    # The host checks job specs without torch; only building (and planning a scatter layer) needs it.
    script = (
        "import sys\n"
        "from enclave.training.modelfmt.plan import plan_model\n"
        "from enclave.training.modelfmt.presets import PRESETS\n"
        "from enclave.training.modelfmt.spec import parse_model\n"
        "spec = parse_model(PRESETS['tanh_cnn'])\n"
        "plan_model(spec, input_shape=(1, 28, 28), num_outputs=10)\n"
        "print(spec.sha256, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [parse_model(PRESETS["tanh_cnn"]).sha256, "False"]


# -- initial weights -----------------------------------------------------------------------------

WEIGHTS_SHA256 = "ab" * 32


def test_weights_sha256_is_kept_and_changes_the_hash_only_when_given() -> None:
    plain = parse_model(PRESETS["mlp"])
    named = parse_model({**PRESETS["mlp"], "weights_sha256": WEIGHTS_SHA256})
    assert plain.weights_sha256 is None and "weights_sha256" not in plain.to_canonical()
    assert plain.sha256 == MLP_SHA256
    assert named.weights_sha256 == WEIGHTS_SHA256
    assert named.to_canonical() == {**plain.to_canonical(), "weights_sha256": WEIGHTS_SHA256}
    assert named.sha256 != MLP_SHA256
    assert parse_model({**PRESETS["mlp"], "weights_sha256": "cd" * 32}).sha256 != named.sha256
    assert parse_model(named.to_canonical()) == named


def test_weights_sha256_in_the_graph_form() -> None:
    raw = {"format": 1, "output": "out", "weights_sha256": WEIGHTS_SHA256,
           "graph": [{"name": "out", "type": "linear", "inputs": ["input"]}]}
    spec = parse_model(raw)
    assert spec.to_canonical()["weights_sha256"] == WEIGHTS_SHA256 and parse_model(spec.to_canonical()) == spec


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("AB" * 32, "'ABAB"),  # hex digits, but upper case: one spelling per hash
        ("ab" * 31, "'abab"),
        ("ab" * 40, "..."),
        ("g" * 64, "'gggg"),
        (" " + "ab" * 32, "' abab"),
        (12, "an integer"),
        (["ab" * 32], "an array"),
    ],
)
def test_weights_sha256_must_be_64_lowercase_hex(value: Any, shown: str) -> None:
    message = _refused({**PRESETS["mlp"], "weights_sha256": value}, "model.weights_sha256 must be 64 lowercase hex")
    assert shown in message and len(message) < 200
