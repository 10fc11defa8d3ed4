"""Budget planning before spending: what a job's run costs, and how many more its datasets' caps allow.

The run is the enclave's own plan: with sealed files, `enclave.training.budget.plan_budget`
on their headers (the numbers `hermetic job check` reports); with a record count only,
the same spec arithmetic and noise calibration (`spec_noise_multiplier`). Each dataset's
ledger is read and verified as `hermetic job check` reads it (`parent.job_check`), never
written, and composed as the enclave composes it before any key: every valid entry and
the job, at the dataset's delta, under the job's accountant.

"How many more such jobs fit" is the largest k for which the ledger's entries and k copies
of this run compose to at most the cap. Composition is sub-additive, so k is usually more
than remaining / job epsilon; it is searched, not divided.

A tuning job's run is its whole search (`enclave.privacy.searches`): the plan states the
search's epsilon and, for comparison, the epsilon of its costliest candidate run once at
the same noise (what the job would spend without tuning); ledgers then compose in RDP,
as the enclave composes any ledger holding a search, and "more jobs" counts searches.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from enclave.errors import ConfigError
from enclave.ledger.reserve import BUDGET_RTOL
from enclave.privacy import rdp
from enclave.privacy.calibration import epsilon, noise_multiplier
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge, compose
from enclave.sealed.format import PAYLOAD, SealedHeader
from enclave.training.budget import plan_budget, search_charge, search_runs, search_sigma, spec_noise_multiplier
from enclave.training.spec import JobSpec

# Past this many, "more than MAX_MORE_JOBS" is all a user needs to know.
MAX_MORE_JOBS = 10_000


def json_float(value: float) -> float | None:
    # JSON has no infinity: an unbounded epsilon is null.
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RunPlan:
    """One run of the job: Poisson rate q, steps, noise multiplier, and its epsilon at the job's delta."""

    records: int
    sampling_rate: float
    steps: int
    noise_multiplier: float
    accountant: str
    delta: float
    epsilon: float
    # A tuning job's search; the run fields are then its costliest candidate's, once.
    search: SearchCharge | None = None

    @property
    def segment(self) -> Segment:
        return Segment(self.sampling_rate, self.noise_multiplier, self.steps)

    @property
    def without_tuning(self) -> float:
        """The costliest candidate run once at the search's noise (the run's own epsilon without a search)."""
        return epsilon(self.sampling_rate, self.noise_multiplier, self.steps, self.delta, self.accountant)

    def to_json(self) -> dict[str, Any]:
        out = {"sampling_rate": self.sampling_rate, "steps": self.steps, "noise_multiplier": self.noise_multiplier,
               "accountant": self.accountant, "delta": self.delta, "epsilon": json_float(self.epsilon),
               "records": self.records}
        if self.search is not None:
            out["search"] = self.search.to_dict() | {"epsilon_without_tuning": json_float(self.without_tuning)}
        return out


@dataclass(frozen=True)
class DatasetBudget:
    """A dataset's cap and ledger, and what this job would do to it (None where the ledger was not read)."""

    source: str  # the sealed file as given
    dataset_id: str
    records: int
    cap: float
    delta: float  # the dataset's: the ledger composes at it
    ledger: str
    spent: float | None
    with_job: float | None
    more_jobs: int | None
    more_jobs_capped: bool = False  # more than `more_jobs` fit; the search stops at MAX_MORE_JOBS

    @property
    def remaining(self) -> float | None:
        return None if self.spent is None else max(0.0, self.cap - self.spent)

    def to_json(self) -> dict[str, Any]:
        def maybe(value: float | None) -> float | None:
            return None if value is None else json_float(value)

        return {"dataset_id": self.dataset_id, "records": self.records, "cap": self.cap,
                "spent": maybe(self.spent), "remaining": maybe(self.remaining), "with_job": maybe(self.with_job),
                "more_jobs": self.more_jobs, "more_jobs_capped": self.more_jobs_capped, "delta": self.delta,
                "ledger": self.ledger, "ledger_read": self.spent is not None, "sealed": self.source}


@dataclass(frozen=True)
class Target:
    epsilon: float
    noise_multiplier: float

    def to_json(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "noise_multiplier": self.noise_multiplier}


@dataclass(frozen=True)
class BudgetPlanReport:
    plan: RunPlan
    datasets: tuple[DatasetBudget, ...] = ()
    target: Target | None = None
    breaches: tuple[str, ...] = ()  # where the run breaks a dataset's cap or delta, as the enclave would refuse it

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.to_json(), "datasets": [d.to_json() for d in self.datasets],
                "target": None if self.target is None else self.target.to_json(), "problems": list(self.breaches)}


def plan_for_records(spec: JobSpec, records: int) -> RunPlan:
    """The spec's run on `records` records, as `plan_budget` computes it, without any dataset's cap."""
    privacy = spec.privacy
    if spec.tuning is not None:
        runs = search_runs(spec, records)
        charge = search_charge(spec, runs, search_sigma(spec, runs))
        costliest = max(charge.runs, key=lambda r: epsilon(r.q, r.sigma, r.steps, privacy.delta, "rdp"))
        return RunPlan(records, costliest.q, costliest.steps, costliest.sigma, "rdp", privacy.delta,
                       compose([], [charge], privacy.delta, "rdp"), charge)
    q = spec.sampling_rate(records)
    steps = spec.steps_for(records)
    sigma = spec_noise_multiplier(spec, q, steps)
    return RunPlan(records, q, steps, sigma, privacy.accountant, privacy.delta,
                   epsilon(q, sigma, steps, privacy.delta, privacy.accountant))


