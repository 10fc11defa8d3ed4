"""Attack: predict the randomness on the data path and subtract it.

Dropout masks drawn from torch's global generator are as predictable as its seed
(torch.manual_seed, or a seed derived from the clock), and anything in the enclave that
seeds it fixes them. Every random draw on the data path comes from the CSPRNG: dropout
through a generator seeded per step from a Csprng fork, sampling and noise from the
Csprng itself, initialisation from a generator seeded by it. torch's global generator
is never read or advanced.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.rules import DpSgdConfigError
from enclave.training.dpsgd import DpSgd
from enclave.training.models import build_model, preprocess
from enclave.transport.messages import JobResult
from parent.local.mock_nsm import MockNsm
from tests.enclave.test_runtime import SETUP, TRAIN, run_session, stream
from tests.enclave.test_runtime import sealed as sealed  # the module-scoped sealed dataset


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(4)
    x = preprocess("mlp", rng.integers(0, 256, (n, 784), dtype=np.uint8))
    return x, torch.from_numpy(rng.integers(0, 10, n).astype(np.int64))


def _masks_of_one_step(engine: str) -> tuple[list[torch.Tensor], int]:
    """The dropout masks of one DP-SGD step on the mlp, with torch's global seed fixed, and their seed."""
    torch.manual_seed(1234)
    model = build_model("mlp", rng=Csprng(bytes(32)))  # the same weights every run
    masks: list[torch.Tensor] = []
    dropout = model[3]

    def record(module: nn.Module, args: tuple[torch.Tensor], out: torch.Tensor) -> None:
        # The batch forward only: the vmap engine's per-sample forwards are batched tensors.
        if module.training and not torch._C._functorch.is_batchedtensor(out):
            masks.append((out == 0) & (args[0] != 0))

    dropout.register_forward_hook(record)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DpSgd(model, optimizer, max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=64,
               rng=Csprng(os.urandom(32)), engine=engine, noise_ahead=False)
    try:
        dp.step(*_batch())
    finally:
        dp.close()
    assert dropout.generator is not None
    return masks, dropout.generator.initial_seed()


def test_dropout_masks_differ_between_runs_with_the_same_torch_seed() -> None:
    (first, _), (second, _) = _masks_of_one_step("fast"), _masks_of_one_step("fast")
    assert first and len(first) == len(second)
    assert any(m.any() for m in first)  # dropout did drop units
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_the_vmap_engines_masks_are_seeded_from_the_csprng_too() -> None:
    # Its masks are drawn inside vmap, where a hook cannot keep them: their generator's seed
    # differs between runs with the same torch seed (and the global generator is untouched, below).
    assert _masks_of_one_step("vmap")[1] != _masks_of_one_step("vmap")[1]


@pytest.mark.parametrize("engine", ["fast", "vmap"])
def test_a_training_step_never_touches_torchs_global_generator(engine: str) -> None:
    model = build_model("mlp", rng=Csprng(os.urandom(32)))
    dp = DpSgd(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0, noise_multiplier=1.0,
               expected_batch_size=64, rng=Csprng(os.urandom(32)), engine=engine, noise_ahead=False)
    before = torch.get_rng_state()
    try:
        for _ in range(3):
            dp.step(*_batch())
    finally:
        dp.close()
    assert torch.equal(torch.get_rng_state(), before)
    # The check can fail: one draw from the global generator moves its state.
    torch.rand(1)
    assert not torch.equal(torch.get_rng_state(), before)


def test_a_whole_job_never_touches_torchs_global_generator(nsm: MockNsm, sealed: bytes) -> None:
    before = torch.get_rng_state()
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)])
    assert any(isinstance(m, JobResult) and m.status == "ok" for m in replies), replies[-1]
    assert torch.equal(torch.get_rng_state(), before)


def test_a_layer_drawing_from_the_global_generator_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Dropout(0.5), nn.Linear(16, 10))
    with pytest.raises(DpSgdConfigError, match="global generator"):
        DpSgd(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0, noise_multiplier=1.0,
              expected_batch_size=64, rng=Csprng(os.urandom(32)))
