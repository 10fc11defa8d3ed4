"""`hermetic job check`: validate a job offline, before anything runs (`parent.job_check`)."""
from __future__ import annotations

import argparse
import json

from enclave.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "job",
        help="check a training job before anything runs",
        description=(
            "Check a job spec offline, with no enclave and no key: the spec parses, its model is "
            "registered and, for each sealed file, the public schema in the header has the "
            "spec's feature and label columns in the types and shape the model takes, the dataset "
            "is the one data.train names, and the planned epsilon fits the dataset's budget. "
            "The enclave runs the same check before it asks KMS for a key."
        ),
    )
    sub = parser.add_subparsers(dest="job_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="list every problem that keeps a job from running on its data")
    check.add_argument("spec", metavar="JOB.toml", help="the training job spec")
    check.add_argument("--sealed", action="append", default=[], metavar="FILE",
                       help="a sealed dataset (path or s3://bucket/key) to check the job against; repeatable")
    check.add_argument("--weights", metavar="FILE",
                       help="the initial weights (safetensors) the spec's model.weights_sha256 names: their hash, "
                            "and their tensors against the model built for each sealed file")
    check.add_argument("--json", action="store_true",
                       help='print {"ok", "problems": [{"where", "message"}], "planned": {FILE: plan}, '
                            '"ledger": {FILE: {"spent_epsilon", "remaining_epsilon", "job_epsilon", '
                            '"dataset_epsilon_with_job", "max_epsilon"}}}')
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    # Imported here: the check loads the model registry (and torch); `hermetic --help` stays fast.
    from parent.job_check import check_job

    try:
        with open(args.spec, "rb"):
            pass
    except OSError as err:
        # An unreadable spec is an input error, not a problem of the job.
        raise ConfigError(f"cannot read job spec {args.spec}: {err.strerror}") from None
    result = check_job(args.spec, args.sealed, weights_path=args.weights)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return 0 if result.ok else 1
    for name, plan in result.planned.items():
        print(f"{name}: {plan.steps} steps at q={plan.sampling_rate:.4g}, sigma={plan.noise_multiplier:.4g}: "
              f"epsilon {plan.planned_epsilon:.4g} of {plan.max_epsilon:g} ({plan.accountant}, "
              f"delta {plan.delta:g} of {plan.budget_delta:g})")
        check = result.ledgers.get(name)
        if check is not None:
            # The cap bounds every job on the dataset composed, not the sum of their epsilons.
            print(f"{name}: ledger: spent epsilon {check.spent:.4g} of {check.max_epsilon:g} "
                  f"(remaining {check.remaining:.4g}); with this job every entry composes to "
                  f"{check.total:.4g} of {check.max_epsilon:g}")
    for problem in result.problems:
        print(f"problem: {problem.where}: {problem.message}")
    count = len(result.problems)
    print("job check: ok" if result.ok else f"job check: {count} problem{'s' if count > 1 else ''}")
    return 0 if result.ok else 1
