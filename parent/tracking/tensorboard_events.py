"""TensorBoard event files, written with the tensorboard package's own writer."""
from __future__ import annotations

import logging
from pathlib import Path

from enclave.errors import ConfigError

log = logging.getLogger(__name__)


class TensorBoardTracker:
    """Scalars into an event file under `log_dir` (`tensorboard --logdir` reads it)."""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.summary import Writer

        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            # Before the job starts: an unwritable directory must not cost a run's budget.
            raise ConfigError(f"cannot write TensorBoard events to {log_dir}: {err}") from None
        self.log_dir = log_dir
        self._writer = Writer(str(log_dir))
        log.info("TensorBoard events go to %s", log_dir)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, float(value), int(step))
        # The writer's own flush runs every two minutes; a run being watched wants each point now.
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
