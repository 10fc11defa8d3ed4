"""The standard normal distribution, accurate in both tails, from the standard library alone.

The enclave's accountants may not use scipy, and numpy has no erfc, so the CDF is
evaluated point by point through `math.erfc` (correctly rounded to a few ulps over
its whole range). Tail masses are always computed from the smaller side, so masses
of 1e-300 keep their relative precision instead of vanishing in `1 - Phi`.
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["log_erfc", "lower_tail", "interval_mass", "log_ndtr", "ndtr", "tail_quantile"]

_SQRT2 = math.sqrt(2.0)
# Above this argument erfc underflows towards subnormals; the asymptotic series is
# accurate to ~1e-15 relative there.
_LOG_ERFC_SERIES_FROM = 20.0


def log_erfc(x: float) -> float:
    """log(erfc(x)), finite for every finite x (erfc underflows near x = 27)."""
    if x < _LOG_ERFC_SERIES_FROM:
        return math.log(math.erfc(x))
    # erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2 x^2)^k
    inv = 1.0 / (2.0 * x * x)
    term, total = 1.0, 1.0
    for k in range(1, 8):
        term *= -(2 * k - 1) * inv
        total += term
    return -x * x - math.log(x * math.sqrt(math.pi)) + math.log(total)


def ndtr(z: float) -> float:
    """Phi(z), the standard normal CDF."""
    return 0.5 * math.erfc(-z / _SQRT2)


def log_ndtr(z: float) -> float:
    """log(Phi(z)), accurate far into the lower tail."""
    if z > 0:
        return math.log1p(-0.5 * math.erfc(z / _SQRT2))
    return math.log(0.5) + log_erfc(-z / _SQRT2)


def tail_quantile(mass: float) -> float:
    """The z > 0 with Phi(-z) = mass, for 0 < mass < 0.5 (bisection; used for tail cut-offs)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if log_ndtr(-mid) > math.log(mass):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return hi


def lower_tail(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Phi(-|z|) elementwise: the mass of the smaller tail beyond z (infinite z gives 0)."""
    flat = np.abs(np.asarray(z, dtype=np.float64)).ravel() / _SQRT2
    out = np.fromiter(map(math.erfc, flat.tolist()), dtype=np.float64, count=flat.size)
    return (0.5 * out).reshape(np.shape(z))


def interval_mass(z_hi: npt.NDArray[np.float64], z_lo: npt.NDArray[np.float64],
                  tail_hi: npt.NDArray[np.float64] | None = None,
                  tail_lo: npt.NDArray[np.float64] | None = None) -> npt.NDArray[np.float64]:
    """Phi(z_hi) - Phi(z_lo) for z_hi >= z_lo, without cancellation in either tail.

    `tail_hi`/`tail_lo` may pass precomputed `lower_tail` values of the bounds.
    """
    z_hi = np.asarray(z_hi, dtype=np.float64)
    z_lo = np.asarray(z_lo, dtype=np.float64)
    s_hi = lower_tail(z_hi) if tail_hi is None else tail_hi
    s_lo = lower_tail(z_lo) if tail_lo is None else tail_lo
    both_low = z_hi <= 0.0
    both_high = z_lo >= 0.0
    straddle = ~(both_low | both_high)
    out = np.empty(np.broadcast(z_hi, z_lo).shape, dtype=np.float64)
    out[both_low] = (s_hi - s_lo)[both_low]
    out[both_high] = (s_lo - s_hi)[both_high]
    out[straddle] = (1.0 - s_hi - s_lo)[straddle]
    return np.maximum(out, 0.0)
