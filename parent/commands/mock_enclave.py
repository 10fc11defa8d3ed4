"""`hermetic mock-enclave`: the enclave runtime as a local process, with a mock NSM."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from enclave.transport.address import parse_address
from parent.commands.output import add_json_flag


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("mock-enclave", help="run or measure the local mock enclave")
    sub = parser.add_subparsers(dest="mock_command", metavar="ACTION")
    sub.required = True

    run = sub.add_parser("run", help="serve parent sessions with a MockNsm")
    run.add_argument("--state", type=Path, required=True, help="local state folder (mock CA)")
    run.add_argument("--listen", type=parse_address, required=True, help="control address")
    run.add_argument("--kms-relay", type=parse_address, required=True, help="parent KMS relay address")
    run.add_argument("--kms-url", default="http://127.0.0.1:{port}", help="KMS URL inside the enclave")
    run.add_argument("--measure-dir", type=Path, help="measure this copy of the enclave package")
    run.add_argument("--sessions", type=int, help="exit after this many sessions")
    run.add_argument("--ledger", type=Path, default=None, metavar="DIR",
                     help="the budget ledgers' directory (default STATE/ledger); only local:DIR ledgers are served")
    add_json_flag(run, help='announce readiness as {"event": "ready", "address": ADDR} instead of "ready ADDR"')
    run.set_defaults(func=_run)

    measure = sub.add_parser("measure", help="print the mock enclave's PCRs")
    measure.add_argument("--measure-dir", type=Path, help="measure this copy of the enclave package")
    measure.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    add_json_flag(measure, help="report failures as a JSON object too (the measurements are always JSON)")
    measure.set_defaults(func=_measure)


def _run(args: argparse.Namespace) -> int:
    from parent.local.mock_enclave import build_runtime

    runtime = build_runtime(
        state_dir=args.state,
        control=args.listen,
        kms_relay=args.kms_relay,
        kms_url=args.kms_url,
        measure_dir=args.measure_dir,
        ledger_dir=args.ledger,
    )
    # A launcher reads this line to know the enclave is listening.
    address = str(runtime.control_address)
    print(json.dumps({"event": "ready", "address": address}) if args.json else f"ready {address}", flush=True)
    runtime.serve(sessions=args.sessions)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from parent.local.measure import measure_enclave_package
    from parent.local.mock_enclave import measurements_json
    from parent.storage import write_atomic

    doc = {"Measurements": measurements_json(measure_enclave_package(args.measure_dir))}
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        write_atomic(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return 0
