"""StepNoise: DP-SGD's noise drawn one step ahead on a worker thread, same stream as in line."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training import noise as noise_module
from enclave.training.clipping.rules import DpSgdConfigError
from enclave.training.dpsgd import DpSgd
from enclave.training.noise import NoiseClosed, StepNoise, spare_core

SEED = bytes(range(32))
SPECS = [(torch.Size([5, 3]), torch.float32), (torch.Size([5]), torch.float32), (torch.Size([2, 2]), torch.float64)]


def _one_step(rng: Csprng, std: float) -> list[torch.Tensor]:
    # SPECS' float32 run (15 + 5 values) is one draw, the float64 spec another.
    run = rng.normal(20, std=std, dtype=torch.float32)
    return [run[:15].view(5, 3), run[15:], rng.normal((2, 2), std=std, dtype=torch.float64)]


def _reference(steps: int, std: float) -> list[list[torch.Tensor]]:
    rng = Csprng(SEED)
    return [_one_step(rng, std) for _ in range(steps)]


@pytest.mark.parametrize("ahead", [True, False])
def test_each_take_is_the_next_in_line_draw_of_every_spec(ahead: bool) -> None:
    noise = StepNoise(Csprng(SEED), SPECS, 1.5, ahead=ahead)
    try:
        got = [noise.take() for _ in range(4)]
    finally:
        noise.close()
    for step, expected in zip(got, _reference(4, 1.5), strict=True):
        assert [t.dtype for t in step] == [d for _, d in SPECS]
        for a, b in zip(step, expected, strict=True):
            assert a.shape == b.shape and torch.equal(a, b)


def test_draws_after_the_first_run_on_the_worker_thread() -> None:
    rng = Csprng(SEED)
    threads: list[str] = []
    original = rng.normal

    class Spy:
        def normal(self, *args: object, **kwargs: object) -> torch.Tensor:
            threads.append(threading.current_thread().name)
            return original(*args, **kwargs)  # type: ignore[arg-type]

    noise = StepNoise(Spy(), SPECS[:1], 1.0)  # type: ignore[arg-type]
    noise.take()
    noise.take()
    noise.close()
    assert threads[0] == threading.current_thread().name
    assert all(name.startswith("dp-noise") for name in threads[1:]) and len(threads) == 3


def test_close_waits_for_the_draw_in_flight_and_refuses_more() -> None:
    rng = Csprng(SEED)
    noise = StepNoise(rng, SPECS, 1.0)
    noise.take()
    noise.close()
    per_step = Csprng(SEED)
    _one_step(per_step, 1.0)
    assert rng.bytes_drawn == 2 * per_step.bytes_drawn  # this step and the one drawn ahead
    noise.close()  # idempotent
    with pytest.raises(NoiseClosed):
        noise.take()


def _engine(ahead: bool | None, kind: str = "fast") -> tuple[nn.Module, DpSgd]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    engine = DpSgd(
        model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), max_grad_norm=0.5,
        noise_multiplier=1.3, expected_batch_size=8.0, rng=Csprng(SEED), noise_ahead=ahead, engine=kind,
    )
    return model, engine


def test_dpsgd_trains_identically_with_and_without_drawing_ahead() -> None:
    g = torch.Generator().manual_seed(11)
    batches = [(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (8, 0, 5, 11)]
    finals = []
    for ahead in (True, False):
        model, engine = _engine(ahead)
        for x, y in batches:
            engine.step(x, y)
        engine.close()
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals, strict=True):
        assert torch.equal(a, b)


def test_dpsgd_refuses_noise_for_parameters_that_changed_shape() -> None:
    model, engine = _engine(True, "vmap")
    model[2] = nn.Linear(5, 4)  # same parameter names, other shapes
    try:
        with pytest.raises(DpSgdConfigError):
            engine.step(torch.randn(2, 6), torch.tensor([0, 1]))
    finally:
        engine.close()


def test_drawing_ahead_by_default_only_when_torch_leaves_a_core_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise_module.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(noise_module.torch, "get_num_threads", lambda: 2)
    assert not spare_core()
    _, engine = _engine(None)  # type: ignore[arg-type]
    assert not engine._noise._ahead
    monkeypatch.setattr(noise_module.torch, "get_num_threads", lambda: 1)
    assert spare_core()
    _, engine = _engine(None)  # type: ignore[arg-type]
    assert engine._noise._ahead


def test_the_worker_runs_torch_on_one_thread_and_leaves_the_callers_pool_alone() -> None:
    # A worker with torch's default count would start a second OpenMP team and slow
    # the training thread's pool (see noise.py); the caller's count must not change.
    rng = Csprng(SEED)
    counts: list[tuple[str, int]] = []
    original = rng.normal

    class Spy:
        def normal(self, *args: object, **kwargs: object) -> torch.Tensor:
            counts.append((threading.current_thread().name, torch.get_num_threads()))
            return original(*args, **kwargs)  # type: ignore[arg-type]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        noise = StepNoise(Spy(), SPECS[:1], 1.0)  # type: ignore[arg-type]
        for _ in range(3):
            noise.take()
        noise.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert counts[0] == (threading.current_thread().name, 2)
    assert [n for name, n in counts[1:] if name.startswith("dp-noise")] == [1, 1, 1]
