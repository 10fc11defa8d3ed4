"""The one gate every byte leaving the enclave goes through.

Only typed messages of allow-listed kinds pass; an audit event may carry only the
fields registered for its kind. Anything derived from private data must be
either data-independent or accounted for by a DP mechanism before it is
registered here.

The gate also keeps the session's audit chain (`enclave.audit_log`): being the one
place every release passes, it records released metrics, emitted checkpoints and
refusals itself, from the very message that leaves, so no release can go unrecorded
and a record never says more than the release did. Other events (KMS requests,
attestations, ledger reads, trials) are recorded by their callers through `record`,
under the same per-type field allow-list (`CHAIN_FIELDS`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from enclave.audit_log import SESSION_START, AuditChain, AuditLogError, Clock, FieldValue, encode_log
from enclave.errors import HermeticError
from enclave.transport.channel import Channel
from enclave.transport.messages import (
    AuditEvent,
    AuditLog,
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
            {"dataset_id", "slot", "steps", "job_epsilon", "dataset_epsilon", "max_epsilon", "entry_sha256",
             "prev_sha256"}
        ),
        "dataset_opened": frozenset(
            {"dataset_id", "records", "schema_sha256", "sealed_sha256"}
        ),
    }
)

# type -> fields a chain record may carry. The live AuditEvent kinds above, plus records
# that only enter the chain. Each field is public or already released and accounted:
# - session_start: the job id (in the certificate) and a fresh CSPRNG nonce;
# - attestation: the SHA-256 of a document the NSM produced for a KMS request, and that
#   request's operation; the document itself went to KMS through the parent already;
# - kms_request: the operation, the key id asked for ("" when the ciphertext names its
#   key) and "ok" or the error's code: never a plaintext, a ciphertext or key material;
# - ledger_read: what the ledger (public, in the parent's storage) already held; and
#   budget_reserved's entry_sha256 and prev_sha256 are the stored entry's hash and the
#   ledger head it extends, both readable from the store by anyone;
# - trial_started/trial_finished: the index and the candidate, drawn by the CSPRNG from
#   the public grid; never a trial's score, which depends on the data and is released
#   for the selected trial alone, in the certificate;
# - checkpoint_resumed: the sealed checkpoint a run continued from, as the certificate's
#   resumed_from states it;
# - checkpoint_emitted, metric_released, refused: the fields of the message that left;
#   refused carries the Error's code and its text, which the parent received as is;
# - certificate_issuing: hashes and counts the certificate states.
CHAIN_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType(
    dict(AUDIT_FIELDS) | {
        SESSION_START: frozenset({"job_id", "nonce"}),
        "attestation": frozenset({"sha256", "operation"}),
        "kms_request": frozenset({"operation", "key_id", "outcome"}),
        "ledger_read": frozenset({"dataset_id", "spent_epsilon"}),
        "trial_started": frozenset({"index", "candidate"}),
        "trial_finished": frozenset({"index"}),
        "checkpoint_emitted": frozenset({"step", "sealed_sha256", "final"}),
        "checkpoint_resumed": frozenset({"step", "sealed_sha256"}),
        "metric_released": frozenset({"name", "kind", "step", "value"}),
        "refused": frozenset({"code", "message"}),
        "certificate_issuing": frozenset({"model_sha256", "checkpoint_sha256", "steps"}),
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
    AuditLog,
)

# Metrics on private data never leave as such: only evaluations on public data, or
# values released by an accounted mechanism (registered here when one exists).
RELEASABLE_METRIC_KINDS = frozenset({"public_eval"})


def _check_audit_event(msg: AuditEvent) -> None:
    allowed = AUDIT_FIELDS.get(msg.kind)
    if allowed is None:
        raise EgressRefused(f"audit event kind {msg.kind!r} is not registered")
    extra = set(msg.fields) - allowed
    if extra:
        raise EgressRefused(f"audit event {msg.kind!r} may not carry {sorted(extra)}")


class EgressGate:
    """Wraps the enclave's only outbound channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._chain: AuditChain | None = None
        # The final checkpoint's flag arrives in its CheckpointBegin, the hash in its End.
        self._checkpoint_final = False

    def begin_audit(self, job_id: str, nonce: bytes, clock: Clock) -> None:
        """Start the session's chain; its first record names the job (known once JobStart is in)."""
        if self._chain is not None:
            raise AuditLogError("the session's audit chain has begun already")
        self._chain = AuditChain(job_id, nonce, clock)

    def record(self, type_: str, /, **fields: FieldValue) -> None:
        """Append a chain-only record, checked against CHAIN_FIELDS; the chain must have begun."""
        if self._chain is None:
            raise AuditLogError(f"{type_!r} recorded before the session's audit chain began")
        self._append(self._chain, type_, fields)

    @staticmethod
    def _append(chain: AuditChain, type_: str, fields: Mapping[str, FieldValue]) -> None:
        allowed = CHAIN_FIELDS.get(type_)
        if allowed is None:
            raise EgressRefused(f"audit record type {type_!r} is not registered")
        extra = set(fields) - allowed
        if extra:
            raise EgressRefused(f"audit record {type_!r} may not carry {sorted(extra)}")
        chain.append(type_, **fields)

    def close_audit(self, **fields: FieldValue) -> tuple[str, int]:
        """Record certificate_issuing and fix the chain: (head hex, count) for the certificate body."""
        if self._chain is None:
            raise AuditLogError("a certificate needs the session's audit chain, which has not begun")
        extra = set(fields) - CHAIN_FIELDS["certificate_issuing"]
        if extra:
            raise EgressRefused(f"audit record 'certificate_issuing' may not carry {sorted(extra)}")
        head, count = self._chain.close(**fields)
        return head.hex(), count

    def release_audit_log(self) -> None:
        """Send the closed chain, after the certificate that states its head."""
        if self._chain is None or not self._chain.closed:
            raise AuditLogError("only a closed audit chain is released: its head must be in the certificate")
        self.send(AuditLog(data=encode_log(self._chain.records)))

    def _is_own_log(self, msg: AuditLog) -> bool:
        chain = self._chain
        return chain is not None and chain.closed and msg.data == encode_log(chain.records)

    def _record_release(self, msg: Message) -> None:
        chain = self._chain
        if chain is None or chain.closed:
            # Before JobStart there is no chain, and after the certificate nothing more is attested.
            return
        if isinstance(msg, MetricRelease):
            self._append(chain, "metric_released", {"name": msg.name, "kind": msg.kind, "step": msg.step,
                                                    "value": msg.value})
        elif isinstance(msg, CheckpointBegin):
            self._checkpoint_final = msg.final
        elif isinstance(msg, CheckpointEnd):
            self._append(chain, "checkpoint_emitted", {"step": msg.step, "sealed_sha256": msg.sha256.hex(),
                                                       "final": self._checkpoint_final})
        elif isinstance(msg, Error):
            try:
                self._append(chain, "refused", {"code": msg.code, "message": msg.message})
            except HermeticError:
                # A full chain must not keep the refusal from the parent; no certificate follows it.
                log.warning("the audit chain could not record the refusal %s", msg.code)

    def send(self, msg: Message) -> None:
        if not isinstance(msg, _ALLOWED_TYPES):
            raise EgressRefused(f"{type(msg).__name__} may not leave the enclave")
        if isinstance(msg, AuditEvent):
            _check_audit_event(msg)
        if isinstance(msg, AuditLog) and not self._is_own_log(msg):
            # The log is released as the chain the certificate attests, never other bytes.
            raise EgressRefused("an AuditLog leaves only as the session's closed audit chain")
        if isinstance(msg, MetricRelease) and msg.kind not in RELEASABLE_METRIC_KINDS:
            raise EgressRefused(f"metric {msg.name!r} of kind {msg.kind!r} may not leave the enclave")
        # Recorded before it leaves: a release the chain refuses (full, closed) does not leave.
        self._record_release(msg)
        log.debug("egress %s", type(msg).__name__)
        self._channel.send(msg)

    def audit(self, kind: str, **fields: str | int | float | bool) -> None:
        """A live AuditEvent to the parent, recorded in the chain too once it has begun."""
        msg = AuditEvent(kind=kind, fields=fields)
        _check_audit_event(msg)
        # Recorded first, as every release is: what leaves is in the chain.
        if self._chain is not None:
            self._append(self._chain, kind, dict(msg.fields))
        self.send(msg)
