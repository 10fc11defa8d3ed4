"""Two owners' datasets in one enclave session, with in-memory ledgers the test controls: every
ledger is checked before any key, a held stream is bounded, and a reservation that fails after
another succeeded leaves the first one spent (the safe direction) behind the constant error."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.reserve import read_view
from enclave.ledger.store import LedgerUnavailable
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE, RuntimeLimits
from enclave.training.trainer import Trainer
from enclave.transport.messages import RESUME_STREAM, AuditEvent, Error, JobResult, JobStart, Message, TrainingJob
from parent.local.mock_nsm import MockNsm
from parent.seal import seal_dataset
from tests.adversarial.test_ledger_runtime import _checkpoints
from tests.enclave.test_runtime import CREDS, DATA_KEY, HELLO, KEY_ARN, RecordingLoop, StubKms, run_session, stream
from tests.support.ledgers import MEMORY_LOCATION, MemoryLedgers
from tests.support.specs import mlp_spec

RECORDS = 100  # each; q = 20 / 200 = 0.1 over the union
OWNERS = {"a-v1": 10.0, "b-v1": 2.0}  # dataset id: cap


def job_spec(steps: int = 2, noise: float = 1.0, checkpoint_every: int = 0) -> TrainingJob:
    return TrainingJob(mlp_spec(key_id=KEY_ARN, name="two-owners", steps=steps, noise=noise, train=list(OWNERS),
                                checkpoint_every=checkpoint_every))


def seal_owners(folder: Path, caps: dict[str, float], *, model_owner_keys: Sequence[str] = (KEY_ARN,)
                ) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for seed, (dataset_id, cap) in enumerate(caps.items()):
        rng = np.random.default_rng(seed)
        np.savez(folder / f"{dataset_id}.npz", image=rng.integers(0, 256, (RECORDS, 784), dtype=np.uint8),
                 label=rng.integers(0, 10, RECORDS, dtype=np.uint8))
        path = folder / f"{dataset_id}.sealed"
        # The stub KMS releases DATA_KEY for either; each ledger key is still the dataset's own (salted by its id).
        with mock.patch("parent.seal.secrets.token_bytes", return_value=DATA_KEY):
            seal_dataset(folder / f"{dataset_id}.npz", path, key_id=KEY_ARN, kms_client=StubKms(), max_epsilon=cap,
                         delta=1e-5, owner=dataset_id, dataset_id=dataset_id, ledger=MEMORY_LOCATION,
                         model_owner_keys=list(model_owner_keys))
        out[dataset_id] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return seal_owners(tmp_path_factory.mktemp("owners"), OWNERS)


def session(nsm: MockNsm, sealed: dict[str, bytes], ledgers: MemoryLedgers, *, job_id: str = "job",
            spec: TrainingJob | None = None, limits: RuntimeLimits | None = None, loop: object = None,
            resume: bytes | None = None) -> tuple[list[Message], StubKms]:
    kms = StubKms()
    streams = [*OWNERS, *([RESUME_STREAM] if resume is not None else [])]
    messages: list[Message] = [HELLO, CREDS, JobStart(job_id, streams), spec or job_spec()]
    for index, dataset_id in enumerate(OWNERS):
        messages += stream(index, dataset_id, sealed[dataset_id])
    if resume is not None:
        messages += stream(len(OWNERS), RESUME_STREAM, resume)
    extra = {} if limits is None else {"limits": limits}
    replies = run_session(nsm, messages, kms=kms, ledgers=ledgers, training_loop=loop or RecordingLoop(),  # type: ignore[arg-type]  # a loop factory
                          **extra)
    return replies, kms


def slots(ledgers: MemoryLedgers, dataset_id: str) -> int:
    view = read_view(ledgers.store(dataset_id), public_key=LedgerSigningKey(DATA_KEY, dataset_id).public_key,
                     dataset_id=dataset_id, accept_unprotected=False)
    return len(view.entries)


def test_both_ledgers_are_charged_the_same_steps(nsm: MockNsm, sealed: dict[str, bytes]) -> None:
    ledgers = MemoryLedgers()
    replies, kms = session(nsm, sealed, ledgers)
    assert isinstance(replies[-2], JobResult), replies[-1]
    assert kms.calls == ["Decrypt", "Decrypt"]
    reserved = [m.fields for m in replies if isinstance(m, AuditEvent) and m.kind == "budget_reserved"]
    assert [r["dataset_id"] for r in reserved] == list(OWNERS)
    assert [r["steps"] for r in reserved] == [2, 2]
    assert slots(ledgers, "a-v1") == slots(ledgers, "b-v1") == 1


def test_a_ledger_that_would_pass_its_cap_refuses_before_any_key_naming_its_owner(
    nsm: MockNsm, sealed: dict[str, bytes]
) -> None:
    # Each job is epsilon 1.92, two 2.23 composed: b (cap 2) takes one, a (cap 10) several.
    ledgers = MemoryLedgers()
    first, _ = session(nsm, sealed, ledgers, job_id="first")
    assert isinstance(first[-2], JobResult)
    replies, kms = session(nsm, sealed, ledgers, job_id="second")
    error = replies[-1]
    assert isinstance(error, Error) and error.code == "budget"
    assert "dataset 'b-v1' has spent epsilon" in error.message and "remaining" in error.message
    assert kms.calls == []  # neither key was asked for, not even a's, whose ledger had room
    assert slots(ledgers, "a-v1") == slots(ledgers, "b-v1") == 1


def test_held_streams_are_bounded_before_any_key(nsm: MockNsm, sealed: dict[str, bytes]) -> None:
    limits = RuntimeLimits(recv_timeout_s=5, max_sealed_bytes=len(sealed["a-v1"]) - 1)
    replies, kms = session(nsm, sealed, MemoryLedgers(), limits=limits)
    error = replies[-1]
    assert isinstance(error, Error) and error.message.startswith("sealed dataset 'a-v1'") and "exceeds" in error.message
    assert kms.calls == []


def test_a_later_reservation_that_fails_leaves_the_earlier_spent(nsm: MockNsm, sealed: dict[str, bytes]) -> None:
    ledgers = MemoryLedgers()

    def down(seq: int) -> None:
        raise LedgerUnavailable("the test store is down")

    ledgers.store("b-v1").before_create = down
    replies, kms = session(nsm, sealed, ledgers)
    assert replies[-1] == Error(code=OPENED_FAILURE_CODE, message=OPENED_FAILURE)
    assert not [m for m in replies if isinstance(m, AuditEvent) and m.kind == "budget_reserved"
                and m.fields["dataset_id"] == "b-v1"]
    # a's reservation stays: budget lost, never over-spent.
    assert (slots(ledgers, "a-v1"), slots(ledgers, "b-v1")) == (1, 0)


def test_a_checkpoint_resumes_only_with_the_same_owners_datasets(
    nsm: MockNsm, sealed: dict[str, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The checkpoint tag is keyed by both data keys and binds both datasets' contexts: resumed
    # with b-v1 sealed again (same id and data key, a new cap), it is refused.
    spec = job_spec(steps=4, noise=2.0, checkpoint_every=2)
    ledgers = MemoryLedgers()
    first, _ = session(nsm, sealed, ledgers, job_id="resumed", spec=spec, loop=Trainer)
    assert isinstance(first[-2], JobResult), first[-1]
    checkpoint = _checkpoints(first)[2]
    resumed, _ = session(nsm, sealed, ledgers, job_id="resumed", spec=spec, loop=Trainer, resume=checkpoint)
    assert isinstance(resumed[-2], JobResult), resumed[-1]
    resealed = {**sealed, "b-v1": seal_owners(tmp_path, {"b-v1": 3.0})["b-v1"]}
    refused, _ = session(nsm, resealed, MemoryLedgers(), job_id="resumed", spec=spec, loop=Trainer,
                         resume=checkpoint)
    assert refused[-1] == Error(code=OPENED_FAILURE_CODE, message=OPENED_FAILURE)
    assert "job failed after the data was opened (CheckpointNotAuthentic)" in caplog.messages


def test_a_checkpoint_key_one_owner_did_not_allow_is_refused_before_any_key(
    nsm: MockNsm, sealed: dict[str, bytes], tmp_path: Path
) -> None:
    other = "arn:aws:kms:us-east-1:111122223333:key/only-a-allows-this"
    mixed = {"a-v1": seal_owners(tmp_path, {"a-v1": 10.0}, model_owner_keys=(KEY_ARN, other))["a-v1"],
             "b-v1": sealed["b-v1"]}
    spec = TrainingJob(job_spec().spec_toml.replace(KEY_ARN, other))
    replies, kms = session(nsm, mixed, MemoryLedgers(), spec=spec)
    error = replies[-1]
    assert isinstance(error, Error) and "b-v1: checkpoint.key_id" in error.message, error
    assert "only-a-allows-this" in error.message and kms.calls == []
