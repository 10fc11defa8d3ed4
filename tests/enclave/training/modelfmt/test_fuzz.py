"""Property tests: hostile or random model tables only ever raise the format's own error, and
whatever plans builds into a model whose every layer has the planned output shape."""
from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from enclave.training.modelfmt.build import build_model
from enclave.training.modelfmt.errors import ModelFormatError
from enclave.training.modelfmt.ops import OPS, REFUSED
from enclave.training.modelfmt.params import Param
from enclave.training.modelfmt.plan import plan_model
from enclave.training.modelfmt.spec import ModelFormat, parse_model

PARAM_KEYS = sorted({p.name for op in OPS.values() for p in op.params})
KEYS = sorted({"format", "layers", "graph", "output", "type", "name", "inputs", *PARAM_KEYS})
TYPES = sorted(OPS) + sorted(REFUSED) + ["lstm", "Linear", "__init__", ""]
NAMES = ["a", "b", "c", "input"]
INPUT_SHAPES = [(6,), (2, 8), (1, 8, 8), (4, 3), (3, 4, 4)]
CLASSES = 3

# Anything tomllib (or a careless caller) could hand over, keys included.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.integers(), st.floats(), st.text(max_size=4),
    st.text(min_size=200, max_size=300), st.builds(lambda k: k * 10**5000, st.sampled_from([-1, 1])), st.just(-(2**64)),
    st.sampled_from(TYPES), st.sampled_from(NAMES),
)
_anything = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=3), st.integers()), inner, max_size=5),
    max_leaves=24,
)

# Mostly well-typed, small values, so that many tables get past parsing into shape inference.
_small = st.one_of(
    st.integers(0, 9), st.integers(1, 4), st.booleans(), st.floats(0, 0.9),
    st.lists(st.integers(1, 4), min_size=1, max_size=3), st.sampled_from([-1, 0, 1]),
)
_params = st.dictionaries(st.sampled_from(PARAM_KEYS), _small, max_size=4)
_layer = st.builds(lambda t, p: {"type": t, **p}, st.sampled_from(sorted(OPS)), _params)
_node = st.builds(
    lambda name, t, p, inputs: {"name": name, "type": t, **p, "inputs": inputs},
    st.sampled_from(NAMES[:3]), st.sampled_from(sorted(OPS)), _params,
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
)
_models = st.one_of(
    st.builds(lambda layers: {"format": 1, "layers": layers}, st.lists(_layer, min_size=1, max_size=6)),
    st.builds(
        lambda nodes, out: {"format": 1, "graph": nodes, "output": out},
        st.lists(_node, min_size=1, max_size=4), st.sampled_from(NAMES[:3]),
    ),
)


def _value(param: Param) -> st.SearchStrategy[Any]:
    """A small value of the declared kind, often but not always in range."""
    if param.kind == "bool":
        return st.booleans()
    if param.kind == "float":
        return st.floats(0.0, 0.5)
    if param.kind == "int":
        return st.integers(max(int(param.low), -1), min(int(param.high), 9))
    if param.kind == "dims":
        low = 0 if param.name == "padding" else 1
        return st.integers(low, 3) | st.lists(st.integers(low, 3), min_size=param.dims, max_size=param.dims)
    return st.lists(st.integers(1, 4), min_size=1, max_size=3)


@st.composite
def _plausible_layer(draw: st.DrawFn, ops: list[str]) -> dict[str, Any]:
    op = draw(st.sampled_from(ops))
    args = {p.name: draw(_value(p)) for p in OPS[op].params if p.required or draw(st.booleans())}
    return {"type": op, **args}


_HEAD = [{"type": "flatten"}, {"type": "linear"}]
_CHAIN_OPS = sorted(name for name, op in OPS.items() if op.min_inputs == 1)


@st.composite
def _plausible(draw: st.DrawFn) -> dict[str, Any]:
    """Chains and graphs built from the declared parameters, most ending in a classifier head."""
    if draw(st.booleans()):
        layers = draw(st.lists(_plausible_layer(_CHAIN_OPS), min_size=0, max_size=4))
        return {"format": 1, "layers": layers + (_HEAD if draw(st.integers(0, 4)) else [])}
    nodes: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 4))):
        node = draw(_plausible_layer(sorted(OPS)))
        op = OPS[node["type"]]
        earlier = ["input"] + [n["name"] for n in nodes]
        extra = draw(st.lists(st.sampled_from(earlier), min_size=op.min_inputs - 1, max_size=min(op.max_inputs, 3) - 1))
        nodes.append({"name": f"n{i}", **node, "inputs": [earlier[-1], *extra]})
    for i, layer in enumerate(_HEAD, start=len(nodes)):
        nodes.append({"name": f"n{i}", **layer, "inputs": [nodes[-1]["name"]]})
    return {"format": 1, "graph": nodes, "output": nodes[-1]["name"]}


def _only_format_errors(raw: Any) -> ModelFormat | None:
    try:
        return parse_model(raw)
    except ModelFormatError as err:
        # One short line whatever the input: messages never echo a hostile value in full.
        assert "\n" not in str(err) and len(str(err)) < 1000, str(err)
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_anything, st.dictionaries(st.sampled_from(KEYS), _anything, max_size=5), _models, _plausible()))
def test_parsing_anything_raises_only_the_format_error(raw: Any) -> None:
    spec = _only_format_errors(raw)
    if spec is not None:
        assert parse_model(spec.to_canonical()) == spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_plausible(), st.sampled_from(INPUT_SHAPES))
def test_planned_models_build_with_the_planned_shapes(raw: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    spec = _only_format_errors(raw)
    if spec is None:
        return
    try:
        plan = plan_model(spec, input_shape=input_shape, num_outputs=CLASSES)
    except ModelFormatError:
        return
    model = build_model(spec, input_shape=input_shape, num_outputs=CLASSES, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == plan.parameters
    if plan.input.kind == "ids":
        vocab = min(int(n.arguments["vocab"]) for n in spec.nodes if n.op == "embedding") if any(
            n.op == "embedding" for n in spec.nodes) else 5  # fmt: skip
        x = torch.randint(0, vocab, (2, *input_shape))
    else:
        x = torch.randn(2, *input_shape)
    seen: list[tuple[int, ...]] = []
    layers = model.nodes if hasattr(model, "nodes") else model
    assert isinstance(layers, nn.Module)
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[1:]))) for m in layers.children()]
    out = model.eval()(x)
    for hook in hooks:
        hook.remove()
    assert seen == [node.out.shape for node in plan.nodes]
    assert out.shape == (2, CLASSES) and out.dtype == torch.float32
