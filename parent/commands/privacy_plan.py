"""`hermetic privacy plan`: what a job will spend, and how many more such jobs its datasets allow.

    hermetic privacy plan JOB.toml (--sealed FILE... | --records N) [--target-epsilon E] [--json]

No enclave and no key: the dataset size and cap come from each sealed header's public
encryption context, the spent budget from its ledger, read only (`parent.privacy_plan`).
The exit status is 0 whenever the run can be planned, even one that does not fit: the
report says so, and `hermetic job check` is the gate.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from enclave.errors import ConfigError, HermeticError
from enclave.ledger.location import S3_SCHEME
from parent.commands import privacy_args as arg
from parent.commands.budget import add_s3_arguments, s3_client
from parent.commands.output import add_json_flag
from parent.privacy_plan import (
    BudgetPlanReport,
    DatasetBudget,
    RunPlan,
    check_datasets,
    dataset_budget,
    plan_for_headers,
    plan_for_records,
    target_for,
)

if TYPE_CHECKING:
    from enclave.sealed.format import SealedHeader
    from enclave.training.spec import JobSpec

# Each sealed file as given, with its header.
Sealed = list[tuple[str, "SealedHeader"]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser(
        "plan", help="a job's planned run and epsilon, and how many more such jobs each dataset's budget allows",
        description="Plan a job's run (sampling rate, steps, noise multiplier, epsilon) exactly as the enclave "
                    "will, and for each sealed dataset: its cap, what its ledger has spent, the total with this "
                    "job, and how many more such jobs fit. Reads headers and ledgers only; no key is used.",
    )
    plan.add_argument("spec", metavar="JOB.toml", help="the training job spec")
    add_size_arguments(plan)
    plan.add_argument("--target-epsilon", type=arg.target, metavar="E",
                      help="also print the noise multiplier this epsilon needs at the planned q and steps")
    add_s3_arguments(plan)
    add_json_flag(plan, help='print {"plan": {...}, "datasets": [{...}], "target": {...} | null, "problems"}')
    plan.set_defaults(func=run_plan)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the job's record count comes from: sealed headers, or the caller."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--sealed", action="append", default=[], metavar="FILE",
                      help="a sealed dataset (path or s3://bucket/key) the job trains on; repeatable (a job "
                           "on several trains on their union)")
    size.add_argument("--records", type=arg.count, metavar="N", help="the record count, without a sealed file")


def load_spec(path: str) -> JobSpec:
    # Imported on use, here and below: the job check loads the model registry and torch, and
    # `hermetic --help` stays fast.
    from parent.job_check import read_spec

    try:
        return read_spec(path)
    except HermeticError as err:
        raise ConfigError(str(err) if path in str(err) else f"{path}: {err}") from None


def read_sealed(args: argparse.Namespace) -> Sealed:
    from parent.job_check import sealed_header

    sealed = []
    for path in args.sealed:
        try:
            header = sealed_header(path, s3_client(args) if path.startswith("s3://") else None)
        except HermeticError as err:
            raise ConfigError(f"{path}: {err}") from None
        sealed.append((path, header))
    return sealed


def plan_job(args: argparse.Namespace, spec: JobSpec) -> tuple[RunPlan, Sealed, tuple[str, ...]]:
    """The job's run over its sealed datasets or --records, the datasets, and the run's breaches of their caps."""
    if args.sealed:
        sealed = read_sealed(args)
        check_datasets(spec, sealed)
        run, breaches = plan_for_headers(spec, [header for _, header in sealed])
        return run, sealed, breaches
    if args.records is None:
        raise ConfigError("the job's record count is needed: --sealed FILE (its header holds it) or --records N")
    return plan_for_records(spec, args.records), [], ()


def run_plan(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    run, sealed, breaches = plan_job(args, spec)
    datasets = tuple(
        dataset_budget(path, header, run, s3_client(args) if header.ledger_location.startswith(S3_SCHEME) else None)
        for path, header in sealed)
    report = BudgetPlanReport(run, datasets, target_for(spec, run, args.target_epsilon), breaches)
    if args.json:
        print(json.dumps(report.to_json(), allow_nan=False, sort_keys=True))
        return 0
    print(_run_line(spec, run))
    if report.target is not None:
        print(f"  target epsilon {report.target.epsilon:g} needs noise multiplier "
              f"{report.target.noise_multiplier:.4g} at this q and step count")
    for dataset in datasets:
        print(*_dataset_lines(dataset), sep="\n")
    for breach in breaches:
        print(f"problem: {breach}")
    return 0


def _run_line(spec: JobSpec, run: RunPlan) -> str:
    if run.search is not None and spec.tuning is not None:
        tuning = spec.tuning
        shape = "" if tuning.shape is None else f", shape {tuning.shape:g}"
        return (f"job {spec.name}: search of {tuning.distribution} trials (mean {tuning.mean:g}{shape}) over "
                f"{tuning.size} candidates ({len(run.search.runs)} distinct runs, {run.records} records), "
                f"noise multiplier {run.noise_multiplier:.4g}: epsilon {run.epsilon:.4g} with tuning at delta "
                f"{run.delta:g} (rdp); without tuning, its costliest candidate ({run.steps} steps at "
                f"q={run.sampling_rate:.4g}) alone: epsilon {run.without_tuning:.4g}")
    return (f"job {spec.name}: {run.steps} steps at q={run.sampling_rate:.4g} ({run.records} records), "
            f"noise multiplier {run.noise_multiplier:.4g}: epsilon {run.epsilon:.4g} at delta {run.delta:g} "
            f"({run.accountant})")


def _dataset_lines(d: DatasetBudget) -> Sequence[str]:
    head = f"{d.source}: dataset {d.dataset_id} ({d.records} records): cap epsilon {d.cap:g} at delta {d.delta:g}"
    if d.spent is None or d.with_job is None or d.remaining is None:
        return [head, f"  ledger {d.ledger} not read from this host: spent budget and more jobs unknown"]
    if d.more_jobs == 0:
        fit = "  this job does not fit under the cap"
    elif d.more_jobs == 1 and not d.more_jobs_capped:
        fit = "  1 job like this one still fits under the cap: this one"
    else:
        more = f"more than {d.more_jobs}" if d.more_jobs_capped else str(d.more_jobs)
        fit = f"  {more} jobs like this one still fit under the cap (this one included)"
    return [head, f"  spent {d.spent:.4g}, remaining {d.remaining:.4g}; with this job the ledger composes to "
                  f"{d.with_job:.4g}", fit]
