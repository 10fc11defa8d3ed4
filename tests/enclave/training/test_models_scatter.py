"""The ScatterNet models: registration, privatizability, per-sample gradients, feature caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.reference import per_sample_gradients
from enclave.training.clipping.rules import check_privatizable
from enclave.training.dpsgd import DpSgd
from enclave.training.models import (
    MODELS,
    FeatureTransform,
    FeatureTransformError,
    TwoScaleScatter,
    build_model,
    feature_transform,
    get_spec,
    preprocess,
)
from enclave.training.scattering import Scattering2d

SEED = bytes(range(32))
SCATTER = ["scatter_linear", "scatter2_linear"]


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 784), dtype=np.uint8)


def test_the_original_models_are_unchanged_and_scatter_models_added() -> None:
    assert {"mlp", "tanh_cnn", "scatter_linear", "scatter2_linear"} <= set(MODELS)
    for name in SCATTER:
        spec = get_spec(name)
        assert spec.input_shape == (1, 28, 28) and spec.input_features == 784 and spec.num_classes == 10
    assert feature_transform("mlp") is None and feature_transform("tanh_cnn") is None


def test_scatter_linear_is_tramer_boneh_scatternet_linear() -> None:
    model = build_model("scatter_linear", rng=Csprng(SEED))
    assert [type(m) for m in model] == [Scattering2d, nn.GroupNorm, nn.Flatten, nn.Linear]
    scattering, norm, _, linear = model
    assert (scattering.J, scattering.L, scattering.shape) == (2, 8, (28, 28))
    assert (norm.num_groups, norm.num_channels, norm.affine) == (27, 81, False)
    assert (linear.in_features, linear.out_features) == (3969, 10)
    assert sorted(model.state_dict()) == ["3.bias", "3.weight"]


def test_scatter2_linear_joins_two_scattering_scales_before_one_linear_layer() -> None:
    model = build_model("scatter2_linear", rng=Csprng(SEED))
    assert [type(m) for m in model] == [TwoScaleScatter, nn.Linear]
    front, linear = model
    assert (front.coarse.J, front.coarse.L, front.fine.J, front.fine.L) == (2, 8, 1, 8)
    assert (front.coarse_norm.num_groups, front.coarse_norm.affine) == (27, False)
    assert (front.fine_norm.num_groups, front.fine_norm.num_channels, front.fine_norm.affine) == (3, 9, False)
    assert (linear.in_features, linear.out_features) == (81 * 7 * 7 + 9 * 14 * 14, 10)
    assert front.coarse.out_shape == (81, 7, 7) and front.fine.out_shape == (9, 14, 14)
    assert sorted(model.state_dict()) == ["1.bias", "1.weight"]
    # The first 3969 features are scatter_linear's, in its order; the rest the J=1 scale's.
    x = preprocess("scatter2_linear", _pixels(3))
    one_scale = build_model("scatter_linear", rng=Csprng(SEED))
    torch.testing.assert_close(front(x)[:, :3969], one_scale[:3](x))
    fine = nn.functional.group_norm(Scattering2d(J=1, shape=(28, 28), L=8)(x), 3, eps=1e-5)
    torch.testing.assert_close(front(x)[:, 3969:], fine.flatten(1))


@pytest.mark.parametrize("name", SCATTER)
def test_builds_accepts_preprocess_and_is_privatizable(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED))
    check_privatizable(model)
    assert list(model.buffers()) == []
    out = model(preprocess(name, _pixels(4)))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    # Only the classifier is trainable; the front end holds nothing.
    transform = feature_transform(name)
    assert transform is not None
    assert sum(p.numel() for p in transform.front(model).parameters()) == 0
    state = torch.get_rng_state()
    a, b = build_model(name, rng=Csprng(SEED)).state_dict(), build_model(name, rng=Csprng(SEED)).state_dict()
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", SCATTER)
def test_per_sample_gradients_equal_batch_of_one_backward(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED)).eval()
    x = preprocess(name, _pixels(4, seed=1))
    y = torch.tensor([0, 3, 9, 3])
    grads = per_sample_gradients(model, x, y, micro_batch=3)
    for i in range(len(y)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for pname, p in model.named_parameters():
            torch.testing.assert_close(grads[pname][i], p.grad, rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in grads.values())


@pytest.mark.parametrize("name", SCATTER)
def test_head_on_cached_features_is_the_model(name: str) -> None:
    model = build_model(name, rng=Csprng(SEED))
    transform = feature_transform(name)
    assert isinstance(transform, FeatureTransform)
    assert transform.feature_shape == ((81 * 7 * 7 + 9 * 14 * 14,) if name == "scatter2_linear" else (81, 7, 7))
    pixels = _pixels(5, seed=2)
    features = transform.features(model, pixels, chunk=2)
    assert features.shape == (5, *transform.feature_shape)
    assert features.dtype == torch.float32 and not features.requires_grad
    head = transform.head(model)
    torch.testing.assert_close(head(features), model(preprocess(name, pixels)), rtol=1e-5, atol=1e-5)
    # The head trains the model itself: the very same parameter objects.
    assert [id(p) for p in head.parameters()] == [id(p) for p in model.parameters()]
    check_privatizable(head)
    assert transform.features(model, pixels[:0]).shape == (0, *transform.feature_shape)


def test_dp_step_on_cached_features_equals_step_on_pixels() -> None:
    # The trainer may precompute features once; a DP-SGD step must not notice.
    pixels, y = _pixels(6, seed=3), torch.tensor([1, 2, 3, 4, 5, 6])
    updated = []
    for cached in (False, True):
        model = build_model("scatter_linear", rng=Csprng(SEED))
        transform = feature_transform("scatter_linear")
        assert transform is not None
        net = transform.head(model) if cached else model
        inputs = transform.features(model, pixels) if cached else preprocess("scatter_linear", pixels)
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        engine = DpSgd(net, opt, max_grad_norm=0.1, noise_multiplier=1.0, expected_batch_size=6.0,
                       rng=Csprng(b"n" * 32), engine="vmap")
        engine.step(inputs, y)
        updated.append(model.state_dict())
    for k in updated[0]:
        torch.testing.assert_close(updated[0][k], updated[1][k], rtol=1e-5, atol=1e-7)


def test_feature_transform_refuses_other_models() -> None:
    transform = feature_transform("scatter_linear")
    assert transform is not None
    with pytest.raises(FeatureTransformError) as info:
        transform.head(build_model("mlp", rng=Csprng(SEED)))
    assert isinstance(info.value, ConfigError)
    with pytest.raises(FeatureTransformError):
        transform.features(build_model("tanh_cnn", rng=Csprng(SEED)), _pixels(1))
    with pytest.raises(FeatureTransformError):
        transform.head(nn.Sequential(nn.Linear(784, 10)))
