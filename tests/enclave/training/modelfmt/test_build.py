"""Building models: presets equal the registered models, deterministic seeded init, plain layers, masks."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.rules import check_privatizable
from enclave.training.modelfmt.build import FACTORIES, build_model, parameter_shapes
from enclave.training.modelfmt.layers import GraphModel, SelfAttention
from enclave.training.modelfmt.ops import OPS
from enclave.training.modelfmt.presets import PRESETS
from enclave.training.modelfmt.spec import parse_model
from enclave.training.models import MODELS, CsprngDropout, DropoutUnseeded, model_generator, reseed_dropout
from tests.enclave.training.modelfmt.cases import CASES, CLASSES, VOCAB, Case, case

#: The layer types that may own parameters: each has a rule in the fast clipping engine.
PARAMETER_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _build(model: Any, input_shape: tuple[int, ...], num_outputs: int = CLASSES, seed: int = 0) -> nn.Module:
    spec = parse_model(model)
    return build_model(spec, input_shape=input_shape, num_outputs=num_outputs, generator=torch.Generator().manual_seed(seed))


def test_every_op_has_a_factory() -> None:
    assert set(FACTORIES) == set(OPS)


@pytest.mark.parametrize("name", sorted(name for name in PRESETS if "layers" in PRESETS[name]))
def test_a_preset_is_its_registered_model(name: str) -> None:
    registered = MODELS[name]
    for seed in (0, 12345):
        expected = registered.build(torch.Generator().manual_seed(seed))
        built = _build(PRESETS[name], registered.input_shape, registered.num_classes, seed)
        assert [type(m) for m in built.children()] == [type(m) for m in expected.children()]
        assert [(k, p.shape) for k, p in built.named_parameters()] == [(k, p.shape) for k, p in expected.named_parameters()]
        for (key, ours), theirs in zip(built.named_parameters(), expected.parameters(), strict=True):
            assert torch.equal(ours, theirs), key
        x = torch.randn(5, *registered.input_shape, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(built.eval()(x), expected.eval()(x))


def test_the_two_scale_scatter_model_as_a_graph() -> None:
    """scatter2_linear (TwoScaleScatter + linear) as a graph: the same weights and outputs.

    Its parameter is named `nodes.7.weight` here and `1.weight` in the registered
    nn.Sequential, whose front end is one custom module; names differ, values do not.
    """
    model = {
        "format": 1,
        "output": "logits",
        "graph": [
            {"name": "coarse", "type": "scatter", "J": 2, "L": 8, "inputs": ["input"]},
            {"name": "coarse_norm", "type": "group_norm", "groups": 27, "affine": False, "inputs": ["coarse"]},
            {"name": "coarse_flat", "type": "flatten", "inputs": ["coarse_norm"]},
            {"name": "fine", "type": "scatter", "J": 1, "L": 8, "inputs": ["input"]},
            {"name": "fine_norm", "type": "group_norm", "groups": 3, "affine": False, "inputs": ["fine"]},
            {"name": "fine_flat", "type": "flatten", "inputs": ["fine_norm"]},
            {"name": "joined", "type": "concat", "dim": 0, "inputs": ["coarse_flat", "fine_flat"]},
            {"name": "logits", "type": "linear", "inputs": ["joined"]},
        ],
    }
    assert parse_model(PRESETS["scatter2_linear"]) == parse_model(model)
    expected = MODELS["scatter2_linear"].build(torch.Generator().manual_seed(4))
    built = _build(PRESETS["scatter2_linear"], (1, 28, 28), 10, 4)
    assert isinstance(built, GraphModel)
    assert [(k, p.shape) for k, p in built.named_parameters()] == [
        ("nodes.7.weight", (10, 5733)), ("nodes.7.bias", (10,))
    ]
    for ours, theirs in zip(built.parameters(), expected.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(built.eval()(x), expected.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_parameter_shapes_name_the_built_state_dict_without_building_it(c: Case) -> None:
    built = _build(c.model, c.input_shape, seed=0)
    shapes = parameter_shapes(parse_model(c.model), input_shape=c.input_shape, num_outputs=CLASSES)
    assert shapes == {name: tuple(t.shape) for name, t in built.state_dict().items()}
    assert list(shapes) == list(built.state_dict())


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_initialisation_is_a_function_of_the_generator_alone(c: Case) -> None:
    state = torch.get_rng_state()
    first, again, other = _build(c.model, c.input_shape, seed=7), _build(c.model, c.input_shape, seed=7), _build(
        c.model, c.input_shape, seed=8)  # fmt: skip
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    a, b, o = (dict(m.state_dict()) for m in (first, again, other))
    assert a.keys() == b.keys() == o.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Norm layers start at ones and zeros whatever the seed; everything else is drawn.
    assert any(not torch.equal(a[k], o[k]) for k in a)


def test_a_csprng_seeded_generator_gives_reproducible_models() -> None:
    spec = parse_model(PRESETS["tanh_cnn"])
    models = [
        build_model(spec, input_shape=(1, 28, 28), num_outputs=10, generator=model_generator(Csprng(bytes(range(32)))))
        for _ in range(2)
    ]
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_built_models_are_privatisable_plain_layers_in_train_mode(c: Case) -> None:
    model = _build(c.model, c.input_shape)
    assert model.training
    check_privatizable(model)
    assert list(model.buffers()) == []
    for module in model.modules():
        assert not isinstance(module, nn.MultiheadAttention)
        if any(True for _ in module.parameters(recurse=False)):
            assert type(module) in PARAMETER_LAYERS, type(module)
    out = model.eval()(c.inputs(4))
    assert out.shape == (4, CLASSES) and torch.isfinite(out).all()


def test_the_layers_form_names_parameters_by_layer_index_and_the_graph_form_by_node_index() -> None:
    assert [k for k, _ in _build(case("linear").model, (5,)).named_parameters()] == ["0.weight", "2.weight", "2.bias"]
    graph = _build(case("residual_concat").model, (6,))
    assert [k for k, _ in graph.named_parameters()] == ["nodes.0.weight", "nodes.0.bias", "nodes.4.weight", "nodes.4.bias"]


def test_an_omitted_out_follows_the_class_count() -> None:
    spec = parse_model(PRESETS["mlp"])
    for classes in (2, 26):
        model = build_model(spec, input_shape=(784,), num_outputs=classes, generator=torch.Generator())
        assert model.eval()(torch.zeros(1, 784)).shape == (1, classes)


def test_dropout_is_the_csprng_dropout_and_needs_a_seed_to_train() -> None:
    model = _build(PRESETS["mlp"], (784,), 10)
    dropouts = [m for m in model.modules() if isinstance(m, CsprngDropout)]
    assert len(dropouts) == 1 and type(dropouts[0]) is CsprngDropout and dropouts[0].p == 0.2
    x = torch.randn(4, 784)
    with pytest.raises(DropoutUnseeded):
        model(x)
    reseed_dropout(model, Csprng(bytes(32)))
    first = model(x)
    reseed_dropout(model, Csprng(bytes(32)))
    assert torch.equal(model(x), first)
    transformer = _build(case("text_transformer").model, (6,))
    assert sum(isinstance(m, CsprngDropout) for m in transformer.modules()) == 2


def test_attention_is_built_from_linear_layers() -> None:
    model = _build(case("text_transformer").model, (6,))
    attention = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(attention) == 1
    assert [type(m) for m in attention[0].children()] == [nn.Linear] * 4


def _text_model(pool: str, masked: bool = True) -> nn.Module:
    mask = ["mask"] if masked else []
    model = {
        "format": 1,
        "output": "logits",
        "graph": [
            *([{"name": "mask", "type": "padding_mask", "inputs": ["input"]}] if masked else []),
            {"name": "emb", "type": "embedding", "vocab": VOCAB, "dim": 8, "inputs": ["input"]},
            {"name": "enc", "type": "transformer_encoder", "dim": 8, "heads": 2, "ff_dim": 16, "inputs": ["emb", *mask]},
            {"name": "enc2", "type": "transformer_encoder", "dim": 8, "heads": 4, "ff_dim": 16, "inputs": ["enc", *mask]},
            {"name": "pool", "type": pool, "inputs": ["enc2", *mask]},
            {"name": "logits", "type": "linear", "inputs": ["pool"]},
        ],
    }
    return _build(model, (5,), seed=2).eval()


@pytest.mark.parametrize("pool", ["mean_pool", "cls_pool"])
def test_padding_changes_nothing_under_the_mask(pool: str) -> None:
    tokens = torch.tensor([[3, 7, 2, 0, 0], [5, 0, 0, 0, 0]])
    # The same sequences with more padding (the modules do not depend on the planned length).
    longer = torch.cat([tokens, torch.zeros(2, 4, dtype=torch.int64)], dim=1)
    model = _text_model(pool)
    torch.testing.assert_close(model(longer), model(tokens), rtol=1e-5, atol=1e-6)
    if pool == "mean_pool":
        # Without the mask, attention and the mean would have seen the padding.
        unmasked = _text_model(pool, masked=False)
        assert not torch.allclose(unmasked(longer), unmasked(tokens), rtol=1e-3, atol=1e-4)


def test_cls_pool_takes_the_first_real_token_of_left_padded_sequences() -> None:
    model = _text_model("cls_pool")
    right = model(torch.tensor([[4, 0, 0, 0, 0]]))
    x = torch.tensor([[0, 0, 0, 0, 4]])
    # One real token: attention sees only itself, so its position in the row is irrelevant.
    torch.testing.assert_close(model(x), right, rtol=1e-5, atol=1e-6)


def test_an_all_padding_example_gives_finite_logits() -> None:
    for pool in ("mean_pool", "cls_pool"):
        assert torch.isfinite(_text_model(pool)(torch.zeros(2, 5, dtype=torch.int64))).all()
