"""The MLflow tracker against a temporary file store (mlflow is a dev pin), and without mlflow."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from enclave.training.spec import JobSpec
from parent.tracking.mlflow_runs import MISSING, MlflowTracker, spec_params
from tests.support.specs import mlp_spec

mlflow = pytest.importorskip("mlflow")

SPEC = JobSpec.from_toml(mlp_spec(key_id="alias/hermetic-model-owner", name="tracked", steps=30, batch=100))


@pytest.fixture(autouse=True)
def _file_store_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tracker sets it for a file store: setenv first so that teardown restores the
    # variable's absence and no later test inherits the tracker's opt-in.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def test_a_run_named_after_the_job_holds_the_metrics_params_and_certificate(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    certificate = tmp_path / "certificate.cbor"
    certificate.write_bytes(b"\xa3cbor")
    tracker = MlflowTracker(str(store), run_name="job-abc", params=spec_params(SPEC))
    tracker.scalar("accuracy/holdout", 0.5, 10)
    tracker.scalar("accuracy/holdout", 0.625, 20)
    tracker.scalar("privacy/epsilon", 1.25, 20)
    tracker.artifacts.append(certificate)
    tracker.close()

    client = mlflow.MlflowClient(tracking_uri=str(store))
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "job-abc" and run.info.status == "FINISHED"
    history = client.get_metric_history(tracker.run_id, "accuracy/holdout")
    assert [(m.step, m.value) for m in history] == [(10, 0.5), (20, 0.625)]
    assert set(run.data.metrics) == {"accuracy/holdout", "privacy/epsilon"}
    assert run.data.params["optimizer.lr"] == str(SPEC.optimizer.lr)
    assert run.data.params["privacy.noise_multiplier"] == str(SPEC.privacy.noise_multiplier)
    assert "privacy.target_epsilon" not in run.data.params  # unset settings are left out
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["certificate.cbor"]


def test_a_failed_job_ends_its_run_failed(tmp_path: Path) -> None:
    tracker = MlflowTracker(str(tmp_path / "mlruns"), run_name="job-x", params={})
    tracker.status = "FAILED"
    tracker.close()
    assert mlflow.MlflowClient(tracking_uri=str(tmp_path / "mlruns")).get_run(tracker.run_id).info.status == "FAILED"


def test_without_mlflow_the_flag_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError) as info:
        MlflowTracker("./mlruns", run_name="job-x", params={})
    assert str(info.value) == MISSING == "--mlflow needs the mlflow package (pip install mlflow)"


def test_a_store_mlflow_refuses_fails_before_the_job(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot start an MLflow run"):
        MlflowTracker(str(tmp_path / "mlruns"), run_name="job-x", params={}, experiment_id="404")
