"""Poisson sampling: batch-size statistics, per-record inclusion, empty batches, contract.

Statistical checks run on fixed seeds (so they are reproducible) with 5-sigma bounds:
a correct sampler fails one with probability below about 1e-6 per check for a fresh
seed, while a sampler off by a few percent in q fails them reliably at these sizes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng
from enclave.training import sampler as sampler_module
from enclave.training.sampler import PoissonSampler, SamplerConfigError

SEED = bytes(range(32))
Z = 5.0


def _rng(tag: int = 0) -> Csprng:
    return Csprng(bytes([tag]) + SEED[1:])


def test_batch_size_mean_and_variance_match_binomial() -> None:
    n, q, steps = 10_000, 0.01, 2_000
    sizes = np.array([b.size for b in PoissonSampler(n, q, _rng(1), steps=steps)], dtype=np.float64)
    mean, var = n * q, n * q * (1 - q)
    # Sample mean: sd sqrt(var / steps).
    assert abs(sizes.mean() - mean) / math.sqrt(var / steps) < Z
    # Sample variance of a near-normal (Binomial, Nq = 100) population: sd var*sqrt(2/(steps-1)).
    assert abs(sizes.var(ddof=1) - var) / (var * math.sqrt(2.0 / (steps - 1))) < Z


def test_each_record_is_included_with_probability_q() -> None:
    n, q, steps = 200, 0.3, 2_000
    counts = np.zeros(n)
    for batch in PoissonSampler(n, q, _rng(2), steps=steps):
        counts[batch] += 1
    mean, sd = steps * q, math.sqrt(steps * q * (1 - q))
    z = (counts - mean) / sd
    # Per record, and jointly: sum z^2 ~ chi-square(n) with mean n and sd sqrt(2n).
    assert np.abs(z).max() < Z
    assert abs(float(np.sum(z * z)) - n) / math.sqrt(2 * n) < Z


def test_empty_batches_happen_when_nq_is_small() -> None:
    n, q, steps = 100, 0.01, 1_000
    sampler = PoissonSampler(n, q, _rng(3), steps=steps)
    batches = list(sampler)
    empties = sum(1 for b in batches if b.size == 0)
    p_empty = (1 - q) ** n  # about 0.366
    assert abs(empties - steps * p_empty) / math.sqrt(steps * p_empty * (1 - p_empty)) < Z
    empty = next(b for b in batches if b.size == 0)
    assert empty.dtype == np.int64 and empty.shape == (0,)


def test_batches_are_sorted_unique_in_range_int64() -> None:
    n = 5_000
    for batch in PoissonSampler(n, 0.05, _rng(4), steps=20):
        assert batch.dtype == np.int64
        assert np.all(np.diff(batch) > 0)
        assert batch.size == 0 or (batch[0] >= 0 and batch[-1] < n)


def test_rate_one_takes_every_record() -> None:
    batch = PoissonSampler(37, 1.0, _rng(5)).sample()
    np.testing.assert_array_equal(batch, np.arange(37))


def test_same_seed_same_batches_and_slicing_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    first = [b.tolist() for b in PoissonSampler(1_000, 0.1, _rng(6), steps=5)]
    again = [b.tolist() for b in PoissonSampler(1_000, 0.1, _rng(6), steps=5)]
    assert first == again
    monkeypatch.setattr(sampler_module, "_SLICE", 7)
    sliced = [b.tolist() for b in PoissonSampler(1_000, 0.1, _rng(6), steps=5)]
    assert sliced == first
    other = [b.tolist() for b in PoissonSampler(1_000, 0.1, _rng(7), steps=5)]
    assert other != first


def test_expected_batch_size_and_properties() -> None:
    s = PoissonSampler(60_000, 256 / 60_000, _rng(), steps=3)
    assert s.expected_batch_size == pytest.approx(256.0)
    assert (s.num_records, s.steps, len(s)) == (60_000, 3, 3)
    assert s.sampling_rate == 256 / 60_000
    assert "60000" in repr(s)


def test_iteration_yields_exactly_steps_batches() -> None:
    assert len(list(PoissonSampler(10, 0.5, _rng(), steps=7))) == 7
    assert list(PoissonSampler(10, 0.5, _rng(), steps=0)) == []
    unbounded = PoissonSampler(10, 0.5, _rng())
    with pytest.raises(SamplerConfigError):
        iter(unbounded).__next__()
    with pytest.raises(TypeError):
        len(unbounded)
    assert unbounded.sample().dtype == np.int64


@pytest.mark.parametrize(
    ("num_records", "rate", "steps"),
    [
        (0, 0.1, None),
        (-5, 0.1, None),
        (True, 0.1, None),
        (10.0, 0.1, None),
        (10, 0.0, None),
        (10, -0.1, None),
        (10, 1.5, None),
        (10, float("nan"), None),
        (10, 0.1, -1),
        (10, 0.1, 2.5),
    ],
)
def test_impossible_configurations_are_refused(num_records, rate, steps) -> None:
    with pytest.raises(SamplerConfigError):
        PoissonSampler(num_records, rate, _rng(), steps=steps)
    assert issubclass(SamplerConfigError, ConfigError)


def test_torch_or_numpy_generators_are_not_accepted() -> None:
    with pytest.raises(SamplerConfigError):
        PoissonSampler(10, 0.1, np.random.default_rng(0))  # type: ignore[arg-type]
