"""`hermetic train`: the parent's side of one training job, against the local appliance.

It runs the `hermetic parent run` code path (`parent.proxy.job.run_job`: the KMS relay,
the session, the dataset streams, the artefact sink) as the appliance's parent role,
with the enclave's addresses, the KMS endpoint and the role's credentials taken from
the state `hermetic local up` wrote. `hermetic parent run` stays the production form,
with every address and the instance's own credentials given explicitly.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError, HermeticError, RuntimeFailure
from parent.appliance import ENCLAVE_SERVICE, KMS_SERVICE, PARENT
from parent.commands.local_args import add_local_argument, local_state
from parent.commands.tracking_args import add_tracker_arguments, tracking


class JobFailed(RuntimeFailure):
    """The enclave ended the job without success."""

    report: dict[str, Any] | None = None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "train",
        help="run a training job in the local appliance's enclave (the parent's side)",
        description=(
            "Stream sealed datasets to the enclave, relay its KMS traffic and collect what it releases: "
            "progress, public metrics, sealed checkpoints, the privacy certificate and the session's audit log, "
            "written to --out (certificate.cbor, audit-log.cbor, audit-log.jsonl, checkpoints/, model.ckpt.sealed, "
            "released.json). Runs against the local "
            "appliance (--local); on a Nitro host the same job is `hermetic parent run`."
        ),
    )
    p.add_argument("spec", metavar="JOB.toml", type=Path, help="training job spec")
    add_local_argument(p, "parent-role")
    p.add_argument("--dataset", action="append", required=True, metavar="ID=FILE",
                   help="sealed dataset: its dataset id = the sealed file (repeatable)")
    p.add_argument("--public", action="append", default=[], metavar="NAME=FILE",
                   help="public evaluation dataset, sent in the clear (hashed into the certificate)")
    p.add_argument("--resume", type=Path, metavar="CKPT",
                   help="sealed checkpoint to resume from (its job id is reused)")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="initial weights (safetensors) the spec's model.weights_sha256 names, streamed first")
    p.add_argument("--job-id", default=None, help="job id (default: random, or the resumed checkpoint's)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where released artefacts are written")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    p.add_argument("--events", action="store_true",
                   help="print one JSON line per progress and metric event, then the outcome (for launchers)")
    add_tracker_arguments(p)
    p.set_defaults(func=run, _parser=p)


def _pairs(specs: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{option} expects NAME=FILE, got {spec!r}")
        out.append((name, path))
    return out


def _event(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def run(args: argparse.Namespace) -> int:
    if args.local is None:
        args._parser.error("give --local [DIR] (the appliance of `hermetic local up`); "
                           "on a Nitro host run the job with `hermetic parent run`")
    try:
        report = _train(args)
    except HermeticError as err:
        if args.json or args.events:
            failed = {**(getattr(err, "report", None) or {"status": "error"}), "error": str(err),
                      "error_type": type(err).__name__, "code": err.code}
            remote = getattr(err, "remote_code", None)
            if remote is not None:
                # The enclave's own wire code ("budget", "runtime", ...), beside the CLI's family.
                failed["enclave_code"] = remote
            if args.events:
                _event("result", **failed)
            else:
                print(json.dumps(failed))
        raise
    if args.events:
        _event("result", **report)
    elif args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from enclave.training.spec import JobSpec
    from enclave.transport.address import parse_address
    from enclave.transport.messages import (
        PUBLIC_PREFIX,
        RESUME_STREAM,
        Credentials,
        Message,
        MetricRelease,
        TrainingJob,
        TrainingProgress,
    )
    from parent.proxy.artifacts import ArtifactSink
    from parent.proxy.job import RelayTarget, run_job
    from parent.proxy.session import DatasetInput
    from parent.public_data import load_public_dataset
    from parent.sources import BytesSource

    try:
        spec_text = args.spec.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read job spec {args.spec}: {err}") from None
    spec = JobSpec.from_toml(spec_text)  # a malformed spec fails here, before anything is sent
    if spec.tuning is not None and args.resume is not None:
        raise ConfigError("a tuning job cannot be resumed (--resume): run the search again as a new job")
    from parent.job_check import in_spec_order, sealed_public_schema, weights_streams

    # Streamed in the spec's order, as the enclave requires, whatever the order of --dataset.
    datasets = in_spec_order(_pairs(args.dataset, "--dataset"), spec.data.train)
    for _, path in datasets:
        if not Path(path).is_file():
            raise ConfigError(f"no sealed dataset at {path}")
    weights = weights_streams(spec, args.weights)
    state = local_state(args, running=(KMS_SERVICE, ENCLAVE_SERVICE))
    _check_job(args, datasets)
    job_id = args.job_id or _resumed_job_id(args.resume) or f"job-{uuid.uuid4().hex[:12]}"

    # The weights first: the enclave checks them against the model before any sealed header asks KMS.
    streams: list[tuple[str, DatasetInput]] = [*weights, *datasets]
    public_files = _pairs(args.public, "--public")
    # A CSV or Parquet public file is encoded by the sealed data's public schema (the job check
    # made every dataset of the job share it).
    schema = sealed_public_schema(datasets[0][1]) if public_files and datasets else None
    for name, path in public_files:
        public = load_public_dataset(name, Path(path), schema=schema)
        streams.append((PUBLIC_PREFIX + name, BytesSource(public.ipc, f"public:{path}")))
    if args.resume is not None:
        streams.append((RESUME_STREAM, str(args.resume)))

    parent = state.credentials(PARENT)
    credentials = Credentials(
        access_key_id=parent.access_key_id, secret_access_key=parent.secret_access_key, session_token=None,
        region=state.region, kms_endpoint=state.kms_endpoint, expiration_ms=None,
    )
    target = RelayTarget.parse(state.kms_target())
    show = sys.stderr.isatty() and not args.events
    bar: Any = None
    last: dict[str, Any] = {}

    def on_progress(msg: TrainingProgress) -> None:
        nonlocal bar
        last.update(step=msg.step, total=msg.total_steps, epsilon=msg.epsilon)
        if args.events:
            _event("progress", step=msg.step, total=msg.total_steps, epsilon=msg.epsilon)
        if bar is None:
            bar = tqdm(desc="DP-SGD", total=msg.total_steps, unit="step", file=sys.stderr, disable=not show)
        bar.n = msg.step
        bar.set_postfix_str(f"epsilon spent {msg.epsilon:.3f}", refresh=False)
        bar.update(0)

    def on_metric(msg: MetricRelease) -> None:
        if args.events:
            _event("metric", name=msg.name, value=msg.value, kind=msg.kind, step=msg.step)

    out_dir = args.out.resolve()
    sink = ArtifactSink(out_dir, on_progress=on_progress, on_metric=on_metric)
    with tracking(args, spec, job_id, sink) as tracked:

        def on_message(msg: Message) -> None:
            sink(msg)
            tracked.feed(msg)

        try:
            outcome = run_job(
                enclave=parse_address(state.enclave),
                relay_listen=parse_address(state.kms_relay),
                kms_target=target,
                allow_list=[target],
                credentials=credentials,
                job_id=job_id,
                datasets=streams,
                extra=[TrainingJob(spec_toml=spec_text)],
                on_message=on_message,
            )
            tracked.ok = outcome.status == "ok"
        finally:
            if bar is not None:
                bar.close()
    sink.write_summary()
    summary = sink.summary()
    report: dict[str, Any] = {
        "status": outcome.status,
        "job_id": outcome.job_id,
        "detail": outcome.detail,
        "epsilon": last.get("epsilon"),
        "steps": last.get("step"),
        "delta": spec.privacy.delta,
        "certificate": summary["certificate"],
        "audit_log": summary["audit_log"],
        "final_checkpoint": summary["final_checkpoint"],
        "checkpoints": summary["checkpoints"],
        "metrics": summary["metrics"],
        "released": str(out_dir / "released.json"),
        **tracked.report(),
        "out": str(out_dir),
        "datasets": [{"dataset_id": s.dataset_id, "bytes": s.size, "sealed_sha256": s.sha256.hex()}
                     for s in outcome.datasets],
    }
    if outcome.status != "ok":
        failed = JobFailed(f"job {outcome.job_id} ended with status {outcome.status}: {outcome.detail}")
        failed.report = report
        raise failed
    return report


def _check_job(args: argparse.Namespace, datasets: list[tuple[str, str]]) -> None:
    """The checks of `hermetic job check`, before anything is sent to the enclave."""
    from enclave.training.plan import JobDoesNotFit, describe
    from parent.job_check import check_job

    checked = check_job(args.spec, [path for _, path in datasets], weights_path=args.weights)
    if not checked.ok:
        raise JobDoesNotFit(f"the job does not fit its data: {describe(checked.problems)}", checked.problems)


def _resumed_job_id(checkpoint: Path | None) -> str | None:
    if checkpoint is None:
        return None
    from parent.checkpoints import inspect_checkpoint

    return inspect_checkpoint(checkpoint).job_id


def _print_summary(report: dict[str, Any]) -> None:
    print(f"job {report['job_id']}: {report['status']} ({report['detail']})")
    if report["epsilon"] is not None:
        print(f"  epsilon spent  {report['epsilon']:.4f} at delta {report['delta']:g} over {report['steps']} steps")
    for metric in report["metrics"]:
        print(f"  released       {metric['name']} = {metric['value']:.4f} ({metric['kind']}, step {metric['step']})")
    print(f"  certificate    {report['certificate']}")
    print(f"  audit log      {report['audit_log']} (hermetic audit-log verify)")
    print(f"  final model    {report['final_checkpoint']} (sealed for the model owner)")
    print(f"  released.json  {report['released']}")
    if report["tensorboard"] is not None:
        print(f"  tensorboard    {report['tensorboard']} (tensorboard --logdir {report['tensorboard']})")
    if report["mlflow_run"] is not None:
        print(f"  mlflow run     {report['mlflow_run']}")
