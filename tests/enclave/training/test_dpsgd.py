"""DP-SGD: per-sample gradients, clipping, noise, the update rule, refused layers."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from enclave.errors import ConfigError, DatasetError
from enclave.training.dpsgd import (
    BatchMismatch,
    DpSgd,
    DpSgdConfigError,
    StepStats,
    UnknownLoss,
    UnsupportedLayer,
    check_privatizable,
    clip_per_sample,
    per_sample_gradients,
    per_sample_norms,
)
from enclave.training.models import MODELS, build_model
from enclave.hazmat.csprng import Csprng

MODEL_SEED = bytes(range(32))
NOISE_SEED = bytes(range(1, 33))


def _batch(name: str, n: int, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = MODELS[name].input_shape
    return torch.randn(n, *shape, generator=g) * scale, torch.randint(0, 10, (n,), generator=g)


def _loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference per-sample gradients: one ordinary backward pass per sample."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    per: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                per[n].append(p.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(v) for n, v in per.items()}


def _tiny() -> nn.Module:
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- per-sample gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("micro_batch", [1024, 4])
def test_vmap_gradients_equal_batch_size_one_backward(name: str, micro_batch: int) -> None:
    model = build_model(name, rng=Csprng(MODEL_SEED)).eval()  # eval: dropout off
    x, y = _batch(name, 10)
    fast = per_sample_gradients(model, x, y, micro_batch=micro_batch)
    slow = _loop_gradients(model, x, y)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key].shape == (10, *dict(model.named_parameters())[key].shape)
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-4, atol=1e-6)


def test_per_sample_gradients_of_an_empty_batch_are_empty() -> None:
    model = build_model("mlp", rng=Csprng(MODEL_SEED))
    x, y = _batch("mlp", 0)
    grads = per_sample_gradients(model, x, y)
    assert all(g.shape[0] == 0 for g in grads.values())


def test_dropout_masks_differ_per_sample_in_train_mode() -> None:
    model = build_model("mlp", rng=Csprng(MODEL_SEED))
    x, y = _batch("mlp", 1)
    xs, ys = x.repeat(8, 1), y.repeat(8)
    torch.manual_seed(0)
    train = per_sample_gradients(model.train(), xs, ys)["1.weight"]
    assert not all(torch.equal(train[0], train[i]) for i in range(1, 8))
    evaluated = per_sample_gradients(model.eval(), xs, ys)["1.weight"]
    assert all(torch.allclose(evaluated[0], evaluated[i]) for i in range(1, 8))


# -- clipping -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("clip", [1e-3, 0.1, 1.0, 10.0])
def test_clipped_per_sample_norms_never_exceed_c(name: str, clip: float) -> None:
    model = build_model(name, rng=Csprng(MODEL_SEED)).eval()
    # Mixed input scales give both tiny and huge per-sample gradients.
    x, y = _batch(name, 16, seed=3)
    x = x * torch.logspace(-3, 3, 16).reshape(-1, *([1] * (x.dim() - 1)))
    grads = per_sample_gradients(model, x, y)
    norms = per_sample_norms(grads)
    clipped, factors = clip_per_sample(grads, clip)
    clipped_norms = per_sample_norms(clipped)
    assert torch.all(clipped_norms <= clip + 1e-5)
    # Gradients already inside the ball are left alone (up to the 1e-6 guard).
    inside = norms + 1e-6 <= clip
    assert torch.all(factors[inside] == 1.0)
    torch.testing.assert_close(clipped_norms[inside], norms[inside])
    # Those outside land on the sphere.
    torch.testing.assert_close(clipped_norms[~inside], torch.full_like(norms[~inside], clip), rtol=1e-5, atol=1e-6)


def test_norm_is_taken_over_all_parameters_together() -> None:
    grads = {"a": torch.tensor([[3.0, 0.0]]), "b": torch.tensor([[[4.0]]])}
    assert per_sample_norms(grads).tolist() == [5.0]
    clipped, factors = clip_per_sample(grads, 1.0)
    assert factors.item() == pytest.approx(1.0 / (5.0 + 1e-6))
    assert clipped["a"][0, 0].item() == pytest.approx(0.6, rel=1e-5)
    assert clipped["b"][0, 0, 0].item() == pytest.approx(0.8, rel=1e-5)


# -- the update rule ---------------------------------------------------------------------


def _reference_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, sigma: float, b: float
) -> dict[str, torch.Tensor]:
    """clip each loop gradient, sum, add noise from an identically seeded Csprng, divide by B."""
    per = _loop_gradients(model, x, y)
    noise_rng = Csprng(NOISE_SEED)
    out = {}
    norms = torch.zeros(x.shape[0])
    for g in per.values():
        norms += g.reshape(x.shape[0], -1).pow(2).sum(1)
    norms = norms.sqrt()
    factors = torch.clamp(clip / (norms + 1e-6), max=1.0)
    noise = _flat_noise(noise_rng, model, sigma * clip)
    for name, p in model.named_parameters():
        summed = (per[name] * factors.reshape(-1, *([1] * p.dim()))).sum(0)
        out[name] = (summed + noise[name]) / b
    return out


def _flat_noise(rng: Csprng, model: nn.Module, std: float) -> dict[str, torch.Tensor]:
    """One step's noise as DP-SGD maps the stream: one draw over every (float32) parameter in order."""
    params = list(model.named_parameters())
    flat = rng.normal(sum(p.numel() for _, p in params), std)
    out, offset = {}, 0
    for name, p in params:
        out[name] = flat[offset : offset + p.numel()].reshape(p.shape)
        offset += p.numel()
    return out


