"""--tensorboard and --mlflow: one set of tracker options for the commands that run a job."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.errors import HermeticError
from parent.tracking.base import DEFAULT_MLFLOW_URI

if TYPE_CHECKING:
    from enclave.training.spec import JobSpec
    from enclave.transport.messages import Message
    from parent.proxy.artifacts import ArtifactSink
    from parent.tracking.mlflow_runs import MlflowTracker

__all__ = ["Tracking", "add_tracker_arguments", "tracking"]


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tensorboard", type=Path, metavar="DIR",
                        help="write what the enclave releases (metrics, epsilon spent, steps per second) as "
                             "TensorBoard event files in DIR, as it arrives")
    parser.add_argument("--mlflow", nargs="?", const=DEFAULT_MLFLOW_URI, metavar="URI",
                        help="log the same values to an MLflow run named after the job id, with the spec's "
                             "settings as params and the certificate as an artifact "
                             f"(default URI: {DEFAULT_MLFLOW_URI})")


@dataclass
class Tracking:
    """The trackers a job's messages go to; `ok` says how the MLflow run ends."""

    feed: Callable[[Message], None]
    mlflow_run: MlflowTracker | None
    tensorboard: Path | None
    ok: bool = False

    def report(self) -> dict[str, str | None]:
        return {"tensorboard": str(self.tensorboard) if self.tensorboard is not None else None,
                "mlflow_run": self.mlflow_run.run_id if self.mlflow_run is not None else None}


@contextmanager
def tracking(
    args: argparse.Namespace, spec: JobSpec | None, job_id: str, sink: ArtifactSink
) -> Iterator[Tracking]:
    """Open the trackers the flags ask for (before the job: one that cannot start fails before any
    budget is spent), and close them however the job ends, the MLflow run with the certificate. A spec
    that does not parse (`parent run` lets the enclave refuse it) gives the MLflow run no params."""
    from parent.tracking.base import FanOut, Tracker
    from parent.tracking.feed import ReleaseFeed

    trackers: list[Tracker] = []
    mlflow_run = None
    tensorboard = args.tensorboard.resolve() if args.tensorboard is not None else None
    try:
        if tensorboard is not None:
            from parent.tracking.tensorboard_events import TensorBoardTracker

            trackers.append(TensorBoardTracker(tensorboard))
        if args.mlflow is not None:
            from parent.tracking.mlflow_runs import MlflowTracker, spec_params

            params = spec_params(spec) if spec is not None else {}
            mlflow_run = MlflowTracker(args.mlflow, run_name=job_id, params=params)
            trackers.append(mlflow_run)
    except HermeticError:
        FanOut(trackers).close()
        raise
    feed = ReleaseFeed(FanOut(trackers))
    state = Tracking(feed, mlflow_run, tensorboard)
    try:
        yield state
    finally:
        if mlflow_run is not None:
            mlflow_run.status = "FINISHED" if state.ok else "FAILED"
            if sink.certificate is not None:
                mlflow_run.artifacts.append(sink.certificate)
            if sink.audit_log is not None:
                mlflow_run.artifacts.append(sink.audit_log)
        feed.close()
