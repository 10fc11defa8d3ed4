"""The one gate every byte leaving the enclave goes through.

Only typed messages of allow-listed kinds pass; an audit event may carry only the
fields registered for its kind. Anything derived from private data must be
either data-independent or accounted for by a DP mechanism before it is
registered here.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from enclave.errors import HermeticError
from enclave.transport.channel import Channel
from enclave.transport.messages import (
    AuditEvent,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    Message,
    MetricRelease,
    TrainingProgress,
)

log = logging.getLogger(__name__)


class EgressRefused(HermeticError):
    """A message was stopped at the egress gate."""

    code = "egress"


# kind -> fields the event may carry: public values only. No digest of private
# plaintext: with all records but one known, hashing each candidate finds the last.
AUDIT_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "attested": frozenset({"module_id", "pcr0"}),
        "public_dataset": frozenset({"name", "records", "sha256"}),
        "initial_weights": frozenset({"sha256", "tensors", "parameters"}),
        "training_planned": frozenset(
            {"sampling_rate", "noise_multiplier", "steps", "delta", "planned_epsilon", "max_epsilon", "resumed_at"}
        ),
        "budget_reserved": frozenset(
            {"dataset_id", "slot", "steps", "job_epsilon", "dataset_epsilon", "max_epsilon"}
        ),
        "dataset_opened": frozenset(
            {"dataset_id", "records", "schema_sha256", "sealed_sha256"}
        ),
    }
)

# Checkpoint bytes are ciphertext under the model owner's KMS key; the certificate is
# built from data-independent parameters and DP-accounted results; progress carries
# step counts and the epsilon spent, which depend only on (q, sigma, steps, delta).
_ALLOWED_TYPES: tuple[type[Message], ...] = (
    Hello,
    Goodbye,
    Error,
    AuditEvent,
    JobResult,
    TrainingProgress,
    MetricRelease,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    CertificateIssued,
)

# Metrics on private data never leave as such: only evaluations on public data, or
# values released by an accounted mechanism (registered here when one exists).
RELEASABLE_METRIC_KINDS = frozenset({"public_eval"})


class EgressGate:
    """Wraps the enclave's only outbound channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def send(self, msg: Message) -> None:
        if not isinstance(msg, _ALLOWED_TYPES):
            raise EgressRefused(f"{type(msg).__name__} may not leave the enclave")
        if isinstance(msg, AuditEvent):
            allowed = AUDIT_FIELDS.get(msg.kind)
            if allowed is None:
                raise EgressRefused(f"audit event kind {msg.kind!r} is not registered")
            extra = set(msg.fields) - allowed
            if extra:
                raise EgressRefused(f"audit event {msg.kind!r} may not carry {sorted(extra)}")
        if isinstance(msg, MetricRelease) and msg.kind not in RELEASABLE_METRIC_KINDS:
            raise EgressRefused(f"metric {msg.name!r} of kind {msg.kind!r} may not leave the enclave")
        log.debug("egress %s", type(msg).__name__)
        self._channel.send(msg)

    def audit(self, kind: str, **fields: str | int | float | bool) -> None:
        self.send(AuditEvent(kind=kind, fields=fields))
