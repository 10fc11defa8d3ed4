"""The random parts of a search: how many trials, and which candidate each one runs.

Both come from the job's CSPRNG (a stream forked for tuning), never from the data,
so the trial count and the candidates drawn are data-independent; only the choice of
the best trial depends on the data, and that is what repeat-and-select accounts.

The trial count follows the distribution the accounting assumes (Papernot & Steinke,
Definition 1, with dp-accounting's parameterisation by mean and shape):

* truncated negative binomial, shape eta > 0 (geometric is eta = 1):
  P[K = k] = (1 - gamma)^k / (gamma^-eta - 1) * prod_{l<k} (l + eta) / (l + 1), k >= 1;
* logarithmic (eta = 0): P[K = k] = (1 - gamma)^k / (k log(1/gamma)), k >= 1;
* Poisson(mean), k >= 0: counted as arrivals of a unit-rate Poisson process before
  `mean`, which needs no exp(-mean) (it underflows for large means).

The truncated families are drawn by inversion over the pmf's ratio recurrence, with
gamma from `gamma_for_mean` (the same conservative gamma the accounting uses). The
inversion stops when a term underflows, a bias below 1e-290 in probability.
A candidate index is uniform by rejection sampling on 64-bit draws (no modulo bias).
"""
from __future__ import annotations

import math

from enclave.hazmat.csprng import Csprng
from enclave.privacy.repeat_select import distribution_shape, gamma_for_mean

__all__ = ["draw_index", "draw_trials", "trial_pmf"]

_TINY = 1e-300


def draw_index(rng: Csprng, n: int) -> int:
    """A uniform integer in [0, n)."""
    if n < 1:
        raise ValueError("draw_index needs n >= 1")
    limit = (1 << 64) - (1 << 64) % n
    while True:
        value = int.from_bytes(rng.random_bytes(8), "big")
        if value < limit:
            return value % n


def _uniform(rng: Csprng) -> float:
    return float(rng.uniform(1)[0])


def trial_pmf(distribution: str, mean: float, shape: float | None, k: int) -> float:
    """P[K = k] of the named distribution (for tests and documentation of the sampler)."""
    eta = distribution_shape(distribution, shape)
    if eta == math.inf:
        return math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
    if k < 1:
        return 0.0
    gamma = gamma_for_mean(eta, mean)
    p = _first(gamma, eta)
    for j in range(1, k):
        p *= _ratio(gamma, eta, j)
    return p


def _first(gamma: float, eta: float) -> float:
    if eta == 0.0:
        return (1 - gamma) / -math.log(gamma)
    return (1 - gamma) * eta / math.expm1(-eta * math.log(gamma))


def _ratio(gamma: float, eta: float, k: int) -> float:
    """P[K = k + 1] / P[K = k]."""
    return (1 - gamma) * (k + eta) / (k + 1)


def draw_trials(rng: Csprng, distribution: str, mean: float, shape: float | None) -> int:
    """The number of trials K of a search."""
    eta = distribution_shape(distribution, shape)
    if eta == math.inf:
        k, clock = 0, 0.0
        while True:
            clock += -math.log1p(-_uniform(rng))  # an Exp(1) gap; 1 - u is in (0, 1]
            if clock > mean:
                return k
            k += 1
    gamma = gamma_for_mean(eta, mean)
    u = _uniform(rng)
    k, p = 1, _first(gamma, eta)
    total = p
    while total <= u and p > _TINY:
        p *= _ratio(gamma, eta, k)
        k += 1
        total += p
    return k
