"""The gate keeps the chain: what it records, under which allow-list, and what it releases."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from enclave.audit_log import AuditChain, AuditLogError, decode_log, encode_log, verify_chain
from enclave.egress import AUDIT_FIELDS, CHAIN_FIELDS, EgressGate, EgressRefused
from enclave.errors import HermeticError
from enclave.transport.errors import TransportTimeout
from enclave.transport.messages import (
    AuditEvent,
    AuditLog,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Error,
    MetricRelease,
)
from tests.support.channels import MemoryChannel, channel_pair

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def gate(begun: bool = True, nonce: bytes = b"\x07" * 16) -> tuple[EgressGate, MemoryChannel]:
    enclave_end, parent_end = channel_pair()
    result = EgressGate(enclave_end)
    if begun:
        result.begin_audit("job-1", nonce, lambda: NOW)
    return result, parent_end


def audit_log(parent: MemoryChannel) -> AuditLog:
    while True:
        msg = parent.recv(timeout=0)
        if isinstance(msg, AuditLog):
            return msg


def released(g: EgressGate, parent: MemoryChannel) -> list[str]:
    g.close_audit(model_sha256="m", checkpoint_sha256="c", steps=1)
    g.release_audit_log()
    return [r.type for r in decode_log(audit_log(parent).data)]


def test_every_live_audit_kind_may_enter_the_chain_with_the_same_fields() -> None:
    for kind, fields in AUDIT_FIELDS.items():
        assert CHAIN_FIELDS[kind] == fields


def test_releases_are_recorded_from_the_message_that_leaves() -> None:
    g, parent = gate()
    g.send(MetricRelease(name="acc", value=0.5, kind="public_eval", step=3))
    g.send(CheckpointBegin(step=3, size=1, final=True))
    g.send(CheckpointData(data=b"x"))
    g.send(CheckpointEnd(step=3, sha256=b"\x01" * 32))
    g.send(Error(code="dataset", message="fixed text"))
    g.audit("public_dataset", name="p", records=3, sha256="ab")
    assert released(g, parent) == ["session_start", "metric_released", "checkpoint_emitted", "refused",
                                   "public_dataset", "certificate_issuing"]


def test_released_log_verifies_against_the_head_close_returned() -> None:
    g, parent = gate()
    g.record("kms_request", operation="Decrypt", key_id="", outcome="ok")
    head, count = g.close_audit(model_sha256="m", checkpoint_sha256="c", steps=1)
    g.release_audit_log()
    summary = verify_chain(decode_log(audit_log(parent).data), head=bytes.fromhex(head), count=count)
    assert summary.count == 3 and summary.job_id == "job-1"


@pytest.mark.parametrize("type_", sorted(CHAIN_FIELDS))
def test_each_record_type_takes_only_its_fields(type_: str) -> None:
    g, _ = gate()
    with pytest.raises(EgressRefused, match="may not carry"):
        g.record(type_, plaintext="x")


def test_an_unregistered_record_type_is_refused() -> None:
    g, _ = gate()
    with pytest.raises(EgressRefused, match="not registered"):
        g.record("train_loss", value=0.1)


def test_a_record_before_the_chain_begins_is_refused_but_a_refusal_still_leaves() -> None:
    g, parent = gate(begun=False)
    with pytest.raises(AuditLogError):
        g.record("kms_request", operation="Decrypt", key_id="", outcome="ok")
    g.send(Error(code="protocol", message="no JobStart"))
    assert parent.recv(timeout=0) == Error(code="protocol", message="no JobStart")


def test_nothing_is_recorded_or_released_after_the_chain_closes() -> None:
    g, parent = gate()
    g.close_audit(model_sha256="m", checkpoint_sha256="c", steps=1)
    with pytest.raises(AuditLogError, match="closed"):
        g.record("trial_finished", index=0)
    with pytest.raises(AuditLogError, match="closed"):
        g.audit("public_dataset", name="p")


def test_only_the_sessions_closed_chain_leaves_as_an_audit_log() -> None:
    g, parent = gate()
    with pytest.raises(EgressRefused):
        g.send(AuditLog(data=b"forged"))
    with pytest.raises(AuditLogError, match="closed"):
        g.release_audit_log()
    # Another session's closed chain, otherwise identical: refused too.
    other = AuditChain("job-1", b"\x08" * 16, lambda: NOW)
    other.close(model_sha256="m", checkpoint_sha256="c", steps=1)
    g.close_audit(model_sha256="m", checkpoint_sha256="c", steps=1)
    with pytest.raises(EgressRefused):
        g.send(AuditLog(data=encode_log(other.records)))
    with pytest.raises(TransportTimeout):
        parent.recv(timeout=0)


def test_live_audit_events_still_reach_the_parent() -> None:
    g, parent = gate()
    g.audit("public_dataset", name="p", records=3, sha256="ab")
    assert parent.recv(timeout=0) == AuditEvent("public_dataset", {"name": "p", "records": 3, "sha256": "ab"})


def test_a_kms_error_is_recorded_by_its_code_and_never_masked_by_the_chain() -> None:
    from botocore.exceptions import ClientError

    from enclave.kms.attested import AttestedKms

    class Client:
        def generate_random(self, **_: object) -> dict[str, object]:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GenerateRandom")

    class Nsm:
        def attest(self, **_: object) -> bytes:
            return b"document"

    g, _ = gate()
    kms = AttestedKms(Client(), Nsm())  # type: ignore[arg-type]
    kms.observe(g.record)
    with pytest.raises(HermeticError) as denied:
        kms.generate_random(8)
    head, _ = g.close_audit(model_sha256="m", checkpoint_sha256="c", steps=1)
    assert head
    records = g._chain.records if g._chain else ()
    assert [(r.type, dict(r.fields)) for r in records[1:3]] == [
        ("attestation", {"operation": "GenerateRandom", "sha256": hashlib.sha256(b"document").hexdigest()}),
        ("kms_request", {"operation": "GenerateRandom", "key_id": "", "outcome": denied.value.code}),
    ]
    # After the chain is closed no key is asked for: the attestation cannot be recorded.
    with pytest.raises(AuditLogError, match="closed"):
        kms.generate_random(8)

    # A chain that cannot record the failure does not hide the KMS error the session reports.
    def refuse_outcomes(type_: str, /, **fields: str) -> None:
        if type_ == "kms_request":
            raise AuditLogError("full")

    other = AttestedKms(Client(), Nsm())  # type: ignore[arg-type]
    other.observe(refuse_outcomes)
    with pytest.raises(HermeticError) as again:
        other.generate_random(8)
    assert type(again.value) is type(denied.value)
