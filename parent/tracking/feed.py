"""From the parent's received messages to tracker scalars.

Only three kinds of message carry values that left the enclave through its egress
gate: `MetricRelease` (public-set metrics, DP-accounted ones), `TrainingProgress`
(step, epsilon spent) and `CertificateIssued` (the final accounting). Everything
else — audit events, sealed checkpoints, the job result — is ignored, and there is
no other way in: a tracker sees nothing the enclave did not send.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from enclave.errors import HermeticError
from enclave.transport.messages import CertificateIssued, Message, MetricRelease, TrainingProgress
from parent.tracking.base import Tracker

log = logging.getLogger(__name__)

EPSILON_TAG = "privacy/epsilon"
THROUGHPUT_TAG = "throughput/steps_per_second"


class ReleaseFeed:
    """A message handler (for `run_job`'s on_message) that records released values in `tracker`.

    Throughput is the host's own observation — steps between two progress messages over
    the time between their arrivals — so it says nothing the message stream did not."""

    def __init__(self, tracker: Tracker, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = tracker
        self._clock = clock
        self._last: tuple[int, float] | None = None

    def __call__(self, msg: Message) -> None:
        if isinstance(msg, MetricRelease):
            self.tracker.scalar(msg.name, msg.value, msg.step)
        elif isinstance(msg, TrainingProgress):
            self._progress(msg)
        elif isinstance(msg, CertificateIssued):
            self._certificate(msg.data)

    def _progress(self, msg: TrainingProgress) -> None:
        now = self._clock()
        self.tracker.scalar(EPSILON_TAG, msg.epsilon, msg.step)
        if self._last is not None:
            step, at = self._last
            if msg.step > step and now > at:
                self.tracker.scalar(THROUGHPUT_TAG, (msg.step - step) / (now - at), msg.step)
        self._last = (msg.step, now)

    def _certificate(self, data: bytes) -> None:
        from parent.verify.body import decode_body
        from parent.verify.envelope import decode_envelope

        # The stated epsilon of the primary accountant, not verified here: `hermetic
        # verify-certificate` recomputes it from the ledger. A certificate the parent
        # cannot even parse is left to that command to reject.
        try:
            body = decode_body(decode_envelope(data)[0])
        except HermeticError as err:
            log.warning("the certificate's epsilon is not tracked: %s", err)
            return
        final = body.epsilon.get(body.accountant)
        if final is not None:
            self.tracker.scalar(EPSILON_TAG, final, body.steps)

    def close(self) -> None:
        self.tracker.close()
