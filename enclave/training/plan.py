"""Plan a DP-SGD run from the job spec and the sealed header, before any key is used.

Everything here depends only on public parameters (the spec and the dataset's
encryption context), so the budget check can run on the plaintext header before
KMS is asked for the data key. The context is authenticated by KMS a moment
later: a parent that inflates the budget in the header cannot get the key.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from enclave.errors import HermeticError
from enclave.privacy.calibration import epsilon, max_steps, noise_multiplier
from enclave.sealed.format import SealedHeader
from enclave.training.spec import JobSpec

log = logging.getLogger(__name__)

# Relative slack for float formatting of the budget in the context ("3.0" vs 3.0).
_BUDGET_RTOL = 1e-9


class BudgetExceeded(HermeticError):
    """The job would spend more privacy than the data owner allowed."""

    code = "budget"


@dataclass(frozen=True)
class PlannedRun:
    records: int
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    accountant: str
    planned_epsilon: float
    max_epsilon: float
    budget_delta: float
    max_steps_within_budget: int


def plan_run(spec: JobSpec, header: SealedHeader) -> PlannedRun:
    """Raise BudgetExceeded unless the whole planned run fits the dataset's budget."""
    privacy = spec.privacy
    records = header.record_count
    q = spec.sampling_rate(records)
    steps = spec.steps_for(records)
    delta = privacy.delta
    if delta > header.delta * (1 + _BUDGET_RTOL):
        raise BudgetExceeded(
            f"job delta {delta:g} exceeds the dataset's delta {header.delta:g}"
        )
    accountant = privacy.accountant
    if privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
    else:
        assert privacy.target_epsilon is not None
        if privacy.target_epsilon > header.max_epsilon * (1 + _BUDGET_RTOL):
            raise BudgetExceeded(
                f"target epsilon {privacy.target_epsilon:g} exceeds the dataset's budget "
                f"{header.max_epsilon:g}"
            )
        sigma = noise_multiplier(privacy.target_epsilon, delta, q, steps, accountant)
    planned = epsilon(q, sigma, steps, delta, accountant)
    if not math.isfinite(planned) or planned > header.max_epsilon * (1 + _BUDGET_RTOL):
        raise BudgetExceeded(
            f"planned epsilon {planned:.4g} ({steps} steps, q={q:.4g}, sigma={sigma:.4g}) exceeds "
            f"the dataset's budget {header.max_epsilon:g}"
        )
    within = max_steps(q, sigma, delta, header.max_epsilon, accountant)
    plan = PlannedRun(
        records=records,
        sampling_rate=q,
        noise_multiplier=sigma,
        steps=steps,
        delta=delta,
        accountant=accountant,
        planned_epsilon=planned,
        max_epsilon=header.max_epsilon,
        budget_delta=header.delta,
        max_steps_within_budget=within,
    )
    log.info(
        "planned %d steps at q=%.5f sigma=%.4f: epsilon %.4f of %.4f",
        steps, q, sigma, planned, header.max_epsilon,
    )
    return plan
