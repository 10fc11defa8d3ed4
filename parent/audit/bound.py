"""The epsilon lower bound of a one-run audit (Steinke, Nasr & Jagielski 2023, Theorem 5.2 / Prop. 5.7).

The game: m canaries, each included independently with probability 1/2; after
training, the auditor guesses IN or OUT for k of them (abstaining on the rest) and r
guesses are right. If the mechanism is (epsilon, delta)-DP,

    P[W >= r] <= P[Binomial(k, p) >= r] + 2 m delta * max_{1<=i<=r} P[r-i <= Binomial(k, p) < r] / i,

p = e^epsilon / (1 + e^epsilon), the accuracy of epsilon-randomised response. The
lower bound at confidence 1 - beta is the largest epsilon this p-value rejects at
level beta: were the mechanism that private, r or more right guesses would happen
with probability below beta.

Arithmetic: the p-value is a tail of a binomial whose terms span hundreds of orders
of magnitude (k up to m); each term is taken in log space with the binomial
coefficient exact (`math.comb`, an integer, whose log is exact to a rounding) rather
than from lgamma, whose differences cancel for large k, and the tail is summed with
`math.fsum`, so the p-value is accurate to a few ulps relative. The search returns
the low end of a bracket of width below 1e-9, so the reported bound never exceeds
the epsilon the test rejects: an audit must err towards claiming less leakage.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from enclave.errors import ConfigError

__all__ = ["AuditBoundError", "Guesses", "ceiling", "epsilon_lower_bound", "p_value"]

# The bisection stops when the bracket is this narrow (absolute, in epsilon).
_TOLERANCE = 1e-9
# Past this the test rejects nothing a finite run can show: perfect guessing of k <= 10^6
# canaries certifies far less (about log(k / log(1/beta))).
_EPSILON_MAX = 1e3


class AuditBoundError(ConfigError):
    """The counts or the confidence cannot define a bound (r > k, k > m, beta outside (0, 1), ...)."""


@dataclass(frozen=True)
class Guesses:
    """m canaries, k guesses made, r of them correct."""

    canaries: int
    guesses: int
    correct: int

    def __post_init__(self) -> None:
        for name in ("canaries", "guesses", "correct"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise AuditBoundError(f"{name} must be a non-negative integer, got {value!r}")
        if not self.correct <= self.guesses <= self.canaries:
            raise AuditBoundError(
                f"need correct <= guesses <= canaries, got {self.correct}, {self.guesses}, {self.canaries}"
            )


def _check_probability(value: float, name: str, *, closed_low: bool) -> float:
    value = float(value)
    low_ok = value >= 0.0 if closed_low else value > 0.0
    if not (low_ok and value < 1.0):  # also rejects NaN
        raise AuditBoundError(f"{name} must be in {'[0' if closed_low else '(0'}, 1), got {value!r}")
    return value


@functools.lru_cache(maxsize=8)
def _log_comb(k: int) -> tuple[float, ...]:
    """log C(k, j) for j = 0..k, from the exact integers (the search asks for the same k ~50 times)."""
    return tuple(math.log(math.comb(k, j)) for j in range(k + 1))


def p_value(g: Guesses, epsilon: float, delta: float) -> float:
    """The largest probability of r or more correct guesses out of k under (epsilon, delta)-DP, capped at 1."""
    if not epsilon >= 0.0:
        raise AuditBoundError(f"epsilon must be >= 0, got {epsilon!r}")
    delta = _check_probability(delta, "delta", closed_low=True)
    k, r = g.guesses, g.correct
    if r == 0:
        return 1.0
    # p = 1 / (1 + e^-eps): log p and log(1 - p) via log1p, stable for large epsilon.
    log_p = -math.log1p(math.exp(-epsilon))
    log_q = -epsilon - math.log1p(math.exp(-epsilon))
    logs = [c + j * log_p + (k - j) * log_q for j, c in enumerate(_log_comb(k))]
    top = max(logs)
    terms = [math.exp(v - top) for v in logs]
    scale = math.exp(top)
    tail = math.fsum(terms[r:]) * scale
    # max over i of P[r - i <= Bin < r] / i: the partial sums below r, each divided by its width.
    # The terms are positive, so a running float sum is within i ulps relative: no cancellation.
    worst = 0.0
    running = 0.0
    for i in range(1, r + 1):
        running += terms[r - i]
        worst = max(worst, running * scale / i)
    return min(1.0, tail + 2.0 * g.canaries * delta * worst)


def epsilon_lower_bound(g: Guesses, *, delta: float, confidence: float) -> float:
    """The largest epsilon such that (epsilon, delta)-DP makes r correct of k guesses less likely than 1 - confidence.

    0 when even epsilon = 0 cannot be rejected (r at or near chance, k/2).
    """
    confidence = _check_probability(confidence, "confidence", closed_low=False)
    beta = 1.0 - confidence
    if p_value(g, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(g, high, delta) < beta:
        low, high = high, 2.0 * high
        if high > _EPSILON_MAX:
            return low
    while high - low > _TOLERANCE:
        middle = (low + high) / 2.0
        if p_value(g, middle, delta) < beta:
            low = middle
        else:
            high = middle
    return low


def ceiling(canaries: int, guesses: int, *, delta: float, confidence: float) -> float:
    """The bound with every one of the k guesses right: the most this audit's m and k can ever certify."""
    return epsilon_lower_bound(Guesses(canaries, guesses, guesses), delta=delta, confidence=confidence)
