"""The model registry: architectures, deterministic CSPRNG-seeded init, preprocessing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from enclave.errors import ConfigError, DatasetError
from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.rules import check_privatizable
from enclave.training.models import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MODELS,
    CsprngDropout,
    DropoutUnseeded,
    InputFormatError,
    ModelSpec,
    UnknownModel,
    build_model,
    get_spec,
    model_generator,
    preprocess,
    reseed_dropout,
)

SEED = bytes(range(32))


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 784), dtype=np.uint8)


def test_registry_holds_the_registered_models_and_is_read_only() -> None:
    assert sorted(MODELS) == ["mlp", "scatter2_linear", "scatter_linear", "tanh_cnn"]
    assert all(isinstance(spec, ModelSpec) and spec.name == name for name, spec in MODELS.items())
    assert MODELS["mlp"].input_shape == (784,) and MODELS["tanh_cnn"].input_shape == (1, 28, 28)
    assert all(spec.num_classes == 10 and spec.input_features == 784 for spec in MODELS.values())
    with pytest.raises(TypeError):
        MODELS["resnet"] = MODELS["mlp"]  # type: ignore[index]


@pytest.mark.parametrize("name", ["resnet18", "MLP", "", None])
def test_unknown_model_lists_registered_names(name: object) -> None:
    with pytest.raises(UnknownModel) as info:
        build_model(name)  # type: ignore[arg-type]
    message = str(info.value)
    assert "mlp" in message and "tanh_cnn" in message and "\n" not in message
    assert isinstance(info.value, ConfigError)
    with pytest.raises(UnknownModel):
        preprocess(name, _pixels(1))  # type: ignore[arg-type]


def test_mlp_is_the_seed_architecture() -> None:
    model = build_model("mlp", rng=Csprng(SEED))
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, CsprngDropout, nn.Linear]
    assert (model[1].in_features, model[1].out_features) == (784, 128)
    assert model[3].p == 0.2
    assert (model[4].in_features, model[4].out_features) == (128, 10)


def test_tanh_cnn_architecture_and_512_features() -> None:
    model = build_model("tanh_cnn", rng=Csprng(SEED))
    kinds = [type(m) for m in model]
    assert kinds == [
        nn.Conv2d, nn.Tanh, nn.MaxPool2d, nn.Conv2d, nn.Tanh, nn.MaxPool2d,
        nn.Flatten, nn.Linear, nn.Tanh, nn.Linear,
    ]  # fmt: skip
    c1, c2 = model[0], model[3]
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.stride, c1.padding) == (1, 16, (8, 8), (2, 2), (3, 3))
    assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.stride, c2.padding) == (16, 32, (4, 4), (2, 2), (0, 0))
    assert (model[2].kernel_size, model[2].stride) == (2, 1)
    x = preprocess("tanh_cnn", _pixels(3))
    assert model[:7](x).shape == (3, 512)
    assert (model[7].in_features, model[7].out_features, model[9].out_features) == (512, 32, 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_on_preprocessed_pixels_gives_logits(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED))
    reseed_dropout(model, Csprng(SEED))
    out = model(preprocess(name, _pixels(5)))
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.training


def test_dropout_in_training_mode_refuses_to_run_unseeded() -> None:
    # Never a silent fall back to torch's global generator.
    model = build_model("mlp", rng=Csprng(SEED))
    with pytest.raises(DropoutUnseeded):
        model(preprocess("mlp", _pixels(2)))
    assert model.eval()(preprocess("mlp", _pixels(2))).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_init_is_a_function_of_the_seed_only(name: str) -> None:
    state = torch.get_rng_state()
    a = build_model(name, rng=Csprng(SEED)).state_dict()
    b = build_model(name, rng=Csprng(SEED)).state_dict()
    c = build_model(name, rng=Csprng(bytes([9]) + SEED[1:])).state_dict()
    build_model(name)  # os.urandom-seeded
    assert torch.equal(state, torch.get_rng_state()), "model init touched torch's global generator"
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)


def test_unseeded_builds_differ() -> None:
    a, b = build_model("mlp"), build_model("mlp")
    assert not torch.equal(a[1].weight, b[1].weight)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_init_follows_torch_default_bounds(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED))
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias rule agree
            for p in (module.weight.detach(), module.bias.detach()):
                assert float(p.abs().max()) <= bound
                if p.numel() >= 100:  # filled across the range, not a constant
                    assert float(p.abs().max()) > 0.9 * bound
                    assert abs(float(p.mean())) < 5 * bound / math.sqrt(3 * p.numel())


def test_model_generator_draws_from_the_csprng() -> None:
    r = Csprng(SEED)
    g1 = model_generator(r)
    assert r.bytes_drawn == 8
    g2 = model_generator(Csprng(SEED))
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_models_are_privatizable_and_stateless(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED))
    check_privatizable(model)
    assert list(model.buffers()) == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_preprocess_scales_standardises_and_reshapes(name: str) -> None:
    pixels = np.array([[0] * 784, [255] * 784, [51] * 784], dtype=np.uint8)
    x = preprocess(name, pixels)
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (3, *get_spec(name).input_shape)
    flat = x.reshape(3, -1)
    expected = [(v / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD for v in (0, 255, 51)]
    for row, value in zip(flat, expected, strict=True):
        torch.testing.assert_close(row, torch.full((784,), value), rtol=1e-6, atol=1e-6)
    # Pixel order is preserved: row-major 28x28 for the CNN.
    ramp = (np.arange(784) % 256).astype(np.uint8)[None, :]
    torch.testing.assert_close(preprocess(name, ramp).reshape(-1), preprocess("mlp", ramp).reshape(-1))
    assert torch.equal(preprocess(name, torch.from_numpy(pixels)), x)


@pytest.mark.parametrize(
    "batch",
    [
        np.zeros((2, 784), dtype=np.float32),
        np.zeros((2, 783), dtype=np.uint8),
        np.zeros((784,), dtype=np.uint8),
        np.zeros((2, 28, 28), dtype=np.uint8),
        torch.zeros((2, 784), dtype=torch.int64),
        [[0] * 784],
    ],
)
def test_preprocess_refuses_other_dtypes_and_shapes(batch) -> None:
    with pytest.raises(InputFormatError):
        preprocess("mlp", batch)
    assert issubclass(InputFormatError, DatasetError)


def test_empty_batch_preprocesses_to_empty() -> None:
    assert preprocess("tanh_cnn", np.zeros((0, 784), dtype=np.uint8)).shape == (0, 1, 28, 28)
