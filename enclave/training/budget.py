"""The privacy budget of a planned DP-SGD run, from public inputs alone.

Sampling rate, noise multiplier, steps and the planned epsilon follow from the job
spec and the dataset's encryption context (record count, max_epsilon, delta), so
they are known before KMS is asked for the data key. The context is authenticated
by KMS a moment later: a parent that inflates the budget in the header cannot get
the key.

`plan_budget` reports every breach it finds rather than stopping at the first, so
a job check can list them all; `enclave.training.plan.plan_run` refuses a run with
any.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from enclave.errors import HermeticError
from enclave.privacy.calibration import epsilon, max_steps, noise_multiplier
from enclave.sealed.format import SealedHeader
from enclave.training.spec import JobSpec, SpecError

# Relative slack for float formatting of the budget in the context ("3.0" vs 3.0).
BUDGET_RTOL = 1e-9


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


@dataclass(frozen=True)
class BudgetPlan:
    """The planned run (None when it cannot be computed) and each breach as (where, message)."""

    planned: PlannedRun | None
    breaches: tuple[tuple[str, str], ...]


def _over(value: float, limit: float) -> bool:
    return value > limit * (1 + BUDGET_RTOL)


def plan_budget(spec: JobSpec, header: SealedHeader) -> BudgetPlan:
    """The run the spec plans on this dataset, and where it breaks the dataset's budget."""
    privacy = spec.privacy
    records = header.record_count
    try:
        q = spec.sampling_rate(records)
        steps = spec.steps_for(records)
    except SpecError as err:
        return BudgetPlan(None, (("privacy.expected_batch_size", str(err)),))
    breaches: list[tuple[str, str]] = []
    delta = privacy.delta
    if _over(delta, header.delta):
        breaches.append(("privacy.delta", f"job delta {delta:g} exceeds the dataset's delta {header.delta:g}"))
    accountant = privacy.accountant
    if privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
        where = "privacy.noise_multiplier"
    else:
        assert privacy.target_epsilon is not None
        where = "privacy.target_epsilon"
        if _over(privacy.target_epsilon, header.max_epsilon):
            breaches.append((where, f"target epsilon {privacy.target_epsilon:g} exceeds the dataset's budget "
                                    f"{header.max_epsilon:g}"))
            return BudgetPlan(None, tuple(breaches))
        try:
            sigma = noise_multiplier(privacy.target_epsilon, delta, q, steps, accountant)
        except HermeticError as err:
            breaches.append((where, f"no noise multiplier meets target epsilon {privacy.target_epsilon:g}: {err}"))
            return BudgetPlan(None, tuple(breaches))
    try:
        planned = epsilon(q, sigma, steps, delta, accountant)
        within = max_steps(q, sigma, delta, header.max_epsilon, accountant)
    except HermeticError as err:
        breaches.append((where, f"the accountant cannot plan this run: {err}"))
        return BudgetPlan(None, tuple(breaches))
    if not math.isfinite(planned) or _over(planned, header.max_epsilon):
        breaches.append((where, f"planned epsilon {planned:.4g} ({steps} steps, q={q:.4g}, sigma={sigma:.4g}) "
                                f"exceeds the dataset's budget {header.max_epsilon:g}"))
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
    return BudgetPlan(plan, tuple(breaches))
