"""A model owner forging a checkpoint to resume from, through the real runtime and trainer.

The model owner may decrypt their checkpoints and, holding kms:Decrypt and
GenerateDataKey-capable keys, seal any plaintext they like under a data key of their
own. The forgeries here reset the privacy ledger (so the certificate would
understate epsilon) and add an invented metric (so it would vouch for it). The
enclave must refuse them: a checkpoint resumes only with a tag made under the
dataset's data key by the same enclave image for the same job and dataset.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

from enclave.audit_log import AuditRecord, decode_log
from enclave.certificate.body import CertificateBody, ResumedFrom
from enclave.hazmat.checkpoint_key import CheckpointAuthKey
from enclave.privacy.ledger import PrivacyLedger
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.training.checkpoint import (
    CheckpointAuthenticator,
    CheckpointBinding,
    CheckpointState,
    SamplerState,
    open_checkpoint,
    read_checkpoint_header,
    seal_checkpoint,
)
from enclave.training.trainer import Trainer
from enclave.transport.messages import RESUME_STREAM, AuditLog, CertificateIssued, JobStart, Message
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.audit import verify_audit_log
from parent.verify.certificate import verify_certificate
from tests.adversarial.test_ledger_runtime import _checkpoints, error_of, job, job_spec, pinned
from tests.adversarial.test_ledger_runtime import sealed_cap2 as sealed_cap2  # module fixtures, shared here
from tests.adversarial.test_ledger_runtime import sealed_cap3 as sealed_cap3
from tests.enclave.test_runtime import CREDS, DATA_KEY, HELLO, KEY_ARN, StubKms, run_session, stream
from tests.support.ledgers import MemoryLedgers

SPEC = job_spec(steps=4, noise=2.0, checkpoint_every=2)


def _owner_decrypts(checkpoint: bytes) -> CheckpointState:
    # The stub KMS's one data key is what the model owner's KMS Decrypt gives back.
    return open_checkpoint(checkpoint, decrypt=lambda blob, ctx, key_id: DATA_KEY)


def _owner_seals(state: CheckpointState, authenticator: CheckpointAuthenticator) -> bytes:
    return seal_checkpoint(state, key_id=KEY_ARN, generate_data_key=lambda key_id, ctx: (DATA_KEY, b"wrapped-key"),
                           authenticator=authenticator)


def _rewound(state: CheckpointState) -> CheckpointState:
    """The final model with its ledger reset to step 0 and an invented metric."""
    invented = {"name": "accuracy/holdout", "value": 0.99, "kind": "public_eval", "step": 0, "epsilon_cost": 0.0}
    fresh = PrivacyLedger(1e-5, PrivacyLedger.from_dict(state.ledger).accountant)
    return replace(state, step=0, ledger=fresh.to_dict(), sampler=SamplerState(steps=0, q=state.sampler.q),
                   metrics=(*state.metrics, invented))


@pytest.fixture
def final_checkpoint(nsm: MockNsm, sealed_cap3: bytes) -> bytes:
    replies, _ = job(sealed_cap3, MemoryLedgers(), nsm, job_id="forged", spec=SPEC, loop=Trainer)
    assert error_of(replies) is None
    return _checkpoints(replies)[4]


def _refused(replies: list[Message], caplog: pytest.LogCaptureFixture, cause: str) -> None:
    error = error_of(replies)
    assert error is not None and (error.code, error.message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert f"job failed after the data was opened ({cause})" in caplog.messages
    assert not [m for m in replies if isinstance(m, CertificateIssued)]


def verified_log(data: bytes, body: CertificateBody) -> tuple[AuditRecord, ...]:
    verify_audit_log(data, body)
    return decode_log(data)


def _body(replies: list[Message], ca: LocalCa, nsm: MockNsm) -> CertificateBody:
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    return verify_certificate(issued.data, root_der=ca.root_der, policy=pinned(nsm)).body


def test_an_honest_checkpoint_resumes_and_the_certificate_names_it(
    nsm: MockNsm, ca: LocalCa, sealed_cap3: bytes
) -> None:
    # One ledger for both sessions: the certificate checks the job's epsilon against the dataset's total.
    ledgers = MemoryLedgers()
    replies, _ = job(sealed_cap3, ledgers, nsm, job_id="forged", spec=SPEC, loop=Trainer)
    assert _body(replies, ca, nsm).resumed_from is None
    checkpoint = _checkpoints(replies)[2]
    resumed, _ = job(sealed_cap3, ledgers, nsm, job_id="forged", spec=SPEC, loop=Trainer, resume=checkpoint)
    assert error_of(resumed) is None, resumed[-1]
    body = _body(resumed, ca, nsm)
    assert body.steps == 4
    assert body.resumed_from == ResumedFrom(sealed_sha256=hashlib.sha256(checkpoint).hexdigest(), step=2)
    # The audit trail records the resume as the certificate states it.
    [log_msg] = [m for m in resumed if isinstance(m, AuditLog)]
    [record] = [r for r in verified_log(log_msg.data, body) if r.type == "checkpoint_resumed"]
    assert dict(record.fields) == {"sealed_sha256": hashlib.sha256(checkpoint).hexdigest(), "step": 2}


def test_a_rewound_ledger_with_an_invented_metric_and_a_tag_of_the_owners_making_is_refused(
    nsm: MockNsm, sealed_cap3: bytes, final_checkpoint: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    forged_state = _rewound(_owner_decrypts(final_checkpoint))
    # The best the model owner can do: a key of their own, not one derived from the dataset's data key.
    guess = CheckpointAuthenticator(CheckpointAuthKey([("shared-v1", os.urandom(32))]),
                                    CheckpointBinding(pcr0=nsm.describe_pcr(0).value.hex(), datasets=()))
    forged = _owner_seals(forged_state, guess)
    replies, _ = job(sealed_cap3, MemoryLedgers(), nsm, job_id="forged", spec=SPEC, loop=Trainer, resume=forged)
    _refused(replies, caplog, "CheckpointNotAuthentic")


def test_a_rewound_ledger_keeping_the_honest_tag_is_refused(
    nsm: MockNsm, sealed_cap3: bytes, final_checkpoint: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    honest_tag = read_checkpoint_header(final_checkpoint).encryption_context["auth_tag"]
    forged_state = _rewound(_owner_decrypts(final_checkpoint))

    class Replay(CheckpointAuthenticator):
        def tag(self, **_: object) -> str:
            return honest_tag

    forged = _owner_seals(forged_state, Replay(CheckpointAuthKey([("x", bytes(32))]), CheckpointBinding("", ())))
    assert read_checkpoint_header(forged).encryption_context["auth_tag"] == honest_tag
    replies, _ = job(sealed_cap3, MemoryLedgers(), nsm, job_id="forged", spec=SPEC, loop=Trainer, resume=forged)
    _refused(replies, caplog, "CheckpointNotAuthentic")


def test_a_checkpoint_of_another_dataset_or_enclave_image_is_refused(
    nsm: MockNsm, ca: LocalCa, sealed_cap2: bytes, sealed_cap3: bytes, final_checkpoint: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Same dataset id and data key, but sealed with another budget: another context.
    replies, _ = job(sealed_cap2, MemoryLedgers(), nsm, job_id="forged", spec=SPEC, loop=Trainer,
                     resume=final_checkpoint)
    _refused(replies, caplog, "CheckpointNotAuthentic")
    caplog.clear()
    other_image = MockNsm(ca, pcrs={0: b"\x01" * 48, 1: b"\x02" * 48, 2: b"\x03" * 48})
    replies, _ = job(sealed_cap3, MemoryLedgers(), other_image, job_id="forged", spec=SPEC, loop=Trainer,
                     resume=final_checkpoint)
    _refused(replies, caplog, "CheckpointNotAuthentic")


def test_a_checkpoint_streamed_before_the_dataset_is_refused_before_any_kms_call(
    nsm: MockNsm, sealed_cap3: bytes, final_checkpoint: bytes
) -> None:
    kms = StubKms()
    messages = [HELLO, CREDS, JobStart("forged", [RESUME_STREAM, "shared-v1"]), SPEC,
                *stream(0, RESUME_STREAM, final_checkpoint), *stream(1, "shared-v1", sealed_cap3)]
    replies = run_session(nsm, messages, kms=kms, ledgers=MemoryLedgers(), training_loop=Trainer)
    error = error_of(replies)
    assert error is not None and error.code == "protocol" and "must follow the sealed dataset" in error.message
    assert kms.calls == []
