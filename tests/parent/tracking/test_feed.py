"""What reaches a tracker: only values in the messages the enclave sent, whatever it sent."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.certificate.body import encode_body
from enclave.certificate.envelope import encode_envelope
from enclave.transport.messages import (
    AuditEvent,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    JobResult,
    Message,
    MetricRelease,
    TrainingProgress,
)
from parent.tracking.feed import EPSILON_TAG, THROUGHPUT_TAG, ReleaseFeed
from tests.support.certificates import make_body
from tests.support.message_strategies import MESSAGES
from tests.support.trackers import RecordingTracker


class Clock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def test_metrics_epsilon_and_throughput_at_their_steps() -> None:
    tracker = RecordingTracker()
    feed = ReleaseFeed(tracker, clock=Clock(100.0, 102.0, 106.0))
    feed(TrainingProgress(step=0, total_steps=30, epsilon=0.0))
    feed(TrainingProgress(step=10, total_steps=30, epsilon=0.4))
    feed(MetricRelease(name="accuracy/holdout", value=0.62, kind="public_eval", step=10))
    feed(TrainingProgress(step=30, total_steps=30, epsilon=0.9))
    feed.close()
    assert tracker.scalars == [
        (EPSILON_TAG, 0.0, 0),
        (EPSILON_TAG, 0.4, 10),
        (THROUGHPUT_TAG, 5.0, 10),  # 10 steps in 2 s
        ("accuracy/holdout", 0.62, 10),
        (EPSILON_TAG, 0.9, 30),
        (THROUGHPUT_TAG, 5.0, 30),  # 20 steps in 4 s
    ]
    assert tracker.closed


def test_progress_without_new_steps_or_elapsed_time_gives_no_throughput() -> None:
    tracker = RecordingTracker()
    feed = ReleaseFeed(tracker, clock=Clock(1.0, 1.0, 2.0))
    for step in (5, 6, 6):
        feed(TrainingProgress(step=step, total_steps=10, epsilon=0.1))
    assert [tag for tag, _, _ in tracker.scalars] == [EPSILON_TAG] * 3


def test_the_certificate_gives_the_final_epsilon_at_its_step_count() -> None:
    body = make_body()
    tracker = RecordingTracker()
    ReleaseFeed(tracker)(CertificateIssued(data=encode_envelope(encode_body(body), b"attestation")))
    assert tracker.scalars == [(EPSILON_TAG, body.epsilon["prv"], body.steps)]


def test_a_certificate_the_parent_cannot_parse_records_nothing(caplog: pytest.LogCaptureFixture) -> None:
    tracker = RecordingTracker()
    with caplog.at_level(logging.WARNING):
        ReleaseFeed(tracker)(CertificateIssued(data=b"\xa0not a certificate"))
    assert tracker.scalars == [] and "not tracked" in caplog.text


def test_audit_events_checkpoints_and_results_never_reach_a_tracker() -> None:
    # Audit fields and the job's result are what the enclave chose to say to the host's
    # logs, not released values; checkpoints are sealed. None of it is a scalar to chart.
    tracker = RecordingTracker()
    feed = ReleaseFeed(tracker)
    for msg in (AuditEvent(kind="dataset_opened", fields={"records": 2000, "loss": 0.31}),
                CheckpointBegin(step=10, size=4, final=False), CheckpointData(data=b"\x00" * 4),
                JobResult(status="ok", detail="30 steps")):
        feed(msg)
    assert tracker.scalars == []


@given(st.lists(MESSAGES, max_size=25))
def test_every_tracked_value_is_one_the_enclave_sent(messages: list[Message]) -> None:
    tracker = RecordingTracker()
    feed = ReleaseFeed(tracker, clock=iter(range(1, 1000)).__next__)
    for msg in messages:
        feed(msg)
    metrics = {(m.name, m.value, m.step) for m in messages if isinstance(m, MetricRelease)}
    progress = [m for m in messages if isinstance(m, TrainingProgress)]
    epsilons = {(EPSILON_TAG, m.epsilon, m.step) for m in progress}
    steps = {m.step for m in progress}
    for tag, value, step in tracker.scalars:
        if tag == THROUGHPUT_TAG:
            assert step in steps  # the arrival of a progress message, never a made-up step
        else:
            assert (tag, value, step) in metrics | epsilons
    # and each released metric and progress point is there, once for each time it was sent
    recorded = [s for s in tracker.scalars if s[0] != THROUGHPUT_TAG]
    assert len(recorded) == sum(isinstance(m, MetricRelease | TrainingProgress) for m in messages)
