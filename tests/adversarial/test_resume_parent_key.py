"""The parent naming a KMS key of its own for the model, through the real runtime and trainer.

The parent writes the job spec, and the spec names the checkpoint key: a parent that
names a key it created could decrypt every checkpoint, and with it the model. Who
receives the model is the data owners' decision, bound at sealing into the dataset's
encryption context (model_owner_keys): a spec naming another key is refused before
any key is used, and so is a checkpoint sealed under another key.
"""
from __future__ import annotations

import io

import pytest

from enclave.sealed.format import PREFIX_SIZE, SealedHeader
from enclave.sealed.stream import read_header
from enclave.training.trainer import Trainer
from enclave.transport.messages import AuditEvent, CertificateIssued, TrainingJob
from parent.local.mock_nsm import MockNsm
from tests.adversarial.test_ledger_runtime import _checkpoints, error_of, job, job_spec, seal
from tests.enclave.test_runtime import KEY_ARN
from tests.support.ledgers import MemoryLedgers

PARENT_KEY = "arn:aws:kms:us-east-1:444455556666:key/parent-made"
SPEC = job_spec(steps=4, noise=2.0, checkpoint_every=2)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return seal(tmp_path_factory.mktemp("sealed"), max_epsilon=3.0)


def test_the_data_owner_chose_the_model_owners_key_at_sealing(sealed: bytes) -> None:
    header = read_header(io.BytesIO(sealed))
    assert header.model_owner_keys == (KEY_ARN,)
    assert header.encryption_context["model_owner_keys"] == KEY_ARN


def test_a_spec_naming_the_parents_key_is_refused_before_any_kms_call(nsm: MockNsm, sealed: bytes) -> None:
    spec = TrainingJob(SPEC.spec_toml.replace(KEY_ARN, PARENT_KEY))
    replies, kms = job(sealed, MemoryLedgers(), nsm, job_id="steal", spec=spec, loop=Trainer)
    error = error_of(replies)
    assert error is not None and error.code == "config"
    assert PARENT_KEY in error.message and KEY_ARN in error.message and "checkpoint.key_id" in error.message
    assert kms.calls == []
    assert not [m for m in replies if isinstance(m, AuditEvent) and m.kind == "dataset_opened"]


def _rekeyed(sealed_file: bytes, key_id: str) -> bytes:
    """The same sealed file with another key id in its header (what a parent-made key would show)."""
    header = read_header(io.BytesIO(sealed_file))
    moved = SealedHeader(key_id=key_id, encrypted_data_key=header.encrypted_data_key,
                         encryption_context=header.encryption_context, alg=header.alg,
                         chunk_size=header.chunk_size, payload=header.payload, schema=header.schema)
    return moved.encode() + sealed_file[PREFIX_SIZE + len(header.header_bytes()):]


def test_a_checkpoint_under_a_key_the_data_owner_did_not_allow_is_refused(
    nsm: MockNsm, sealed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    replies, _ = job(sealed, MemoryLedgers(), nsm, job_id="steal", spec=SPEC, loop=Trainer)
    assert error_of(replies) is None
    checkpoint = _rekeyed(_checkpoints(replies)[2], PARENT_KEY)
    resumed, _ = job(sealed, MemoryLedgers(), nsm, job_id="steal", spec=SPEC, loop=Trainer, resume=checkpoint)
    error = error_of(resumed)
    assert error is not None and error.code == "runtime"
    assert "job failed after the data was opened (CheckpointKeyNotAllowed)" in caplog.messages
    assert not [m for m in resumed if isinstance(m, CertificateIssued)]
