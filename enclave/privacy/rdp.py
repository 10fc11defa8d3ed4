"""Renyi-DP accountant for the Poisson-subsampled Gaussian (the cross-check accountant).

RDP of one step at order alpha is log(A_alpha) / (alpha - 1) with A_alpha the
alpha-th moment of the likelihood ratio (Mironov, Talwar & Zhang 2019, "Renyi
Differential Privacy of the Sampled Gaussian Mechanism"): a finite binomial sum for
integer orders, and the two-sided series of their Section 3.3 for fractional ones.
Compositions add RDP curves; epsilon comes from the improved conversion of
Canonne, Kamath & Steinke 2020 (Prop. 12) / Asoodeh et al. 2020, with the KL shortcut
for tiny curves, as dp-accounting's RdpAccountant does.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from enclave.privacy.normal import log_erfc

log = logging.getLogger(__name__)

__all__ = ["ORDERS", "epsilon", "epsilon_from_rdp", "rdp_curve", "step_rdp"]

#: The usual order grid (dp-accounting's DEFAULT_RDP_ORDERS).
ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(11, 64)]
    + [128.0, 256.0, 512.0, 1024.0]
)
_MAX_FRAC_TERMS = 1000

FloatArray = npt.NDArray[np.float64]


def _log_add(a: float, b: float) -> float:
    lo, hi = (a, b) if a < b else (b, a)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    i = np.arange(alpha + 1, dtype=np.float64)
    log_comb = (math.lgamma(alpha + 1)
                - np.array([math.lgamma(k + 1) + math.lgamma(alpha - k + 1) for k in range(alpha + 1)]))
    terms = (log_comb + i * math.log(q) + (alpha - i) * math.log1p(-q)
             + (i * i - i) / (2.0 * sigma * sigma))
    top = float(terms.max())
    return top + math.log(float(np.exp(terms - top).sum()))


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    # Split the integral at z0, where the two mixture components' ratio crosses 1.
    log_a0 = log_a1 = -math.inf
    z0 = sigma * sigma * math.log(1.0 / q - 1.0) + 0.5
    log_q, log_1mq = math.log(q), math.log1p(-q)
    last_s0 = last_s1 = -math.inf
    scale = math.sqrt(2.0) * sigma
    for i in range(_MAX_FRAC_TERMS):
        log_coef = _log_comb(alpha, i)
        j = alpha - i
        log_t0 = log_coef + i * log_q + j * log_1mq
        log_t1 = log_coef + j * log_q + i * log_1mq
        log_e0 = math.log(0.5) + log_erfc((i - z0) / scale)
        log_e1 = math.log(0.5) + log_erfc((z0 - j) / scale)
        log_s0 = log_t0 + (i * i - i) / (2 * sigma * sigma) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1
        log_a0 = _log_add(log_a0, log_s0)
        log_a1 = _log_add(log_a1, log_s1)
        total = _log_add(log_a0, log_a1)
        if log_s0 < last_s0 and log_s1 < last_s1 and max(log_s0, log_s1) < total - 30:
            return total
        last_s0, last_s1 = log_s0, log_s1
    log.debug("fractional RDP series did not converge (q=%g, sigma=%g, alpha=%g); order dropped",
                q, sigma, alpha)
    return math.inf


def _one_order(q: float, sigma: float, alpha: float) -> float:
    if q == 1.0:
        return alpha / (2.0 * sigma * sigma)
    if float(alpha).is_integer():
        log_a = _log_a_int(q, sigma, int(alpha))
    else:
        log_a = _log_a_frac(q, sigma, alpha)
    return log_a / (alpha - 1.0)


@functools.lru_cache(maxsize=256)
def _step_rdp_cached(q: float, sigma: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(_one_order(q, sigma, a) for a in orders)


def step_rdp(q: float, sigma: float, orders: Sequence[float] = ORDERS) -> FloatArray:
    """RDP of one Poisson-subsampled Gaussian step at each order."""
    return np.array(_step_rdp_cached(float(q), float(sigma), tuple(float(a) for a in orders)))


def rdp_curve(segments: Sequence[tuple[float, float, int]],
              orders: Sequence[float] = ORDERS) -> FloatArray:
    """The composed RDP curve of (q, sigma, steps) segments: curves add under composition."""
    total = np.zeros(len(orders))
    for q, sigma, steps in segments:
        if steps > 0:
            total += steps * step_rdp(q, sigma, orders)
    return total


def epsilon_from_rdp(orders: Sequence[float], rdp: Sequence[float] | FloatArray, delta: float) -> float:
    """Improved RDP -> (eps, delta) conversion (CKS20 Prop. 12), minimised over orders."""
    best = math.inf
    for a, r in zip(orders, rdp, strict=True):
        if r < 0:
            eps = 0.0
        elif delta * delta + math.expm1(-r) > 0:
            # KL route: delta <= sqrt(1 - exp(-KL)) already holds at epsilon 0.
            eps = 0.0
        elif a > 1.01:
            eps = r + math.log1p(-1.0 / a) - math.log(delta * a) / (a - 1.0)
        else:
            eps = math.inf
        best = min(best, eps)
    return float(max(0.0, best))


def epsilon(segments: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at `delta` of the composed segments under RDP accounting."""
    if not any(steps > 0 for _, _, steps in segments):
        return 0.0
    return epsilon_from_rdp(ORDERS, rdp_curve(segments), delta)
