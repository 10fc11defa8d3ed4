"""DP-SGD: the update rule, the noise, the step statistics and the configurations it refuses."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from enclave.errors import DatasetError
from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.reference import ReferenceClipping, per_sample_norms
from enclave.training.clipping.registry import ENGINES
from enclave.training.clipping.rules import BatchMismatch, DpSgdConfigError, UnknownLoss, UnsupportedLayer
from enclave.training.dpsgd import DpSgd, StepStats
from enclave.training.models import MODELS, build_model
from tests.enclave.training.per_sample import loop_gradients

MODEL_SEED = bytes(range(32))
NOISE_SEED = bytes(range(1, 33))


def _batch(name: str, n: int, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = MODELS[name].input_shape
    return torch.randn(n, *shape, generator=g) * scale, torch.randint(0, 10, (n,), generator=g)


def _tiny() -> nn.Module:
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- the update rule ---------------------------------------------------------------------


def _reference_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, sigma: float, b: float
) -> dict[str, torch.Tensor]:
    """clip each loop gradient, sum, add noise from an identically seeded Csprng, divide by B."""
    per = loop_gradients(model, x, y)
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


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_update_equals_hand_computed_reference(engine: str) -> None:
    model = _tiny()
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(5, 3, generator=g) * 3, torch.randint(0, 2, (5,), generator=g)
    norms = per_sample_norms(loop_gradients(model, x, y))
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
        engine=engine,
    )
    stats = dp.step(x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.detach(), before[name] - lr * expected[name], rtol=1e-5, atol=1e-6)
    assert stats.batch_size == 5
    assert stats.clipped_fraction == pytest.approx(float((norms + 1e-6 > clip).float().mean()))
    assert 0.0 < stats.clipped_fraction < 1.0


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batching_does_not_change_the_update(engine: str, micro_batch: int) -> None:
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
            engine=engine,
        ).step(x, y)
        results.append(_snapshot(model))
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_empty_batch_moves_parameters_only_by_noise_over_b(engine: str) -> None:
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
        engine=engine,
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


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_layer_the_engines_refuse_is_refused(engine: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(UnsupportedLayer, match="BatchNorm1d"):
        DpSgd(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=4.0,
            rng=Csprng(NOISE_SEED),
            engine=engine,
        )


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
        {"engine": "ghost"},
        {"model": nn.Sequential(nn.Linear(3, 2).requires_grad_(False))},
    ],
)
def test_impossible_configurations_are_refused(overrides: dict) -> None:
    with pytest.raises(DpSgdConfigError):
        _dp(**overrides)


def test_unknown_loss_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownLoss, match="cross_entropy"):
        _dp(loss="hinge")


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


# -- the engines ---------------------------------------------------------------------------


def _dp_on(model: nn.Module, engine: str, seed: bytes) -> DpSgd:
    return DpSgd(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        max_grad_norm=0.7,
        noise_multiplier=1.1,
        expected_batch_size=6.0,
        rng=Csprng(seed),
        micro_batch=4,
        engine=engine,
    )


def test_fast_engine_steps_equal_vmap_engine_steps() -> None:
    fast_model = build_model("tanh_cnn", rng=Csprng(MODEL_SEED))
    vmap_model = build_model("tanh_cnn", rng=Csprng(MODEL_SEED))
    fast, ref = _dp_on(fast_model, "fast", b"n" * 32), _dp_on(vmap_model, "vmap", b"n" * 32)
    assert isinstance(fast.engine, GhostClipping) and isinstance(ref.engine, ReferenceClipping)
    for step, n in enumerate([7, 0, 1, 9]):
        x, y = _batch("tanh_cnn", n, seed=step)
        stats_fast, stats_ref = fast.step(x, y), ref.step(x, y)
        assert stats_fast == stats_ref
        for (name, p), q in zip(fast_model.named_parameters(), vmap_model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_fast_is_the_default_engine() -> None:
    model = _tiny()
    dp = DpSgd(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=0.3,
        noise_multiplier=1.0,
        expected_batch_size=4.0,
        rng=Csprng(NOISE_SEED),
        micro_batch=5,
    )
    assert isinstance(dp.engine, GhostClipping)
    assert (dp.engine.max_grad_norm, dp.engine.micro_batch) == (dp.max_grad_norm, 5) == (0.3, 5)
