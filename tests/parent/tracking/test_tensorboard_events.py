from __future__ import annotations

from pathlib import Path

import pytest

from enclave.errors import ConfigError
from parent.tracking.tensorboard_events import TensorBoardTracker
from tests.support.trackers import read_event_scalars


def test_the_event_file_holds_exactly_the_scalars_written(tmp_path: Path) -> None:
    tracker = TensorBoardTracker(tmp_path / "tb")
    tracker.scalar("accuracy/holdout", 0.5, 10)
    tracker.scalar("privacy/epsilon", 0.25, 10)
    tracker.scalar("accuracy/holdout", 0.75, 20)
    tracker.close()
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert read_event_scalars(tmp_path / "tb") == {
        "accuracy/holdout": [(10, 0.5), (20, 0.75)],
        "privacy/epsilon": [(10, 0.25)],
    }


def test_each_point_is_on_disk_before_close(tmp_path: Path) -> None:
    # A run is watched while it trains: a point must not wait for the writer's two-minute flush.
    tracker = TensorBoardTracker(tmp_path)
    tracker.scalar("privacy/epsilon", 1.5, 3)
    try:
        assert read_event_scalars(tmp_path) == {"privacy/epsilon": [(3, 1.5)]}
    finally:
        tracker.close()


def test_an_unwritable_directory_fails_before_any_job(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write TensorBoard events"):
        TensorBoardTracker(blocker / "tb")
