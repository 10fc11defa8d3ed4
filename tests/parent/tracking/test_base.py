from __future__ import annotations

import logging

import pytest

from parent.tracking.base import FanOut
from tests.support.trackers import RecordingTracker


class Broken(RecordingTracker):
    def scalar(self, tag: str, value: float, step: int) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        self.closed = True
        raise OSError("disk still full")


def test_every_tracker_gets_every_scalar_and_is_closed() -> None:
    a, b = RecordingTracker(), RecordingTracker()
    fan = FanOut([a, b])
    fan.scalar("privacy/epsilon", 0.5, 1)
    fan.close()
    assert a.scalars == b.scalars == [("privacy/epsilon", 0.5, 1)]
    assert a.closed and b.closed


def test_a_failing_tracker_is_dropped_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    broken, good = Broken(), RecordingTracker()
    fan = FanOut([broken, good])
    with caplog.at_level(logging.WARNING):
        fan.scalar("a", 1.0, 1)
        fan.scalar("a", 2.0, 2)
    assert good.scalars == [("a", 1.0, 1), ("a", 2.0, 2)]
    assert caplog.text.count("disk full") == 1


def test_a_failing_close_is_logged_and_the_rest_still_close(caplog: pytest.LogCaptureFixture) -> None:
    broken, good = Broken(), RecordingTracker()
    fan = FanOut([broken, good])
    fan.scalar("a", 1.0, 1)  # dropped here, closed all the same
    with caplog.at_level(logging.WARNING):
        fan.close()
    assert broken.closed and good.closed
    assert "disk still full" in caplog.text
