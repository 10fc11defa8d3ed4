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
    run.add_argument("--spec", type=Path, help="training job spec (TOML); without it the job only opens data")
    run.add_argument("--public", action="append", default=[], metavar="NAME=PATH",
                     help="public evaluation dataset to send in the clear (hashed into the certificate)")
    run.add_argument("--resume", type=Path, help="sealed checkpoint to resume from (same job id and spec)")
    run.add_argument("--out", type=Path, default=Path("out/job"), help="where released artefacts are written")
    run.add_argument("--job-id", default=None, help="job id (default: random; must match when resuming)")
    run.add_argument("--region", default="us-east-1")
    run.add_argument("--kms-endpoint", default=None,
                     help="KMS endpoint the enclave is told about (default: regional AWS endpoint)")
    run.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (for s3:// datasets)")
    run.add_argument("--json", action="store_true", help="print the outcome as JSON")
    run.add_argument("--events", action="store_true",
                     help="print one JSON line per progress/metric event on stdout (for launchers)")
    # For audits of the parent itself: every byte it sent or received, raw.
    run.add_argument("--tap", type=Path, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)


def _event(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


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

    from enclave.transport.messages import (
        PUBLIC_PREFIX,
        RESUME_STREAM,
        Message,
        MetricRelease,
        TrainingJob,
        TrainingProgress,
    )
    from parent.proxy.artifacts import ArtifactSink
    from parent.proxy.job import RelayTarget, credentials_from_environment, run_job
    from parent.proxy.session import DatasetInput
    from parent.public_data import load_public_dataset
    from parent.sources import BytesSource

    target = RelayTarget.parse(args.kms_target)
    allow = [RelayTarget.parse(a) for a in args.allow] or [target]
    kms_endpoint = args.kms_endpoint or f"https://kms.{args.region}.amazonaws.com"
    creds = credentials_from_environment(args.region, kms_endpoint)
    datasets = _datasets(args.dataset)
    tap_file = args.tap.open("wb") if args.tap else None

    def tap(direction: str, data: bytes) -> None:
        assert tap_file is not None
        tap_file.write(data)

    s3 = None
    if any(uri.startswith("s3://") for _, uri in datasets):
        import boto3

        s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.s3_endpoint_url)
    extra: list[Message] = []
    if args.spec is not None:
        extra.append(TrainingJob(spec_toml=args.spec.read_text("utf-8")))
    streams: list[tuple[str, DatasetInput]] = list(datasets)
    for spec in args.public:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--public expects NAME=PATH, got {spec!r}")
        public = load_public_dataset(name, Path(path))
        streams.append((PUBLIC_PREFIX + name, BytesSource(public.ipc, f"public:{path}")))
    if args.resume is not None:
        streams.append((RESUME_STREAM, str(args.resume)))
    if args.resume is not None and args.job_id is None:
        raise ConfigError("--resume needs the --job-id of the run that wrote the checkpoint")

    bars: dict[str, Any] = {}
    show = sys.stderr.isatty()

    def progress(dataset_id: str, n: int) -> None:
        bar = bars.get(dataset_id)
        if bar is None:
            bar = bars[dataset_id] = tqdm(
                desc=f"stream {dataset_id}", unit="B", unit_scale=True, file=sys.stderr,
                disable=not show, leave=False,
            )
        bar.update(n)

    def on_progress(msg: TrainingProgress) -> None:
        if args.events:
            _event("progress", step=msg.step, total=msg.total_steps, epsilon=msg.epsilon)
        bar = bars.get("train")
        if bar is None:
            bar = bars["train"] = tqdm(
                desc="DP-SGD", total=msg.total_steps, unit="step", file=sys.stderr, disable=not show
            )
        bar.n = msg.step
        bar.set_postfix_str(f"eps={msg.epsilon:.3f}")

    def on_metric(msg: MetricRelease) -> None:
        if args.events:
            _event("metric", name=msg.name, value=msg.value, kind=msg.kind, step=msg.step)

    sink = ArtifactSink(args.out, on_progress=on_progress, on_metric=on_metric)
    try:
        outcome = run_job(
            enclave=args.enclave,
            relay_listen=args.kms_relay,
            kms_target=target,
            allow_list=allow,
            credentials=creds,
            job_id=args.job_id or f"job-{uuid.uuid4().hex[:12]}",
            datasets=streams,
            s3_client=s3,
            progress=progress,
            tap=tap if tap_file is not None else None,
            extra=extra,
            on_message=sink,
        )
    finally:
        if tap_file is not None:
            tap_file.close()
        for bar in bars.values():
            bar.close()
    sink.write_summary()
    report = {
        "job_id": outcome.job_id,
        "status": outcome.status,
        "detail": outcome.detail,
        "datasets": [
            {"dataset_id": s.dataset_id, "bytes": s.size, "sealed_sha256": s.sha256.hex()}
            for s in outcome.datasets
        ],
        "audit_events": [{"kind": e.kind, **dict(e.fields)} for e in outcome.audit_events],
        **sink.summary(),
    }
    if args.events:
        _event("result", **report)
    elif args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"job {report['job_id']}: {report['status']} ({report['detail']})")
        for event in report["audit_events"]:
            fields = ", ".join(f"{k}={v}" for k, v in event.items() if k != "kind")
            print(f"  {event['kind']}: {fields}")
        for metric in report["metrics"]:
            print(f"  released {metric['name']} = {metric['value']:.4f} at step {metric['step']}")
        if report["certificate"]:
            print(f"  certificate: {report['certificate']}")
        if report["final_checkpoint"]:
            print(f"  final checkpoint: {report['final_checkpoint']}")
    return 0
