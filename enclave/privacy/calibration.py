"""The accountants' three questions: epsilon after T steps, the sigma a target needs, the T a budget allows."""
from __future__ import annotations

from enclave.privacy.accountants import PRIMARY, check_accountant
from enclave.privacy.errors import PrivacyParameterError
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.privacy.params import (
    check_delta,
    check_epsilon,
    check_q,
    check_sigma,
    check_steps,
)
from enclave.privacy.search import largest_steps, smallest_sigma

__all__ = ["epsilon", "max_steps", "noise_multiplier"]


def epsilon(q: float, sigma: float, steps: int, delta: float, accountant: str = PRIMARY) -> float:
    """Epsilon at `delta` after `steps` Poisson-sampled Gaussian steps (rate q, noise sigma)."""
    seg = Segment(q, sigma, steps)
    delta = check_delta(delta)
    return compose_epsilon((seg,), delta, check_accountant(accountant))


def noise_multiplier(target_epsilon: float, delta: float, q: float, steps: int,
                     accountant: str = PRIMARY) -> float:
    """Smallest sigma (to ~1e-4 relative, rounded up) with epsilon(q, sigma, steps, delta) <= target."""
    target = check_epsilon(target_epsilon, "target epsilon")
    delta, q = check_delta(delta), check_q(q)
    steps = check_steps(steps)
    accountant = check_accountant(accountant)
    if steps == 0:
        raise PrivacyParameterError("steps must be >= 1 to calibrate a noise multiplier")
    return smallest_sigma(
        lambda sigma: compose_epsilon((Segment(q, sigma, steps),), delta, accountant), target
    )


def max_steps(q: float, sigma: float, delta: float, epsilon_budget: float,
              accountant: str = PRIMARY) -> int:
    """Largest T with epsilon(q, sigma, T, delta) <= epsilon_budget (0 if one step is too many)."""
    q, sigma, delta = check_q(q), check_sigma(sigma), check_delta(delta)
    budget = check_epsilon(epsilon_budget, "epsilon budget", allow_zero=True)
    accountant = check_accountant(accountant)
    return largest_steps(
        lambda steps: compose_epsilon((Segment(q, sigma, steps),), delta, accountant), budget
    )
