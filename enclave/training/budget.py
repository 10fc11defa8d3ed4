"""The privacy budget of a planned DP-SGD run, from public inputs alone.

Sampling rate, noise multiplier, steps and the planned epsilon follow from the job
spec and the dataset's encryption context (record count, max_epsilon, delta), so
they are known before KMS is asked for the data key. The context is authenticated
by KMS a moment later: a parent that inflates the budget in the header cannot get
the key.

`plan_budget` reports every breach it finds rather than stopping at the first, so
a job check can list them all; `enclave.training.plan.plan_run` refuses a run with
any.

A tuning job (`[tuning]`) plans its whole search instead: every grid point's (q, steps)
on the union's records, one sigma for all trials (the spec's, or the least whose
repeat-and-select epsilon meets target_epsilon: the target is what the search as a
whole releases, so it is the search that is calibrated, not one trial), and the
search's epsilon (`enclave.privacy.searches`). The run fields of its `PlannedRun` then
describe the costliest candidate and are informational; `search` is what is charged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from enclave.errors import HermeticError
from enclave.privacy.calibration import epsilon, max_steps, noise_multiplier
from enclave.privacy.ledger import Segment
from enclave.privacy.search import smallest_sigma
from enclave.privacy.searches import SearchCharge, compose
from enclave.sealed.format import SealedHeader
from enclave.training.spec import JobSpec, SpecError

# Relative slack for float formatting of the budget in the context ("3.0" vs 3.0).
BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class PlannedRun:
    records: int  # over every dataset the job trains on
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    accountant: str
    planned_epsilon: float
    max_epsilon: float  # the smallest of the datasets' caps
    budget_delta: float  # the smallest of the datasets' deltas
    max_steps_within_budget: int
    search: SearchCharge | None = None  # a tuning job's whole search, what its ledgers are charged

    def charge(self) -> tuple[list[Segment], list[SearchCharge]]:
        """What the job spends, as plain segments and searches (one of them empty)."""
        if self.search is not None:
            return [], [self.search]
        return [Segment(self.sampling_rate, self.noise_multiplier, self.steps)], []


@dataclass(frozen=True)
class BudgetPlan:
    """The planned run (None when it cannot be computed) and each breach as (where, message)."""

    planned: PlannedRun | None
    breaches: tuple[tuple[str, str], ...]


def _over(value: float, limit: float) -> bool:
    return value > limit * (1 + BUDGET_RTOL)


def plan_budget(spec: JobSpec, headers: SealedHeader | Sequence[SealedHeader]) -> BudgetPlan:
    """The run the spec plans on the union of these datasets, and where it breaks any one's budget.

    Poisson sampling runs over the union: q = B / N with N the sum of the record counts.
    Every record is in exactly one dataset, so the one run (q, sigma, steps) is what each
    dataset's records see, and it must fit each dataset's cap and delta.
    """
    datasets = (headers,) if isinstance(headers, SealedHeader) else tuple(headers)
    assert datasets, "a run plans on at least one dataset"
    privacy = spec.privacy
    records = sum(h.record_count for h in datasets)
    try:
        q = spec.sampling_rate(records)
        steps = spec.steps_for(records)
    except SpecError as err:
        return BudgetPlan(None, (("privacy.expected_batch_size", str(err)),))
    breaches: list[tuple[str, str]] = []
    delta = privacy.delta
    for h in datasets:
        if _over(delta, h.delta):
            breaches.append(("privacy.delta", f"job delta {delta:g} exceeds {_the(h, datasets)} delta {h.delta:g}"))
    if spec.tuning is not None:
        return _plan_search(spec, datasets, records, breaches)
    # The tightest cap binds the one run; the smallest delta is the one a run at the job's delta must respect.
    cap = min(datasets, key=lambda h: h.max_epsilon)
    accountant = privacy.accountant
    if privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
        where = "privacy.noise_multiplier"
    else:
        assert privacy.target_epsilon is not None
        where = "privacy.target_epsilon"
        over = [h for h in datasets if _over(privacy.target_epsilon, h.max_epsilon)]
        if over:
            breaches += [(where, f"target epsilon {privacy.target_epsilon:g} exceeds {_the(h, datasets)} budget "
                                 f"{h.max_epsilon:g}") for h in over]
            return BudgetPlan(None, tuple(breaches))
        try:
            sigma = spec_noise_multiplier(spec, q, steps)
        except HermeticError as err:
            breaches.append((where, f"no noise multiplier meets target epsilon {privacy.target_epsilon:g}: {err}"))
            return BudgetPlan(None, tuple(breaches))
    try:
        planned = epsilon(q, sigma, steps, delta, accountant)
        within = max_steps(q, sigma, delta, cap.max_epsilon, accountant)
    except HermeticError as err:
        breaches.append((where, f"the accountant cannot plan this run: {err}"))
        return BudgetPlan(None, tuple(breaches))
    for h in datasets:
        if not math.isfinite(planned) or _over(planned, h.max_epsilon):
            breaches.append((where, f"planned epsilon {planned:.4g} ({steps} steps, q={q:.4g}, sigma={sigma:.4g}) "
                                    f"exceeds {_the(h, datasets)} budget {h.max_epsilon:g}"))
    plan = PlannedRun(
        records=records,
        sampling_rate=q,
        noise_multiplier=sigma,
        steps=steps,
        delta=delta,
        accountant=accountant,
        planned_epsilon=planned,
        max_epsilon=cap.max_epsilon,
        budget_delta=min(h.delta for h in datasets),
        max_steps_within_budget=within,
    )
    return BudgetPlan(plan, tuple(breaches))


def search_runs(spec: JobSpec, records: int) -> list[tuple[float, int]]:
    """The distinct (q, steps) the spec's search may run, sorted; SpecError if one cannot run.

    Only the batch size and the epochs or steps change a trial's privacy cost, so only
    their lists are enumerated, never the whole grid (up to 16^4 points).
    """
    assert spec.tuning is not None
    grid = dict(spec.tuning.grid)
    length = "epochs" if "epochs" in grid else "steps"
    runs = set()
    for batch in grid.get("expected_batch_size", (spec.privacy.expected_batch_size,)):
        for amount in grid.get(length, (None,)):
            point = {"expected_batch_size": batch} | ({} if amount is None else {length: amount})
            trial = spec.with_candidate(point)
            runs.add((trial.sampling_rate(records), trial.steps_for(records)))
    return sorted(runs)


def search_charge(spec: JobSpec, runs: Sequence[tuple[float, int]], sigma: float) -> SearchCharge:
    assert spec.tuning is not None
    tuning = spec.tuning
    return SearchCharge.of(((q, sigma, t) for q, t in runs), tuning.distribution, tuning.mean, tuning.shape)


def search_sigma(spec: JobSpec, runs: Sequence[tuple[float, int]]) -> float:
    """The search's one sigma: the spec's, or the least whose whole search meets target_epsilon."""
    privacy = spec.privacy
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    assert privacy.target_epsilon is not None
    return smallest_sigma(lambda s: compose([], [search_charge(spec, runs, s)], privacy.delta, "rdp"),
                          privacy.target_epsilon)


def _plan_search(spec: JobSpec, datasets: Sequence[SealedHeader], records: int,
                 breaches: list[tuple[str, str]]) -> BudgetPlan:
    privacy, delta = spec.privacy, spec.privacy.delta
    try:
        runs = search_runs(spec, records)
    except SpecError as err:
        return BudgetPlan(None, (*breaches, ("tuning", str(err))))
    where = "privacy.noise_multiplier" if privacy.noise_multiplier is not None else "privacy.target_epsilon"
    target = privacy.target_epsilon
    if target is not None:
        over = [h for h in datasets if _over(target, h.max_epsilon)]
        if over:
            return BudgetPlan(None, (*breaches, *((where, f"target epsilon {target:g} exceeds "
                                                   f"{_the(h, datasets)} budget {h.max_epsilon:g}") for h in over)))
    try:
        sigma = search_sigma(spec, runs)
    except HermeticError as err:
        return BudgetPlan(None, (*breaches, (where, f"no noise multiplier meets target epsilon {target:g} "
                                                    f"for the whole search: {err}")))
    charge = search_charge(spec, runs, sigma)
    planned = compose([], [charge], delta, "rdp")
    tuning = spec.tuning
    assert tuning is not None
    for h in datasets:
        if not math.isfinite(planned) or _over(planned, h.max_epsilon):
            breaches.append((where, f"planned epsilon {planned:.4g} of the search ({tuning.distribution} trials, "
                                    f"mean {tuning.mean:g}, {len(charge.runs)} distinct runs, sigma={sigma:.4g}) "
                                    f"exceeds {_the(h, datasets)} budget {h.max_epsilon:g}"))
    q, steps = max(runs, key=lambda r: epsilon(r[0], sigma, r[1], delta, "rdp"))
    plan = PlannedRun(
        records=records, sampling_rate=q, noise_multiplier=sigma, steps=steps, delta=delta, accountant="rdp",
        planned_epsilon=planned, max_epsilon=min(h.max_epsilon for h in datasets),
        budget_delta=min(h.delta for h in datasets), max_steps_within_budget=max(t for _, t in runs),
        search=charge,
    )
    return BudgetPlan(plan, tuple(breaches))


def spec_noise_multiplier(spec: JobSpec, q: float, steps: int) -> float:
    """The spec's noise multiplier, or the least that meets its target epsilon at (q, steps)."""
    privacy = spec.privacy
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    assert privacy.target_epsilon is not None
    return noise_multiplier(privacy.target_epsilon, privacy.delta, q, steps, privacy.accountant)


def _the(header: SealedHeader, datasets: Sequence[SealedHeader]) -> str:
    """How a breach names the dataset: by id when the job trains on several."""
    return "the dataset's" if len(datasets) == 1 else f"dataset {header.dataset_id!r}'s"
