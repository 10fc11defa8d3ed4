"""An MLflow run per job: the released scalars as metrics, the spec's settings as params.

mlflow is optional (a heavy install): it is imported only when a tracker is made.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from enclave.training.spec import JobSpec

log = logging.getLogger(__name__)

MISSING = "--mlflow needs the mlflow package (pip install mlflow)"


def spec_params(spec: JobSpec) -> dict[str, str]:
    """The spec's optimizer and privacy settings, as MLflow params (strings; unset ones left out)."""
    params: dict[str, str] = {"job": spec.name, "model": spec.model.name or "inline"}
    for section, settings in (("optimizer", spec.optimizer), ("privacy", spec.privacy)):
        for field in dataclasses.fields(settings):
            value = getattr(settings, field.name)
            if value is not None:
                params[f"{section}.{field.name}"] = str(value)
    return params


def _is_file_store(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


class MlflowTracker:
    """Scalars as MLflow metrics of one run named after the job."""

    def __init__(self, uri: str, run_name: str, params: Mapping[str, str], experiment_id: str = "0") -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Param
            from mlflow.exceptions import MlflowException
        except ImportError:
            raise ConfigError(MISSING) from None
        if _is_file_store(uri):
            # MLflow 3 keeps the file store in maintenance mode and refuses it without this
            # opt-in; a local directory is what a plain --mlflow asks for. A user's own value wins.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            # Before the job starts: a tracking server that cannot be reached must not cost a run's budget.
            self._client: Any = MlflowClient(tracking_uri=uri)
            run = self._client.create_run(experiment_id, run_name=run_name)
            self.run_id: str = run.info.run_id
            self._client.log_batch(self.run_id, params=[Param(key, value) for key, value in params.items()])
        except MlflowException as err:
            raise ConfigError(f"cannot start an MLflow run at {uri}: {err.message}") from None
        # Set by the caller before close: how the job ended, and the files it released (the certificate).
        self.status = "FINISHED"
        self.artifacts: list[Path] = []
        log.info("MLflow run %s (%s) at %s", run_name, self.run_id, uri)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._client.log_metric(self.run_id, tag, float(value), step=int(step))

    def close(self) -> None:
        try:
            for path in self.artifacts:
                self._client.log_artifact(self.run_id, str(path))
        finally:
            self._client.set_terminated(self.run_id, self.status)
