"""Renyi DP of a hyper-parameter search: repeat a private run K times, release the best.

Papernot & Steinke, "Hyperparameter Tuning with Renyi Differential Privacy" (ICLR 2022,
arXiv:2110.03620). The number of runs K is random; its distribution is named as
dp-accounting's RepeatAndSelectDpEvent(mean, shape) names it, so the two agree bit for
bit on what a search is:

* shape 0: logarithmic; shape 1: geometric; 0 < shape < inf: truncated negative
  binomial (Definition 1); all have K >= 1. Theorem 2 bounds the search's RDP at order
  lambda by eps(lambda) + (1 + shape) * min_j[(1 - 1/l_j) eps(l_j) - log(gamma)/l_j]
  + log(mean)/(lambda - 1), then RDP's monotonicity in the order tightens low orders.
* shape inf: Poisson (Theorem 6); K may be 0. The bound uses the (eps_hat, delta_hat)
  guarantee of one run at eps_hat = log(1 + 1/(lambda - 1)), with delta_hat from the
  same improved conversion (CKS20 Prop. 12 with the KL route) as `enclave.privacy.rdp`.

The base mechanism's curve is what a caller passes: for a grid of candidates drawn
uniformly, the MAX over candidates of each candidate's DP-SGD curve at each order
(`candidates_rdp`). That is sound because the base mechanism's output distribution on
a dataset is the uniform mixture of the candidates' output distributions, and Renyi
divergence of order > 1 is quasi-convex in the pair of distributions: the divergence
of two mixtures with equal weights is at most the largest divergence of the paired
components.

The computations follow dp-accounting's `_compute_rdp_repeat_and_select` (the same
gamma bisection, with its conservative side) so a test can compare the two; numpy
only, the enclave does not import dp-accounting.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from enclave.privacy import rdp
from enclave.privacy.errors import PrivacyParameterError
from enclave.privacy.rdp import ORDERS, FloatArray

__all__ = [
    "DISTRIBUTIONS", "candidates_rdp", "delta_from_rdp", "distribution_shape",
    "gamma_for_mean", "repeat_select_rdp", "search_epsilon", "search_rdp",
]

#: The trial-count distributions a spec may name; None: the shape is given by the spec.
DISTRIBUTIONS: dict[str, float | None] = {
    "logarithmic": 0.0,
    "geometric": 1.0,
    "poisson": math.inf,
    "truncated_negative_binomial": None,
}
# A search of more expected runs than this is no tuning a budget could pay for.
MAX_MEAN = 1000.0
MAX_SHAPE = 1000.0
_GAMMA_TOL = 1e-9

Candidate = tuple[float, float, int]  # (q, sigma, steps)


def distribution_shape(distribution: str, shape: float | None) -> float:
    """The RepeatAndSelect shape of a named distribution; a TNB names its own in (0, inf)."""
    if distribution not in DISTRIBUTIONS:
        raise PrivacyParameterError(
            f"unknown trial distribution {distribution!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    fixed = DISTRIBUTIONS[distribution]
    if fixed is not None:
        if shape is not None and shape != fixed:
            raise PrivacyParameterError(f"the {distribution} distribution has shape {fixed:g}, got {shape:g}")
        return fixed
    if shape is None or not (0.0 < shape <= MAX_SHAPE) or not math.isfinite(shape):
        raise PrivacyParameterError(
            f"a truncated negative binomial needs a shape in (0, {MAX_SHAPE:g}], got {shape!r}")
    return float(shape)


def _check_mean(mean: float) -> float:
    if not isinstance(mean, (int, float)) or isinstance(mean, bool) or not 1.0 <= mean <= MAX_MEAN:
        raise PrivacyParameterError(f"the mean number of trials must be in [1, {MAX_MEAN:g}], got {mean!r}")
    return float(mean)


def _expm1_over_x(x: float) -> float:
    if abs(x) > 0.1:
        return math.expm1(x) / x
    terms, y = [], 1.0
    for k in range(1, 100):
        y /= k
        terms.append(y)
        y *= x
    return math.fsum(terms)


def _logx_over_xm1(x: float) -> float:
    if x < 0.9 or x > 1.1:
        return math.log(x) / (x - 1)
    return math.fsum((1 - x) ** (k - 1) / k for k in range(1, 100))


def tnb_mean(gamma: float, shape: float) -> float:
    """Mean of the truncated negative binomial with halting probability gamma (Definition 1)."""
    if shape == 1.0:
        return 1.0 / gamma
    if shape == 0.0:
        return 1.0 / (gamma * _logx_over_xm1(gamma))
    return 1.0 / (gamma * _expm1_over_x(shape * math.log(gamma)) * _logx_over_xm1(gamma))


def gamma_for_mean(shape: float, mean: float) -> float:
    """The TNB's gamma for a mean: bisection, the smaller (conservative) end of the bracket."""
    if shape == 1.0:
        return 1.0 / mean
    lo, hi = 0.0, min(1.0, 2.0 * (shape + 1.0) / mean)
    while hi > lo * (1 + _GAMMA_TOL):
        mid = (lo + hi) / 2
        if tnb_mean(mid, shape) < mean:
            hi = mid
        else:
            lo = mid
    return lo


