"""`hermetic train --tensorboard/--mlflow`: the trackers see the job's messages, and end with it."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from enclave.audit_log import AuditChain, encode_log
from enclave.certificate.body import encode_body
from enclave.certificate.envelope import encode_envelope
from enclave.transport.messages import AuditLog, CertificateIssued, MetricRelease, TrainingProgress
from parent.cli import build_parser, main
from parent.tracking.base import DEFAULT_MLFLOW_URI
from tests.support.certificates import make_body
from tests.support.specs import mlp_spec
from tests.support.trackers import read_event_scalars

mlflow = pytest.importorskip("mlflow")

BODY = make_body(steps=2, ledger=[{"q": 0.01, "sigma": 1.1, "steps": 2}])


def _audit_log() -> bytes:
    chain = AuditChain("job-tracked", b"\x03" * 16, lambda: datetime(2025, 1, 1, tzinfo=UTC))
    chain.close(model_sha256="m", checkpoint_sha256="c", steps=2)
    return encode_log(chain.records)


@pytest.fixture()
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`hermetic train` up to the enclave: the appliance and the job itself are stand-ins."""
    import parent.commands.train as train
    import parent.proxy.job

    spec = tmp_path / "job.toml"
    spec.write_text(mlp_spec(key_id="alias/hermetic-model-owner", name="t", steps=2, batch=10))
    sealed = tmp_path / "d.sealed"
    sealed.write_bytes(b"x")
    state = SimpleNamespace(
        credentials=lambda role: SimpleNamespace(access_key_id="AKIA", secret_access_key="s"),
        region="us-east-1", kms_endpoint="http://127.0.0.1:1", kms_target=lambda: "127.0.0.1:1",
        enclave=f"unix://{tmp_path / 'e.sock'}", kms_relay=f"unix://{tmp_path / 'k.sock'}",
    )
    ending = {"status": "ok"}

    def run_job(*, job_id: str, on_message: Any, **_: Any) -> Any:
        for msg in (TrainingProgress(step=0, total_steps=2, epsilon=0.0),
                    MetricRelease(name="accuracy/holdout", value=0.5, kind="public_eval", step=2),
                    TrainingProgress(step=2, total_steps=2, epsilon=0.25),
                    CertificateIssued(data=encode_envelope(encode_body(BODY), b"attestation")),
                    AuditLog(data=_audit_log())):
            on_message(msg)
        return SimpleNamespace(status=ending["status"], job_id=job_id, detail="2 steps", datasets=(), audit_events=())

    monkeypatch.setattr(train, "local_state", lambda *a, **k: state)
    monkeypatch.setattr(train, "_check_job", lambda *a: None)
    monkeypatch.setattr(parent.proxy.job, "run_job", run_job)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # teardown restores its absence
    argv = ["train", str(spec), "--local", str(tmp_path), "--dataset", f"d={sealed}", "--out", str(tmp_path / "out"),
            "--job-id", "job-tracked", "--json"]
    return {"argv": argv, "ending": ending}


def test_a_job_is_charted_and_logged_as_it_ran(job: dict[str, Any], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mlruns"
    assert main([*job["argv"], "--tensorboard", str(tmp_path / "tb"), "--mlflow", str(store)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensorboard"] == str(tmp_path / "tb")
    # The audit log is written beside the certificate, and the report names it.
    assert report["audit_log"] == str(tmp_path / "out" / "audit-log.cbor")
    assert (tmp_path / "out" / "audit-log.jsonl").is_file()
    charted = read_event_scalars(tmp_path / "tb")
    # Throughput needs the clock to move between two progress messages; here they come at once.
    assert {"accuracy/holdout", "privacy/epsilon"} <= set(charted) <= {
        "accuracy/holdout", "privacy/epsilon", "throughput/steps_per_second"}
    assert charted["accuracy/holdout"] == [(2, 0.5)]
    assert [step for step, _ in charted["privacy/epsilon"]] == [0, 2, 2]  # progress, progress, certificate

    client = mlflow.MlflowClient(tracking_uri=str(store))
    run = client.get_run(report["mlflow_run"])
    assert run.info.run_name == "job-tracked" and run.info.status == "FINISHED"
    assert set(run.data.metrics) == set(charted)
    assert run.data.params["privacy.steps"] == "2"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["audit-log.cbor", "certificate.cbor"]


def test_a_failed_job_ends_its_mlflow_run_failed_and_still_flushes_its_events(
        job: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job["ending"]["status"] = "error"
    store = tmp_path / "mlruns"
    assert main([*job["argv"], "--tensorboard", str(tmp_path / "tb"), "--mlflow", str(store)]) == 1
    report = json.loads(capsys.readouterr().out)
    run = mlflow.MlflowClient(tracking_uri=str(store)).get_run(report["mlflow_run"])
    assert run.info.status == "FAILED"
    assert "accuracy/holdout" in read_event_scalars(tmp_path / "tb")


def test_without_trackers_the_report_says_so(job: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(job["argv"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensorboard"] is None and report["mlflow_run"] is None


def test_a_bare_mlflow_flag_means_the_local_file_store(tmp_path: Path) -> None:
    base = ["train", "job.toml", "--local", "--dataset", "d=x", "--out", "o"]
    assert build_parser().parse_args([*base, "--mlflow"]).mlflow == DEFAULT_MLFLOW_URI == "./mlruns"
    assert build_parser().parse_args([*base, "--mlflow", "http://mlflow:5000"]).mlflow == "http://mlflow:5000"
    assert build_parser().parse_args(base).mlflow is None


def test_parent_run_takes_the_same_trackers(job: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import parent.proxy.job

    monkeypatch.setattr(parent.proxy.job, "credentials_from_environment", lambda *a: None)
    monkeypatch.setattr(parent.proxy.job, "environment_refresher", lambda *a: None)
    spec, sealed = job["argv"][1], job["argv"][5]
    store = tmp_path / "mlruns"
    argv = ["parent", "run", "--enclave", f"unix://{tmp_path / 'e.sock'}", "--kms-relay", f"unix://{tmp_path / 'k'}",
            "--kms-target", "127.0.0.1:1", "--dataset", sealed, "--spec", spec, "--out", str(tmp_path / "run"),
            "--job-id", "job-parent", "--tensorboard", str(tmp_path / "tb"), "--mlflow", str(store), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensorboard"] == str(tmp_path / "tb")
    assert read_event_scalars(tmp_path / "tb")["accuracy/holdout"] == [(2, 0.5)]
    run = mlflow.MlflowClient(tracking_uri=str(store)).get_run(report["mlflow_run"])
    assert run.info.run_name == "job-parent" and run.info.status == "FINISHED"
    assert run.data.params["privacy.steps"] == "2"
