"""The trial-count sampler follows the distribution the accounting assumes; candidates are uniform."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from enclave.hazmat.csprng import Csprng
from enclave.training.trials import draw_index, draw_trials, trial_pmf

DRAWS = 4000


@pytest.mark.parametrize(("distribution", "mean", "shape"), [
    ("logarithmic", 5.0, None), ("geometric", 3.0, None), ("poisson", 4.0, None),
    ("truncated_negative_binomial", 6.0, 0.5),
])
def test_trial_counts_follow_the_distribution(distribution: str, mean: float, shape: float | None) -> None:
    rng = Csprng(b"s" * 32).fork(b"tuning")
    draws = np.array([draw_trials(rng, distribution, mean, shape) for _ in range(DRAWS)])
    if distribution != "poisson":
        assert draws.min() >= 1
    # The pmf sums to one and has the stated mean (gamma is the accounting's, conservative to 1e-9).
    ks = range(0, 2000)
    pmf = np.array([trial_pmf(distribution, mean, shape, k) for k in ks])
    assert pmf.sum() == pytest.approx(1.0, abs=1e-9)
    assert float((np.arange(2000) * pmf).sum()) == pytest.approx(mean, rel=1e-6)
    # Chi-square goodness of fit over bins with enough mass, the tail pooled.
    top = max(k for k in ks if pmf[k] * DRAWS >= 5)
    observed = [int((draws == k).sum()) for k in range(top)] + [int((draws >= top).sum())]
    expected = [pmf[k] * DRAWS for k in range(top)] + [(1.0 - pmf[:top].sum()) * DRAWS]
    keep = [i for i, e in enumerate(expected) if e > 0]
    observed_kept = np.array([observed[i] for i in keep], dtype=float)
    expected_kept = np.array([expected[i] for i in keep])
    _, p_value = stats.chisquare(observed_kept, expected_kept * observed_kept.sum() / expected_kept.sum())
    assert p_value > 1e-3
    assert abs(draws.mean() - mean) < 5 * math.sqrt(draws.var() / DRAWS)


def test_the_count_is_a_function_of_the_seed() -> None:
    first = [draw_trials(Csprng(b"a" * 32), "geometric", 10.0, None) for _ in range(3)]
    assert len(set(first)) == 1


def test_candidate_indices_are_uniform() -> None:
    rng = Csprng(b"i" * 32)
    draws = np.array([draw_index(rng, 6) for _ in range(DRAWS)])
    counts = np.bincount(draws, minlength=6)
    assert counts.size == 6
    _, p_value = stats.chisquare(counts)
    assert p_value > 1e-3
    assert draw_index(rng, 1) == 0
    with pytest.raises(ValueError):
        draw_index(rng, 0)