def delta_from_rdp(orders: Sequence[float] | FloatArray, curve: Sequence[float] | FloatArray, eps: float) -> float:
    """The least delta at `eps` over orders: CKS20 Prop. 12, or the KL bound when smaller."""
    best = math.inf
    for a, r in zip(orders, curve, strict=True):
        if r <= 0:
            log_delta = -math.inf
        else:
            log_delta = 0.5 * math.log1p(-math.exp(-r)) if math.isfinite(r) else 0.0
        if a > 1.01:
            log_delta = min(log_delta, (a - 1) * (r - eps + math.log1p(-1 / a)) - math.log(a))
        best = min(best, log_delta)
    return min(math.exp(best), 1.0)


def repeat_select_rdp(orders: Sequence[float], curve: Sequence[float] | FloatArray,
                      mean: float, shape: float) -> FloatArray:
    """RDP of the best of K runs of a mechanism with RDP `curve`, K ~ (mean, shape)."""
    mean = _check_mean(mean)
    if math.isnan(shape) or shape < 0:
        raise PrivacyParameterError(f"the trial distribution's shape must be >= 0, got {shape}")
    a = np.asarray(orders, dtype=np.float64)
    eps = np.asarray(curve, dtype=np.float64)
    if a.shape != eps.shape:
        raise PrivacyParameterError("orders and the RDP curve differ in length")
    out = np.full_like(a, math.inf)
    if shape == math.inf:
        for i, order in enumerate(a):
            if order <= 1:
                continue
            delta_hat = delta_from_rdp(a, eps, math.log1p(1 / (order - 1)))
            out[i] = eps[i] + mean * delta_hat + math.log(mean) / (order - 1)
        return out
    gamma = gamma_for_mean(shape, mean)
    # The sampler draws K with this gamma, whose mean is at or (by the bisection's 1e-9) above
    # `mean`: the bound takes the larger, the mean K actually has.
    mean = max(mean, tnb_mean(gamma, shape))
    with np.errstate(invalid="ignore"):
        c = (1 + shape) * float(np.min((1 - 1 / a) * eps - math.log(gamma) / a))
    above = a > 1
    out[above] = eps[above] + math.log(mean) / (a[above] - 1) + c
    # RDP is non-decreasing in the order: a higher order's bound holds for a lower one.
    for i in range(len(a)):
        out[i] = min(out[j] for j in range(len(a)) if a[i] <= a[j])
    return out


def candidates_rdp(candidates: Sequence[Candidate], orders: Sequence[float] = ORDERS) -> FloatArray:
    """The base mechanism's curve: the max over candidates of each one's DP-SGD curve (see above)."""
    if not candidates:
        raise PrivacyParameterError("a search needs at least one candidate")
    curves: FloatArray = np.stack([rdp.rdp_curve([c], orders) for c in candidates])
    best: FloatArray = curves.max(axis=0)
    return best


def search_rdp(candidates: Sequence[Candidate], mean: float, shape: float,
               orders: Sequence[float] = ORDERS) -> FloatArray:
    """RDP curve of the whole search over `candidates`."""
    return repeat_select_rdp(orders, candidates_rdp(candidates, orders), mean, shape)


def search_epsilon(candidates: Sequence[Candidate], mean: float, shape: float, delta: float,
                   prior: FloatArray | None = None) -> float:
    """Epsilon at `delta` of the search, composed with a `prior` RDP curve (on ORDERS) when given."""
    curve = search_rdp(candidates, mean, shape)
    if prior is not None:
        curve = curve + prior
    return rdp.epsilon_from_rdp(ORDERS, curve, delta)
