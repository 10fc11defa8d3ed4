"""A training job watched through TensorBoard: the chart holds what the enclave released, and nothing else."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from enclave.egress import EgressGate, EgressRefused
from enclave.ledger.local import local_backends
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.training.trainer import TrainingInputs
from enclave.transport.address import UnixAddress
from enclave.transport.messages import AuditEvent, Message, MetricRelease, TrainingProgress
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.local.mock_nsm import MockNsm
from parent.proxy.session import EnclaveError
from parent.tracking.base import FanOut
from parent.tracking.feed import EPSILON_TAG, THROUGHPUT_TAG, ReleaseFeed
from parent.tracking.tensorboard_events import TensorBoardTracker
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.integration.conftest import DataPath
from tests.integration.test_training import _in_process_enclave, _run_parent, _streams, spec_toml
from tests.support.trackers import RecordingTracker, read_event_scalars

# A value only the enclave knows: a training loss on the private data.
PRIVATE_LOSS = 0.4242


def same(charted: list[tuple[int, float]], sent: list[tuple[int, float]]) -> bool:
    """The same steps, and the same values to float32 (what event files hold)."""
    return [s for s, _ in charted] == [s for s, _ in sent] and [v for _, v in charted] == pytest.approx(
        [v for _, v in sent], rel=1e-6)


def test_the_event_file_holds_the_released_metrics_and_epsilon_only(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    out, events = tmp_path / "out", tmp_path / "tensorboard"
    received: list[Message] = []
    feed = ReleaseFeed(FanOut([TensorBoardTracker(events)]))

    def observe(msg: Message) -> None:
        received.append(msg)
        feed(msg)

    runtime, thread = _in_process_enclave(data_path, "tracked", MockNsm(data_path.ca, pcrs=data_path.pcrs))
    try:
        outcome = _run_parent(data_path, "tracked", "job-tracked", _streams(data_path, sealed, tmp_path),
                              spec_toml(data_path.model_key_id), out, on_message=observe)
    finally:
        runtime.stop()
        thread.join(timeout=30)
        feed.close()
    assert outcome.status == "ok", outcome
    body = verify_certificate((out / "certificate.cbor").read_bytes(), root_der=data_path.ca.root_der,
                              policy=AttestationPolicy.from_pcrs(data_path.pcrs)).body

    charted = read_event_scalars(events)
    metrics = [m for m in received if isinstance(m, MetricRelease)]
    progress = [m for m in received if isinstance(m, TrainingProgress)]
    assert metrics and progress
    assert set(charted) == {m.name for m in metrics} | {EPSILON_TAG, THROUGHPUT_TAG}
    # Each metric as released, which is also what the certificate accounts for.
    for name in {m.name for m in metrics}:
        released = [(m.step, m.value) for m in metrics if m.name == name]
        assert same(charted[name], released)
        assert released == [(m.step, m.value) for m in body.metrics if m.name == name]
    # Epsilon at each progress message, then the certificate's own at its last step.
    assert same(charted[EPSILON_TAG], [(p.step, p.epsilon) for p in progress]
                + [(body.steps, body.epsilon[body.accountant])])
    assert same(charted[EPSILON_TAG][-1:], [(30, body.epsilon["prv"])])
    rates = charted[THROUGHPUT_TAG]
    assert rates and {step for step, _ in rates} <= {p.step for p in progress}
    assert all(rate > 0 for _, rate in rates)


class LeakyLoop:
    """A training loop that tries to send what the gate must keep in: a loss on the private
    data, as a metric and as an audit field, between two honest progress messages."""

    def __init__(self, inputs: TrainingInputs, gate: EgressGate) -> None:
        self.gate = gate

    def run(self) -> str:
        self.gate.send(TrainingProgress(step=1, total_steps=2, epsilon=0.5))
        with contextlib.suppress(EgressRefused):
            self.gate.send(AuditEvent(kind="training_planned", fields={"steps": 2, "loss": PRIVATE_LOSS}))
        self.gate.send(TrainingProgress(step=2, total_steps=2, epsilon=0.75))
        self.gate.send(MetricRelease(name="loss/train", value=PRIVATE_LOSS, kind="private_train", step=2))
        return "unreachable: the gate refuses the metric"


def test_a_tracker_sees_only_what_the_egress_gate_let_out(data_path: DataPath, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    control = UnixAddress(str(data_path.sock_dir / "leaky.sock"))
    relay = UnixAddress(str(data_path.sock_dir / "leaky-kms.sock"))
    runtime = SocketEnclave(RuntimeConfig(control=control, kms_relay=relay),
                            MockNsm(data_path.ca, pcrs=data_path.pcrs), ledgers=local_backends(data_path.ledger_dir),
                            training_loop=LeakyLoop)  # type: ignore[arg-type]  # a loop factory
    thread = threading.Thread(target=runtime.serve, kwargs={"sessions": 1}, daemon=True)
    thread.start()
    tracker = RecordingTracker()
    feed = ReleaseFeed(tracker, clock=iter([10.0, 12.0]).__next__)
    try:
        with pytest.raises(EnclaveError) as refused:
            _run_parent(data_path, "leaky", "job-leaky", _streams(data_path, sealed, tmp_path),
                        spec_toml(data_path.model_key_id), tmp_path / "out", on_message=feed)
    finally:
        runtime.stop()
        thread.join(timeout=30)
    # Once the data is open a failure leaves as one fixed line, so the refusal names nothing either.
    assert refused.value.remote_code == OPENED_FAILURE_CODE and OPENED_FAILURE in str(refused.value)
    assert str(PRIVATE_LOSS) not in str(refused.value)
    assert "(EgressRefused)" in caplog.text  # the enclave's own log: it was the gate that ended the job
    assert tracker.scalars == [(EPSILON_TAG, 0.5, 1), (EPSILON_TAG, 0.75, 2), (THROUGHPUT_TAG, 0.5, 2)]
    assert all(value != PRIVATE_LOSS for _, value, _ in tracker.scalars)
