"""`hermetic parent run`: the parent's side of one job (KMS relay + dataset streaming);
`hermetic parent serve`: the long-running KMS relay."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.errors import ConfigError, HermeticError
from enclave.transport.address import parse_address
from parent.commands.output import add_json_flag
from parent.commands.tracking_args import add_tracker_arguments, tracking

if TYPE_CHECKING:
    from enclave.training.spec import JobSpec


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    run.add_argument("--spec", type=Path, required=True, help="training job spec (TOML)")
    run.add_argument("--public", action="append", default=[], metavar="NAME=PATH",
                     help="public evaluation dataset to send in the clear (hashed into the certificate)")
    run.add_argument("--resume", type=Path, help="sealed checkpoint to resume from (same job id and spec)")
    run.add_argument("--weights", type=Path, metavar="FILE",
                     help="initial weights (safetensors) the spec's model.weights_sha256 names, streamed first")
    run.add_argument("--out", type=Path, default=Path("out/job"), help="where released artefacts are written")
    run.add_argument("--job-id", default=None, help="job id (default: random; must match when resuming)")
    run.add_argument("--region", default="us-east-1")
    run.add_argument("--kms-endpoint", default=None,
                     help="KMS endpoint the enclave is told about (default: regional AWS endpoint)")
    run.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (for s3:// datasets)")
    add_tracker_arguments(run)
    add_json_flag(run, help="print the outcome as one JSON object")
    run.add_argument("--events", action="store_true",
                     help="print one JSON line per progress/metric event on stdout (for launchers)")
    # For audits of the parent itself: every byte it sent or received, raw.
    run.add_argument("--tap", type=Path, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)

    serve = sub.add_parser(
        "serve",
        help="run the KMS relay for the enclave until SIGTERM (the long-running parent process)",
        description=(
            "Relay the enclave's KMS connections (the vsock-proxy role) to one allow-listed "
            "target until SIGTERM or SIGINT, logging one JSON object per line. Jobs are run "
            "with `hermetic parent run` (see eif/README.md)."
        ),
    )
    serve.add_argument("--kms-relay", type=parse_address, default=parse_address("vsock://3:8000"),
                       help="address the enclave's forwarder dials (default vsock://3:8000)")
    serve.add_argument("--region", default="us-east-1", help="AWS region (default target kms.REGION.amazonaws.com:443)")
    serve.add_argument("--kms-target", default=None, help="HOST:PORT to relay to (default: the regional KMS endpoint)")
    serve.add_argument("--allow", action="append", default=[], metavar="HOST:PORT",
                       help="allow-listed relay target (repeatable; default: the KMS target)")
    serve.add_argument("--allowlist", type=Path, metavar="FILE",
                       help="file of allow-listed HOST:PORT, one a line ('#' comments)")
    serve.add_argument("--pid-file", type=Path, help="write this process's PID here while serving")
    serve.add_argument("--log-file", type=Path, help="append JSON log lines here (default: stderr)")
    serve.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS",
                       help="log relay statistics this often (0: never; default 60)")
    serve.set_defaults(func=_serve)




serve_log = logging.getLogger("hermetic.parent.serve")


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


def _parsed_spec(spec_toml: str) -> JobSpec | None:
    """The spec, or None if it does not parse: the enclave refuses it with the reason."""
    from enclave.training.spec import JobSpec

    try:
        return JobSpec.from_toml(spec_toml)
    except HermeticError:
        return None


def _spec_order(datasets: list[tuple[str, str]], spec: JobSpec | None) -> list[tuple[str, str]]:
    """The streams in the order the spec's data.train lists them; as given if the spec did not parse."""
    from parent.job_check import in_spec_order

    return datasets if spec is None else in_spec_order(datasets, spec.data.train)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None


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
    from parent.job_check import sealed_public_schema, weights_streams
    from parent.proxy.artifacts import ArtifactSink
    from parent.proxy.job import RelayTarget, credentials_from_environment, environment_refresher, run_job
    from parent.proxy.session import DatasetInput
    from parent.public_data import load_public_dataset
    from parent.sources import BytesSource

    # Inputs first: a wrong path is reported before any AWS credential lookup.
    spec_toml = _read_text(args.spec, "job spec")
    parsed = _parsed_spec(spec_toml)
    datasets = _spec_order(_datasets(args.dataset), parsed)
    weights = weights_streams(parsed, args.weights)
    if args.resume is not None and args.job_id is None:
        raise ConfigError("--resume needs the --job-id of the run that wrote the checkpoint")
    target = RelayTarget.parse(args.kms_target)
    allow = [RelayTarget.parse(a) for a in args.allow] or [target]
    kms_endpoint = args.kms_endpoint or f"https://kms.{args.region}.amazonaws.com"
    creds = credentials_from_environment(args.region, kms_endpoint)
    tap_file = args.tap.open("wb") if args.tap else None

    def tap(direction: str, data: bytes) -> None:
        assert tap_file is not None
        tap_file.write(data)

    s3 = None
    if any(uri.startswith("s3://") for _, uri in datasets):
        import boto3

        s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.s3_endpoint_url)
    extra: list[Message] = [TrainingJob(spec_toml=spec_toml)]
    # The weights first: the enclave checks them against the model before any sealed header asks KMS.
    streams: list[tuple[str, DatasetInput]] = [*weights, *datasets]
    # A CSV or Parquet public file is encoded by the sealed data's public schema.
    schema = sealed_public_schema(datasets[0][1], s3) if args.public and datasets else None
    for spec in args.public:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--public expects NAME=PATH, got {spec!r}")
        public = load_public_dataset(name, Path(path), schema=schema)
        streams.append((PUBLIC_PREFIX + name, BytesSource(public.ipc, f"public:{path}")))
    if args.resume is not None:
        streams.append((RESUME_STREAM, str(args.resume)))

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
    job_id = args.job_id or f"job-{uuid.uuid4().hex[:12]}"
    with tracking(args, parsed, job_id, sink) as tracked:

        def on_message(msg: Message) -> None:
            sink(msg)
            tracked.feed(msg)

        try:
            outcome = run_job(
                enclave=args.enclave,
                relay_listen=args.kms_relay,
                kms_target=target,
                allow_list=allow,
                credentials=creds,
                job_id=job_id,
                datasets=streams,
                s3_client=s3,
                progress=progress,
                tap=tap if tap_file is not None else None,
                extra=extra,
                on_message=on_message,
                refresher=environment_refresher(args.region, kms_endpoint),
            )
            tracked.ok = outcome.status == "ok"
        finally:
            if tap_file is not None:
                tap_file.close()
            for bar in bars.values():
                bar.close()
    sink.write_summary()
    report: dict[str, Any] = {
        "job_id": outcome.job_id,
        "status": outcome.status,
        "detail": outcome.detail,
        "datasets": [
            {"dataset_id": s.dataset_id, "bytes": s.size, "sealed_sha256": s.sha256.hex()}
            for s in outcome.datasets
        ],
        "audit_events": [{"kind": e.kind, **dict(e.fields)} for e in outcome.audit_events],
        **sink.summary(),
        **tracked.report(),
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


# ---------------------------------------------------------------- parent serve


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, fields (from `extra={"fields": ...}`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "fields": dict(getattr(record, "fields", {}) or {}),
        }
        if record.exc_info:
            entry["fields"]["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def read_allowlist(path: Path) -> list[str]:
    """HOST:PORT entries, one a line; blank lines and '#' comments ignored."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read allow-list {path}: {err}") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def serve_until(relay: Any, stop: threading.Event, stats_interval: float) -> None:
    """Run `relay` until `stop` is set, logging its statistics every `stats_interval` seconds."""
    started = time.monotonic()
    relay.start()
    serve_log.info("serving", extra={"fields": {"relay": str(relay.address), "target": str(relay.target)}})
    try:
        while not stop.wait(stats_interval if stats_interval > 0 else None):
            serve_log.info("relay stats", extra={"fields": {
                "active_connections": relay.active_connections,
                "uptime_s": round(time.monotonic() - started, 1),
            }})
    finally:
        relay.stop()
        serve_log.info("stopped", extra={"fields": {"uptime_s": round(time.monotonic() - started, 1)}})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_pid_file(path: Path) -> None:
    from parent.storage import write_atomic

    try:
        old = int(path.read_text("ascii").strip())
    except (OSError, ValueError):
        old = None
    if old is not None and old != os.getpid() and _pid_alive(old):
        raise ConfigError(f"{path} names running process {old}: stop it first (make stop-enclave)")
    write_atomic(path, f"{os.getpid()}\n".encode())


def _release_pid_file(path: Path) -> None:
    try:
        if int(path.read_text("ascii").strip()) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _serve(args: argparse.Namespace) -> int:
    from parent.proxy.job import RelayTarget
    from parent.proxy.relay import KmsRelay

    handler: logging.Handler
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    level = logging.DEBUG if getattr(args, "verbose", 0) >= 2 else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)

    target = RelayTarget.parse(args.kms_target or f"kms.{args.region}.amazonaws.com:443")
    entries = list(args.allow) + (read_allowlist(args.allowlist) if args.allowlist else [])
    allow = [RelayTarget.parse(a) for a in entries] or [target]
    relay = KmsRelay(args.kms_relay, target.host, target.port, [(a.host, a.port) for a in allow])

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        del frame
        serve_log.info("signal received", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.pid_file:
        _claim_pid_file(args.pid_file)
    try:
        serve_until(relay, stop, args.stats_interval)
    except HermeticError as err:
        serve_log.error("relay failed", extra={"fields": {"error": str(err), "kind": type(err).__name__}})
        raise
    finally:
        if args.pid_file:
            _release_pid_file(args.pid_file)
    return 0