def plan_for_headers(spec: JobSpec, headers: Sequence[SealedHeader]) -> tuple[RunPlan, tuple[str, ...]]:
    """The spec's one run over the union of these datasets (`plan_budget`), and every breach it reports.

    Raises ConfigError when no run can be planned (a target above a cap, a batch larger than the data).
    """
    budget = plan_budget(spec, headers)
    breaches = tuple(f"{where}: {message}" for where, message in budget.breaches)
    if budget.planned is None:
        raise ConfigError(f"no run can be planned: {'; '.join(breaches)}")
    p = budget.planned
    return RunPlan(p.records, p.sampling_rate, p.steps, p.noise_multiplier, p.accountant, p.delta,
                   p.planned_epsilon, p.search), breaches


def check_datasets(spec: JobSpec, sealed: Sequence[tuple[str, SealedHeader]]) -> None:
    """Refuse files that are no datasets, or that the spec's data.train does not train on."""
    for source, header in sealed:
        if header.payload != PAYLOAD:
            raise ConfigError(f"{source}: holds a {header.payload!r} payload, not a dataset")
    train = spec.data.train
    given = {header.dataset_id for _, header in sealed}
    if train and given != set(train):
        raise ConfigError(f"data.train names {', '.join(map(repr, train))}; the sealed files hold "
                          f"{', '.join(map(repr, sorted(given)))}")


def fits(ledger: Sequence[Segment], job: Segment, copies: int, cap: float, delta: float, accountant: str,
         searches: Sequence[SearchCharge] = ()) -> bool:
    """Whether the ledger (its `searches` too) and `copies` runs of `job` compose within the cap."""
    more = Segment(job.q, job.sigma, job.steps * copies)
    return compose([*ledger, more], searches, delta, accountant) <= cap * (1 + BUDGET_RTOL)


def more_jobs(ledger: Sequence[Segment], job: Segment, cap: float, delta: float, accountant: str,
              limit: int = MAX_MORE_JOBS, searches: Sequence[SearchCharge] = ()) -> int:
    """The largest k <= limit + 1 with the ledger and k copies of `job` within the cap (limit + 1: more than limit)."""
    return _largest(lambda k: fits(ledger, job, k, cap, delta, accountant, searches), limit)


def more_searches(ledger: Sequence[Segment], searches: Sequence[SearchCharge], search: SearchCharge, cap: float,
                  delta: float, limit: int = MAX_MORE_JOBS) -> int:
    """As `more_jobs` for copies of a search: k searches add k times its RDP curve to the ledger's."""
    parts = [(s.q, s.sigma, s.steps) for s in ledger if s.steps]
    base = rdp.rdp_curve(parts) + sum((s.curve() for s in searches), start=rdp.rdp_curve([]))
    one = search.curve()
    return _largest(lambda k: rdp.epsilon_from_rdp(rdp.ORDERS, base + k * one, delta) <= cap * (1 + BUDGET_RTOL),
                    limit)


def _largest(ok: Callable[[int], bool], limit: int) -> int:
    """The largest k <= limit + 1 with ok(k), for ok true up to some k and false after; 0 if not ok(1).

    Epsilon grows with the copies, so the answer is bracketed by doubling and then bisected.
    """
    if not ok(0) or not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and ok(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    if hi == limit + 1 and ok(hi):
        return hi
    while hi - lo > 1:  # ok(lo), not ok(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def dataset_budget(source: str, header: SealedHeader, run: RunPlan, s3_client: Any | None) -> DatasetBudget:
    """The dataset's cap and ledger, and what this run would spend of it (LedgerError: the ledger is damaged)."""
    from parent.job_check import read_ledger_view  # imported on use: the job check loads torch

    unread = DatasetBudget(source=source, dataset_id=header.dataset_id, records=header.record_count,
                           cap=header.max_epsilon, delta=header.delta, ledger=header.ledger_location,
                           spent=None, with_job=None, more_jobs=None)
    view = read_ledger_view(header, s3_client)
    if view is None:
        return unread
    entries, searches = view.segments(), view.searches()
    if run.search is not None:
        count = more_searches(entries, searches, run.search, header.max_epsilon, header.delta)
        with_job = compose(entries, [*searches, run.search], header.delta, run.accountant)
    else:
        count = more_jobs(entries, run.segment, header.max_epsilon, header.delta, run.accountant, searches=searches)
        with_job = compose([*entries, run.segment], searches, header.delta, run.accountant)
    return replace(unread, spent=compose(entries, searches, header.delta, run.accountant), with_job=with_job,
                   more_jobs=min(count, MAX_MORE_JOBS), more_jobs_capped=count > MAX_MORE_JOBS)


def target_for(spec: JobSpec, run: RunPlan, target_epsilon: float | None) -> Target | None:
    """The noise multiplier a target epsilon needs at this run's (q, steps): the asked one, else the spec's."""
    if target_epsilon is None:
        if spec.privacy.target_epsilon is None:
            return None
        return Target(spec.privacy.target_epsilon, run.noise_multiplier)  # the plan already met it
    sigma = noise_multiplier(target_epsilon, run.delta, run.sampling_rate, run.steps, run.accountant)
    return Target(target_epsilon, sigma)
