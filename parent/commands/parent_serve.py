"""`hermetic parent run`: the parent's side of one job (KMS relay + dataset streaming)."""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from enclave.transport.address import parse_address


def register(subparsers: argparse._SubParsersAction) -> None:  # noqa: SLF001
    parser = subparsers.add_parser("parent", help="the untrusted parent-instance side")
    sub = parser.add_subparsers(dest="parent_command", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="relay KMS traffic and stream sealed datasets for one job")
    run.add_argument("--enclave", type=parse_address, required=True,
                     help="enclave control address (vsock://CID:PORT, tcp://127.0.0.1:PORT, unix://PATH)")
    run.add_argument("--kms-relay", type=parse_address, required=True,
                     help="address the KMS relay listens on for the enclave")
    run.add_argument("--kms-target", required=True, help="HOST:PORT the relay forwards to (KMS)")
    run.add_argument("--allow", action="append", default=[],
                     help="allow-listed relay target HOST:PORT (repeatable; default: the KMS target)")
    run.add_argument("--dataset", action="append", required=True, metavar="ID=URI",
                     help="sealed dataset to stream: dataset id = local path or s3://bucket/key")
    run.add_argument("--job-id", default=None, help="job id (default: random)")
    run.add_argument("--region", default="us-east-1")
    run.add_argument("--kms-endpoint", default=None,
                     help="KMS endpoint the enclave is told about (default: regional AWS endpoint)")
    run.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (for s3:// datasets)")
    run.add_argument("--json", action="store_true", help="print the outcome as JSON")
    # For audits of the parent itself: every byte it sent or received, raw.
    run.add_argument("--tap", type=Path, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)


def _datasets(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        dataset_id, sep, uri = spec.partition("=")
        if not sep or not dataset_id or not uri:
            raise ConfigError(f"--dataset expects ID=URI, got {spec!r}")
        out.append((dataset_id, uri))
    return out


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from parent.proxy.job import RelayTarget, credentials_from_environment, run_job

    target = RelayTarget.parse(args.kms_target)
    allow = [RelayTarget.parse(a) for a in args.allow] or [target]
    kms_endpoint = args.kms_endpoint or f"https://kms.{args.region}.amazonaws.com"
    creds = credentials_from_environment(args.region, kms_endpoint)
    datasets = _datasets(args.dataset)
    s3 = None
    if any(uri.startswith("s3://") for _, uri in datasets):
        import boto3

        s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.s3_endpoint_url)
    bars: dict[str, Any] = {}

    def progress(dataset_id: str, n: int) -> None:
        bar = bars.get(dataset_id)
        if bar is None:
            bar = bars[dataset_id] = tqdm(
                desc=f"stream {dataset_id}", unit="B", unit_scale=True, file=sys.stderr,
                disable=not sys.stderr.isatty(), leave=False,
            )
        bar.update(n)

    tap_file = args.tap.open("wb") if args.tap else None

    def tap(direction: str, data: bytes) -> None:
        assert tap_file is not None
        tap_file.write(data)

    try:
        outcome = run_job(
            enclave=args.enclave,
            relay_listen=args.kms_relay,
            kms_target=target,
            allow_list=allow,
            credentials=creds,
            job_id=args.job_id or f"job-{uuid.uuid4().hex[:12]}",
            datasets=datasets,
            s3_client=s3,
            progress=progress,
            tap=tap if tap_file is not None else None,
        )
    finally:
        if tap_file is not None:
            tap_file.close()
        for bar in bars.values():
            bar.close()
    report = {
        "job_id": outcome.job_id,
        "status": outcome.status,
        "detail": outcome.detail,
        "datasets": [
            {"dataset_id": s.dataset_id, "bytes": s.size, "sealed_sha256": s.sha256.hex()}
            for s in outcome.datasets
        ],
        "audit_events": [{"kind": e.kind, **dict(e.fields)} for e in outcome.audit_events],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"job {report['job_id']}: {report['status']} ({report['detail']})")
        for event in report["audit_events"]:
            fields = ", ".join(f"{k}={v}" for k, v in event.items() if k != "kind")
            print(f"  {event['kind']}: {fields}")
    return 0
