"""The tracker interface and its fan-out to several trackers."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)

# MLflow's local file store, in the working directory, when --mlflow names no server.
DEFAULT_MLFLOW_URI = "./mlruns"


class Tracker(Protocol):
    """Somewhere released scalars are recorded as they arrive."""

    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Every scalar to every tracker; closing closes them all, even when one fails.

    A tracker's failure is logged, never raised: it would otherwise end a job whose budget
    is being spent, or lose the artefacts the job already released."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self._opened = tuple(trackers)  # a tracker dropped for failing is still closed

    def scalar(self, tag: str, value: float, step: int) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.scalar(tag, value, step)
            except Exception as err:  # noqa: BLE001 - any tracker's own failure
                log.warning("%s failed and records nothing more: %s", type(tracker).__name__, err)
                self.trackers.remove(tracker)

    def close(self) -> None:
        for tracker in self._opened:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001 - any tracker's own failure
                log.warning("%s failed to close: %s", type(tracker).__name__, err)
