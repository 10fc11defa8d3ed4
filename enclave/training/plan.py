"""Plan a DP-SGD run from the job spec and the sealed header, before any key is used.

`plan_run` is the enclave's check on the plaintext header: it runs the whole job
check (`enclave.training.check`: model, columns, types and shapes from the header's
public schema, the dataset id, the budget) and refuses the job with one error that
lists every problem, so a spec that cannot fit the data never costs a key use. The
error is `BudgetExceeded` (wire code "budget") when every problem is the budget,
`JobDoesNotFit` (code "config") otherwise.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from enclave.errors import ConfigError, HermeticError
from enclave.sealed.format import PAYLOAD, SealedHeader
from enclave.training.budget import PlannedRun
from enclave.training.check import BUDGET, Problem, review_job
from enclave.training.spec import JobSpec

__all__ = ["BudgetExceeded", "JobDoesNotFit", "PlannedRun", "plan_run", "refusal"]

log = logging.getLogger(__name__)


class BudgetExceeded(HermeticError):
    """The job would spend more privacy than the data owner allowed."""

    code = "budget"

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class JobDoesNotFit(ConfigError):
    """The job spec cannot run on the sealed dataset (model, columns, shapes, dataset id)."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def describe(problems: Sequence[Problem]) -> str:
    """All problems on one line: "where: message; where: message"."""
    return "; ".join(f"{p.where}: {p.message}" for p in problems)


def refusal(
    headers: SealedHeader | Sequence[SealedHeader], problems: Sequence[Problem]
) -> BudgetExceeded | JobDoesNotFit:
    """The one error that refuses a job for `problems` (not empty) on the dataset(s) of `headers`."""
    several = () if isinstance(headers, SealedHeader) else tuple(headers)
    header = headers if isinstance(headers, SealedHeader) else several[0]
    if len(several) > 1:
        what = "datasets " + ", ".join(repr(h.dataset_id) for h in several)
    else:
        what = f"dataset {header.dataset_id!r}" if header.payload == PAYLOAD else "the sealed file"
    count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
    message = f"the job cannot run on {what} ({count}): {describe(problems)}"
    if all(p.code == BUDGET for p in problems):
        return BudgetExceeded(message, problems)
    return JobDoesNotFit(message, problems)


def plan_run(spec: JobSpec, headers: SealedHeader | Sequence[SealedHeader]) -> PlannedRun:
    """The run on the dataset(s); raise BudgetExceeded or JobDoesNotFit, listing every problem, unless it fits."""
    review = review_job(spec, headers)
    if review.problems:
        raise refusal(headers, review.problems)
    plan = review.planned
    assert plan is not None  # planned whenever the budget reports no breach
    log.info(
        "planned %d steps at q=%.5f sigma=%.4f: epsilon %.4f of %.4f",
        plan.steps, plan.sampling_rate, plan.noise_multiplier, plan.planned_epsilon, plan.max_epsilon,
    )
    return plan