def test_update_equals_hand_computed_reference() -> None:
    model = _tiny()
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(5, 3, generator=g) * 3, torch.randint(0, 2, (5,), generator=g)
    norms = per_sample_norms(_loop_gradients(model, x, y))
    clip = float(norms.median())  # some samples clipped, some not
    sigma, b, lr = 0.8, 12.5, 0.5  # B deliberately not the realised batch size
    expected = _reference_grads(model, x, y, clip, sigma, b)
    before = _snapshot(model)
    dp = DpSgd(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        max_grad_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=b,
        rng=Csprng(NOISE_SEED),
    )
    stats = dp.step(x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.detach(), before[name] - lr * expected[name], rtol=1e-5, atol=1e-6)
    assert stats.batch_size == 5
    assert stats.clipped_fraction == pytest.approx(float((norms + 1e-6 > clip).float().mean()))
    assert 0.0 < stats.clipped_fraction < 1.0


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batching_does_not_change_the_update(micro_batch: int) -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(7, 3, generator=g) * 2, torch.randint(0, 2, (7,), generator=g)
    results = []
    for mb in (1024, micro_batch):
        model = _tiny()
        DpSgd(
            model,
            torch.optim.SGD(model.parameters(), lr=1.0),
            max_grad_norm=0.5,
            noise_multiplier=1.0,
            expected_batch_size=7,
            rng=Csprng(NOISE_SEED),
            micro_batch=mb,
        ).step(x, y)
        results.append(_snapshot(model))
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-6)


def test_empty_batch_moves_parameters_only_by_noise_over_b() -> None:
    model = build_model("tanh_cnn", rng=Csprng(MODEL_SEED))
    before = _snapshot(model)
    clip, sigma, b, lr = 1.5, 1.1, 64.0, 0.25
    dp = DpSgd(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        max_grad_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=b,
        rng=Csprng(NOISE_SEED),
    )
    x, y = _batch("tanh_cnn", 0)
    stats = dp.step(x, y)
    assert stats == StepStats(batch_size=0, clipped_fraction=0.0)
    reference = _flat_noise(Csprng(NOISE_SEED), model, sigma * clip)
    for name, p in model.named_parameters():
        noise = reference[name]
        torch.testing.assert_close(p.grad, noise / b, rtol=0, atol=0)
        torch.testing.assert_close(p.detach(), before[name] - lr * noise / b, rtol=1e-6, atol=1e-7)


def test_noise_in_a_step_has_std_sigma_c() -> None:
    model = build_model("mlp", rng=Csprng(MODEL_SEED))
    clip, sigma = 0.7, 1.3
    dp = DpSgd(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        max_grad_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=1.0,
        rng=Csprng(NOISE_SEED),
    )
    before = _snapshot(model)
    dp.step(*_batch("mlp", 0))
    delta = torch.cat([(before[n] - p.detach()).flatten() for n, p in model.named_parameters()])
    n = delta.numel()  # 101,770 coordinates
    assert abs(float(delta.std()) / (sigma * clip) - 1.0) < 5.0 / math.sqrt(2 * n)
    assert abs(float(delta.mean())) < 5.0 * sigma * clip / math.sqrt(n)


