"""Inverting the accountant: the least noise for a budget, the most steps within one.

Both searches bracket the answer and then shrink the bracket with the Illinois
variant of regula falsi on log(epsilon) (epsilon is close to a power law in sigma
and in steps, so few evaluations are needed), falling back to bisection whenever
interpolation stalls or meets an infinite or zero epsilon. The answer is always
taken from the side that meets the budget, so it is never optimistic.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

from enclave.privacy.errors import BudgetSearchError

log = logging.getLogger(__name__)

__all__ = ["SIGMA_FLOOR", "SIGMA_CEILING", "STEPS_CEILING", "largest_steps", "smallest_sigma"]

SIGMA_FLOOR = 1e-2
SIGMA_CEILING = 1e4
STEPS_CEILING = 10**9
_REL_TOL = 1e-4
_MAX_EVALS = 200


def _log_gap(eps: float, target: float) -> float:
    if eps <= 0.0:
        return -math.inf
    return math.log(eps) - math.log(target)


def _interpolate(x_lo: float, f_lo: float, x_hi: float, f_hi: float) -> float | None:
    """Root of the chord through (x_lo, f_lo), (x_hi, f_hi); None when unusable."""
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or f_lo == f_hi:
        return None
    x = x_lo - f_lo * (x_hi - x_lo) / (f_hi - f_lo)
    if not x_lo < x < x_hi:
        return None
    return x


def smallest_sigma(eps_of_sigma: Callable[[float], float], target: float) -> float:
    """Smallest sigma (to _REL_TOL, rounded up) with eps_of_sigma(sigma) <= target.

    eps_of_sigma must be non-increasing. Answers below SIGMA_FLOOR are reported as
    SIGMA_FLOOR (more noise than needed is never a privacy failure).
    """
    evals = 0

    def f(sigma: float) -> float:
        nonlocal evals
        evals += 1
        return _log_gap(eps_of_sigma(sigma), target)

    sigma = 1.0
    value = f(sigma)
    if value <= 0:
        hi, f_hi = sigma, value
        lo, f_lo = sigma / 2, f(sigma / 2)
        while f_lo <= 0:
            hi, f_hi = lo, f_lo
            if hi <= SIGMA_FLOOR:
                log.info("target met even at the noise floor %g", SIGMA_FLOOR)
                return SIGMA_FLOOR
            lo = max(lo / 2, SIGMA_FLOOR / 2)
            f_lo = f(lo)
    else:
        lo, f_lo = sigma, value
        hi, f_hi = sigma * 2, f(sigma * 2)
        while f_hi > 0:
            lo, f_lo = hi, f_hi
            if lo >= SIGMA_CEILING:
                raise BudgetSearchError(
                    f"epsilon {target:g} is not reached even with noise multiplier {SIGMA_CEILING:g}"
                )
            hi = hi * 2
            f_hi = f(hi)

    x_lo, x_hi = math.log(lo), math.log(hi)
    tol = math.log1p(_REL_TOL)
    last_side = 0
    stalled = 0
    while x_hi - x_lo > tol and evals < _MAX_EVALS:
        width = x_hi - x_lo
        x = _interpolate(x_lo, f_lo, x_hi, f_hi) if stalled < 3 else None
        if x is None:
            x, stalled = 0.5 * (x_lo + x_hi), 0
        else:
            # Aim a little past the estimate, across from the end that moved last, so the
            # bracket closes from both sides instead of creeping in from one.
            x += 0.45 * tol * last_side
            x = min(max(x, x_lo + 0.2 * tol), x_hi - 0.2 * tol)
        value = f(math.exp(x))
        if value <= 0:
            x_hi, f_hi = x, value
            if last_side == -1:
                f_lo /= 2  # Illinois: keep the stale end from pinning the chord
            last_side = -1
        else:
            x_lo, f_lo = x, value
            if last_side == 1:
                f_hi /= 2
            last_side = 1
        stalled = stalled + 1 if (x_hi - x_lo) > 0.5 * width else 0
    log.debug("noise multiplier search: %d evaluations", evals)
    return math.exp(x_hi)


def largest_steps(eps_of_steps: Callable[[int], float], budget: float) -> int:
    """Largest T >= 0 with eps_of_steps(T) <= budget (eps_of_steps non-decreasing, eps(0) = 0)."""
    evals = 0

    def eps(steps: int) -> float:
        nonlocal evals
        evals += 1
        return eps_of_steps(steps)

    lo, e_lo = 1, eps(1)
    if e_lo > budget:
        return 0
    while True:
        if lo >= STEPS_CEILING:
            raise BudgetSearchError(f"epsilon budget {budget:g} allows more than {STEPS_CEILING} steps")
        # epsilon grows at least like sqrt(T) once composition dominates: jump accordingly.
        factor = 1024.0 if e_lo <= 0 else min(1024.0, max(2.0, (budget / e_lo) ** 2))
        nxt = min(STEPS_CEILING, max(lo + 1, int(lo * factor)))
        e_nxt = eps(nxt)
        if e_nxt > budget:
            hi, e_hi = nxt, e_nxt
            break
        lo, e_lo = nxt, e_nxt

    f_lo, f_hi = _log_gap(e_lo, budget), _log_gap(e_hi, budget)
    last_side = 0
    stalled = 0
    while hi - lo > 1 and evals < _MAX_EVALS:
        width = hi - lo
        guess = None
        if stalled < 3:
            x = _interpolate(math.log(lo), f_lo, math.log(hi), f_hi)
            if x is not None:
                # The answer is floor(root): after the top end moved, probe just below the
                # estimated root, after the bottom end moved, just above it.
                root = math.exp(x)
                guess = math.floor(root) + (1 if last_side == 1 else 0)
                guess = min(hi - 1, max(lo + 1, guess))
        if guess is None:
            guess, stalled = (lo + hi) // 2, 0
        value = eps(guess)
        if value <= budget:
            lo, f_lo = guess, _log_gap(value, budget)
            if last_side == 1:
                f_hi /= 2
            last_side = 1
        else:
            hi, f_hi = guess, _log_gap(value, budget)
            if last_side == -1:
                f_lo /= 2
            last_side = -1
        stalled = stalled + 1 if (hi - lo) > 0.5 * width else 0
    log.debug("max steps search: %d evaluations", evals)
    return lo
