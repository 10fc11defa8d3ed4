"""A whole enclave session's audit trail: what it records, and that it verifies against the certificate."""
from __future__ import annotations

import hashlib

from botocore.exceptions import ClientError

from enclave.audit_log import decode_log
from enclave.egress import CHAIN_FIELDS
from enclave.transport.messages import AuditLog, CertificateIssued, Error, JobResult
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.audit import verify_audit_log
from parent.verify.certificate import verify_certificate
from tests.enclave.test_runtime import (  # noqa: F401 - `sealed` is a fixture
    CREDS,
    DATA_KEY,
    KEY_ARN,
    SETUP,
    TRAIN,
    StubKms,
    run_session,
    sealed,
    stream,
)
from tests.support.certificates import PINNED
from tests.support.ledgers import MemoryLedgers


def test_a_session_releases_its_chain_after_the_certificate_that_states_its_head(
    nsm: MockNsm, ca: LocalCa, sealed: bytes  # noqa: F811 - the fixture
) -> None:
    ledgers = MemoryLedgers()
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], ledgers=ledgers)
    kinds = [type(m) for m in replies]
    # The log follows the certificate at once, before the job's result.
    assert kinds.index(AuditLog) == kinds.index(CertificateIssued) + 1 < kinds.index(JobResult)
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    [log_msg] = [m for m in replies if isinstance(m, AuditLog)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    assert body.version == 7
    summary = verify_audit_log(log_msg.data, body)
    records = decode_log(log_msg.data)
    assert [r.type for r in records] == [
        "session_start",
        "ledger_read",  # the budget is checked before any key is asked for
        "attestation", "kms_request",  # the dataset's data key
        "dataset_opened", "training_planned", "budget_reserved",
        "attestation", "kms_request",  # the checkpoint's data key
        "checkpoint_emitted",
        "certificate_issuing",
    ]
    assert summary.count == len(records) == body.audit_log_events
    by_type = {r.type: r for r in records}
    assert dict(by_type["kms_request"].fields) == {"operation": "GenerateDataKey", "key_id": KEY_ARN,
                                                   "outcome": "ok"}
    assert dict(records[3].fields) == {"operation": "Decrypt", "key_id": KEY_ARN, "outcome": "ok"}
    assert by_type["dataset_opened"].fields["sealed_sha256"] == hashlib.sha256(sealed).hexdigest()
    assert by_type["certificate_issuing"].fields == {"model_sha256": body.model_sha256,
                                                     "checkpoint_sha256": body.checkpoint_sha256, "steps": 2}
    assert by_type["session_start"].fields["job_id"] == "job-1" == body.job_id
    # The reservation names the entry as stored, which anyone reading the ledger can find.
    [slot] = ledgers.store(TRAIN).read_all()
    assert by_type["budget_reserved"].fields["entry_sha256"] == hashlib.sha256(slot.data).hexdigest()
    assert by_type["budget_reserved"].fields["prev_sha256"] == ""


def test_every_recorded_field_is_on_its_types_allow_list_and_no_secret_is_recorded(
    nsm: MockNsm, sealed: bytes  # noqa: F811 - the fixture
) -> None:
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)])
    [log_msg] = [m for m in replies if isinstance(m, AuditLog)]
    secret_texts = (DATA_KEY.hex(), CREDS.secret_access_key, "wrapped-key")
    for record in decode_log(log_msg.data):
        assert record.type in CHAIN_FIELDS
        assert set(record.fields) <= CHAIN_FIELDS[record.type], record
        for value in record.fields.values():
            if isinstance(value, str):
                assert not any(secret in value for secret in secret_texts), record
            elif isinstance(value, bytes):
                assert DATA_KEY not in value, record


def test_a_failed_session_releases_no_log(nsm: MockNsm, sealed: bytes) -> None:  # noqa: F811 - the fixture
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "PCR0 mismatch"}}, "Decrypt")
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], kms=StubKms(error=denied))
    assert any(isinstance(m, Error) for m in replies)
    # No certificate states a head for it, so the chain is not released (see the README).
    assert not any(isinstance(m, (AuditLog, CertificateIssued)) for m in replies)