def test_noise_stream_position_does_not_depend_on_the_data() -> None:
    drawn = []
    for n in (0, 1, 9):
        rng = Csprng(NOISE_SEED)
        model = _tiny()
        engine = DpSgd(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=4.0,
            rng=rng,
        )
        engine.step(torch.randn(n, 3), torch.randint(0, 2, (n,)))
        engine.close()  # waits for the next step's draw, made ahead on the worker
        drawn.append(rng.bytes_drawn)
    assert len(set(drawn)) == 1


def test_clipped_fraction_extremes_and_frozen_stats() -> None:
    x, y = _batch("mlp", 12, seed=9)
    fractions = []
    for clip in (1e-6, 1e6):
        model = build_model("mlp", rng=Csprng(MODEL_SEED))
        dp = DpSgd(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            max_grad_norm=clip,
            noise_multiplier=1.0,
            expected_batch_size=12.0,
            rng=Csprng(NOISE_SEED),
        )
        stats = dp.step(x, y)
        assert stats.batch_size == 12
        fractions.append(stats.clipped_fraction)
        assert model.training
    assert fractions == [1.0, 0.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.batch_size = 3  # type: ignore[misc]


# -- refusals ----------------------------------------------------------------------------


class _RunningMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize(
    ("layer", "kind"),
    [
        (nn.BatchNorm1d(4), "BatchNorm1d"),
        (nn.BatchNorm2d(4, track_running_stats=False), "BatchNorm2d"),
        (nn.SyncBatchNorm(4), "SyncBatchNorm"),
        (nn.InstanceNorm2d(4, track_running_stats=True), "InstanceNorm2d"),
        (_RunningMean(), "_RunningMean"),
    ],
)
def test_sample_mixing_or_stateful_layers_are_refused(layer: nn.Module, kind: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), layer)
    with pytest.raises(UnsupportedLayer) as info:
        check_privatizable(model)
    message = str(info.value)
    assert "layer 1" in message and kind in message and "\n" not in message
    assert issubclass(UnsupportedLayer, ConfigError)
    with pytest.raises(UnsupportedLayer):
        DpSgd(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=4.0,
            rng=Csprng(NOISE_SEED),
        )


@pytest.mark.parametrize(
    "layer", [nn.InstanceNorm2d(4, affine=True), nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.Dropout(0.5)]
)
def test_per_sample_layers_are_accepted(layer: nn.Module) -> None:
    check_privatizable(nn.Sequential(nn.Linear(4, 4), layer))


def _dp(model: nn.Module | None = None, **overrides) -> DpSgd:
    model = model or _tiny()
    kwargs = dict(
        max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=4.0, rng=Csprng(NOISE_SEED)
    )
    kwargs.update(overrides)
    optimizer = kwargs.pop("optimizer", torch.optim.SGD(model.parameters(), lr=0.1))
    return DpSgd(model, optimizer, **kwargs)


@pytest.mark.parametrize(
    "overrides",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"max_grad_norm": 0.0},
        {"max_grad_norm": float("inf")},
        {"expected_batch_size": 0.0},
        {"micro_batch": 0},
        {"rng": torch.Generator()},
        {"optimizer": torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)},
    ],
)
def test_impossible_configurations_are_refused(overrides: dict) -> None:
    with pytest.raises(DpSgdConfigError):
        _dp(**overrides)


def test_unknown_loss_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownLoss, match="cross_entropy"):
        _dp(loss="mse")


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (torch.randn(3, 3), torch.randint(0, 2, (4,))),
        (torch.randn(3, 3), torch.randint(0, 2, (3, 1))),
    ],
)
def test_mismatched_inputs_and_targets_are_refused(x: torch.Tensor, y: torch.Tensor) -> None:
    with pytest.raises(BatchMismatch):
        _dp().step(x, y)
    assert issubclass(BatchMismatch, DatasetError)
