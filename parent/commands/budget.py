"""`hermetic budget show`: what a dataset's budget ledger has spent, verified (`parent.budget`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from enclave.privacy.accountants import NAMES as ACCOUNTANTS
from enclave.privacy.accountants import PRIMARY
from parent.commands.kms_args import DEFAULT_REGION, region
from parent.commands.local_args import add_local_argument, local_state


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "budget",
        help="a dataset's privacy budget: cap, spent and remaining epsilon, from its ledger",
        description=(
            "Read a dataset's budget ledger (the location sealed into its encryption context), verify "
            "every entry with the context's ledger public key, and recompute the epsilon every job on it "
            "has reserved. Exit 1 when the ledger does not verify (an entry was deleted or rewritten)."
        ),
    )
    sub = parser.add_subparsers(dest="budget_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="cap, delta, spent and remaining epsilon, and every entry")
    show.add_argument("target", metavar="DATASET|SEALED",
                      help="a sealed file (path or s3://bucket/key), or under --local a dataset id sealed there")
    add_local_argument(show, "data-owner")
    add_s3_arguments(show)
    show.add_argument("--accountant", choices=ACCOUNTANTS, default=PRIMARY,
                      help=f"compose the entries under this accountant (default {PRIMARY})")
    show.add_argument("--json", action="store_true",
                      help='print {"max_epsilon", "delta", "spent_epsilon", "remaining_epsilon", "entries", '
                           '"valid", ...}')
    show.set_defaults(func=_show)


def add_s3_arguments(parser: argparse.ArgumentParser) -> None:
    """--region and --s3-endpoint-url, for s3:// sealed files and ledgers read with `s3_client`."""
    parser.add_argument("--region", default=None,
                        help=f"AWS region for S3 (default: $AWS_REGION, $AWS_DEFAULT_REGION or {DEFAULT_REGION})")
    parser.add_argument("--s3-endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint for s3:// sealed files and ledgers (default: AWS's)")


def s3_client(args: argparse.Namespace) -> Any:
    """An S3 client with the caller's usual credentials, built on first use (local targets need none)
    and shared by the sealed file and the ledger."""
    cached = getattr(args, "_s3_client", None)
    if cached is not None:
        return cached
    import boto3  # imported per call: `hermetic --help` stays fast

    kwargs: dict[str, Any] = {"region_name": region(args)}
    if args.s3_endpoint_url:
        kwargs["endpoint_url"] = args.s3_endpoint_url
    try:
        args._s3_client = boto3.session.Session().client("s3", **kwargs)
    except ValueError as err:  # botocore rejects malformed endpoint URLs this way
        raise ConfigError(f"bad S3 endpoint {args.s3_endpoint_url!r}: {err}") from None
    return args._s3_client


def _context(args: argparse.Namespace) -> dict[str, str]:
    target: str = args.target
    if target.startswith("s3://") or Path(target).is_file():
        from enclave.sealed.stream import read_header
        from parent.sources import open_source

        with open_source(target, s3_client=s3_client(args) if target.startswith("s3://") else None) as source:
            header = read_header(source)
        return dict(header.encryption_context)
    if args.local is None:
        raise ConfigError(f"{target!r} is no sealed file (a dataset id needs --local, for the local appliance)")
    from parent.budget import context_from_file

    path = local_state(args, running=()).dataset_context_file(target)
    if not path.is_file():
        raise ConfigError(f"no dataset {target!r} was sealed with the local appliance ({path} is missing)")
    return context_from_file(path)


def _show(args: argparse.Namespace) -> int:
    from enclave.ledger.location import S3_SCHEME
    from enclave.sealed.format import LEDGER_CONTEXT_KEY
    from parent.budget import budget_report

    context = _context(args)
    s3 = s3_client(args) if context[LEDGER_CONTEXT_KEY].startswith(S3_SCHEME) else None
    report = budget_report(context, accountant=args.accountant, s3_client=s3)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
        return 0 if report.valid else 1
    print(f"dataset {report.dataset_id}: ledger {report.ledger}")
    print(f"  cap        epsilon {report.max_epsilon:g} at delta {report.delta:g}")
    if not report.valid:
        print(f"  ledger does NOT verify: {report.problem}")
        return 1
    spent, remaining = report.spent_epsilon, report.remaining_epsilon
    assert spent is not None and remaining is not None
    print(f"  spent      epsilon {spent:.4f} ({report.accountant}, {len(report.entries)} entries)")
    print(f"  remaining  epsilon {remaining:.4f}{'  (exhausted)' if report.exhausted else ''}")
    if report.entries and not report.exhausted:
        # Users read "remaining" as a balance; the admission rule is composition, which is sub-additive.
        print("             (a next job fits while every entry and it compose to at most the cap, so its own "
              "epsilon may exceed this; `hermetic job check` computes it)")
    for entry in report.entries:
        print(_entry_line(entry))
    if report.note:
        print(f"  note: {report.note}")
    for ignored in report.ignored:
        print(f"  slot {ignored['slot']:>4}  ignored: {ignored['reason']}")
    print("  chain verifies")
    return 0


def _entry_line(entry: dict[str, Any]) -> str:
    segs = ", ".join(f"{s['steps']} steps at q={s['q']:.4g} sigma={s['sigma']:.4g}" for s in entry["segments"])
    if "search" in entry:
        search = entry["search"]
        segs = (f"search of {search['distribution']} trials (mean {search['mean']:g}) over "
                f"{len(search['runs'])} distinct runs at sigma={search['runs'][0][1]:.4g}")
    where = "" if entry["protected"] else " (unprotected)"
    return (f"  slot {entry['slot']:>4}  {entry['created_at']}  job {entry['job_id']}: {segs}; "
            f"dataset epsilon {entry['cumulative_epsilon']:.4f}{where}")
