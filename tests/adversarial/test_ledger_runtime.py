"""The budget ledger through the enclave runtime: jobs on one sealed dataset share its budget.

Each session is the real runtime over an in-memory channel (tests.enclave.test_runtime's
harness) with a KMS stub that counts Decrypt calls, and an in-memory ledger the test plays
the parent against. A job refused for the budget must be refused before KMS is asked for
the data key."""
from __future__ import annotations

import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.entry import LedgerEntry
from enclave.ledger.reserve import read_view
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE, EnclaveRuntime
from enclave.training.trainer import Trainer
from enclave.transport.messages import (
    RESUME_STREAM,
    AuditEvent,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Error,
    JobResult,
    JobStart,
    Message,
    TrainingJob,
)
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.seal import seal_dataset
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.enclave.test_runtime import (
    CREDS,
    DATA_KEY,
    FIXED_NOW,
    HELLO,
    KEY_ARN,
    QUICK_LIMITS,
    RecordingLoop,
    StubKms,
    run_session,
    stream,
)
from tests.support.channels import MemoryListener, drain
from tests.support.ledgers import MEMORY_LOCATION, MemoryLedgers
from tests.support.specs import mlp_spec

DATASET = "shared-v1"
RECORDS = 200  # q = 20 / 200 = 0.1


def job_spec(*, steps: int = 2, noise: float = 1.0, checkpoint_every: int = 0) -> TrainingJob:
    return TrainingJob(mlp_spec(key_id=KEY_ARN, name="ledger-test", steps=steps, noise=noise,
                                checkpoint_every=checkpoint_every))


def seal(folder: Path, *, max_epsilon: float, public_key_from: bytes = DATA_KEY) -> bytes:
    rng = np.random.default_rng(11)
    np.savez(folder / "d.npz", image=rng.integers(0, 256, (RECORDS, 784), dtype=np.uint8),
             label=rng.integers(0, 10, RECORDS, dtype=np.uint8))
    out = folder / f"d-{max_epsilon}.sealed"
    # The stub KMS releases DATA_KEY; the context's ledger key comes from `public_key_from`.
    with mock.patch("parent.seal.secrets.token_bytes", return_value=public_key_from):
        seal_dataset(folder / "d.npz", out, key_id=KEY_ARN, kms_client=StubKms(), max_epsilon=max_epsilon,
                     delta=1e-5, owner="owner", dataset_id=DATASET, ledger=MEMORY_LOCATION, model_owner_keys=[KEY_ARN])
    return out.read_bytes()


@pytest.fixture(scope="module")
def sealed_cap3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return seal(tmp_path_factory.mktemp("cap3"), max_epsilon=3.0)


@pytest.fixture(scope="module")
def sealed_cap2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return seal(tmp_path_factory.mktemp("cap2"), max_epsilon=2.0)


def job(sealed: bytes, ledgers: MemoryLedgers, nsm: MockNsm, *, job_id: str = "job", spec: TrainingJob | None = None,
        loop: object = None, resume: bytes | None = None) -> tuple[list[Message], StubKms]:
    kms = StubKms()
    streams = [DATASET] + ([RESUME_STREAM] if resume is not None else [])
    messages = [HELLO, CREDS, JobStart(job_id, streams), spec or job_spec(), *stream(0, DATASET, sealed)]
    if resume is not None:
        messages += stream(1, RESUME_STREAM, resume)
    replies = run_session(nsm, messages, kms=kms, ledgers=ledgers,
                          training_loop=loop or RecordingLoop())  # type: ignore[arg-type]  # a loop factory
    return replies, kms


def error_of(replies: list[Message]) -> Error | None:
    return replies[-1] if isinstance(replies[-1], Error) else None


def entries(ledgers: MemoryLedgers) -> list[LedgerEntry]:
    """The valid entries, in slot order, as the enclave reads them."""
    view = read_view(ledgers.store(DATASET), public_key=LedgerSigningKey(DATA_KEY, DATASET).public_key,
                     dataset_id=DATASET, accept_unprotected=False)
    return [v.entry for v in view.entries]


def test_jobs_past_the_cap_are_refused_before_any_kms_decrypt(nsm: MockNsm, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    accepted = 0
    for n in range(6):
        replies, kms = job(sealed_cap3, ledgers, nsm, job_id=f"job-{n}")
        error = error_of(replies)
        if error is None:
            accepted += 1
            assert kms.calls == ["Decrypt"]
            continue
        # Refused: by the budget, naming what is spent and what remains, and KMS never asked.
        assert error.code == "budget" and "has spent epsilon" in error.message and "remaining" in error.message
        assert kms.calls == []
        assert not [m for m in replies if isinstance(m, AuditEvent) and m.kind == "dataset_opened"]
    # Each job alone is epsilon 1.92 and fits the cap on its own; composed exactly (PLD), k of them fit.
    one = Segment(0.1, 1.0, 2)
    fitting = max(k for k in range(1, 7) if compose_epsilon([one] * k, 1e-5, "prv") <= 3.0)
    assert 2 <= accepted == fitting < 6
    assert [e.job_id for e in entries(ledgers)] == [f"job-{n}" for n in range(fitting)]


def test_each_session_starts_from_the_ledger_not_a_fresh_budget(nsm: MockNsm, sealed_cap2: bytes) -> None:
    ledgers = MemoryLedgers()
    first, _ = job(sealed_cap2, ledgers, nsm, job_id="first")
    assert error_of(first) is None
    [reserved] = [m for m in first if isinstance(m, AuditEvent) and m.kind == "budget_reserved"]
    assert reserved.fields["slot"] == 0 and reserved.fields["steps"] == 2
    again, kms = job(sealed_cap2, ledgers, nsm, job_id="first")  # the same job id is no excuse
    error = error_of(again)
    assert error is not None and error.code == "budget" and kms.calls == []


def test_two_concurrent_enclaves_reserving_the_last_budget_exactly_one_wins(
    nsm: MockNsm, sealed_cap2: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ledgers = MemoryLedgers()
    store = ledgers.store(DATASET)
    # Each enclave passes its pre-key check on the empty ledger; both then race for slot 0.
    both_checked = threading.Barrier(2, timeout=20)
    real_create = store.create
    first_try = threading.local()

    def create(seq: int, data: bytes) -> bool:
        if not getattr(first_try, "done", False):
            first_try.done = True
            both_checked.wait()
        return real_create(seq, data)

    store.create = create  # type: ignore[method-assign]  # interleave the two enclaves
    results: dict[str, tuple[list[Message], StubKms]] = {}

    def run(name: str) -> None:
        results[name] = job(sealed_cap2, ledgers, nsm, job_id=name)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("enclave-a", "enclave-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    outcomes = {name: error_of(replies) for name, (replies, _) in results.items()}
    winners = [name for name, err in outcomes.items() if err is None]
    losers = [err for err in outcomes.values() if err is not None]
    assert len(winners) == 1 and len(losers) == 1
    # The loser learnt of the race after its data key came back: the one constant Error,
    # the reason in its log by class only.
    assert (losers[0].code, losers[0].message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert "job failed after the data was opened (LedgerBudgetExceeded)" in caplog.messages
    assert [e.job_id for e in entries(ledgers)] == winners
    # The loser trained nothing: no JobResult.
    loser = next(name for name in results if name not in winners)
    assert not [m for m in results[loser][0] if isinstance(m, JobResult)]


def pinned(nsm: MockNsm) -> AttestationPolicy:
    """The policy that pins the mock enclave's own image (PCR0)."""
    return AttestationPolicy.from_pcrs({0: nsm.describe_pcr(0).value})


def _checkpoints(replies: list[Message]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    current: list[bytes] = []
    step = -1
    for msg in replies:
        if isinstance(msg, CheckpointBegin):
            current, step = [], msg.step
        elif isinstance(msg, CheckpointData):
            current.append(msg.data)
        elif isinstance(msg, CheckpointEnd):
            out[step] = b"".join(current)
    return out


def test_a_forked_checkpoint_resumed_twice_pays_twice(nsm: MockNsm, ca: LocalCa, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    spec = job_spec(steps=4, noise=2.0, checkpoint_every=2)
    replies, _ = job(sealed_cap3, ledgers, nsm, job_id="forked", spec=spec, loop=Trainer)
    assert error_of(replies) is None
    checkpoint = _checkpoints(replies)[2]
    for _ in range(2):
        resumed, _ = job(sealed_cap3, ledgers, nsm, job_id="forked", spec=spec, loop=Trainer, resume=checkpoint)
        assert error_of(resumed) is None, resumed[-1]
    # The last certificate states the dataset's epsilon with all three reservations in it.
    [issued] = [m for m in resumed if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=pinned(nsm)).body
    paid = compose_epsilon([Segment(0.1, 2.0, 4), Segment(0.1, 2.0, 2), Segment(0.1, 2.0, 2)], 1e-5, "prv")
    [record] = body.datasets
    assert record.dataset_epsilon == pytest.approx(paid)
    assert record.dataset_epsilon > record.epsilon == pytest.approx(body.epsilon["prv"])
    # The first run reserved its 4 steps; each resume from step 2 reserved the 2 it ran again.
    assert [(e.job_id, e.steps) for e in entries(ledgers)] == [("forked", 4), ("forked", 2), ("forked", 2)]
    assert len({e.nonce for e in entries(ledgers)}) == 3


def test_a_parent_deleting_an_entry_blocks_the_dataset_before_any_key_use(nsm: MockNsm, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    for name in ("a", "b"):
        assert error_of(job(sealed_cap3, ledgers, nsm, job_id=name)[0]) is None
    del ledgers.store(DATASET).slots[0]
    replies, kms = job(sealed_cap3, ledgers, nsm, job_id="c")
    error = error_of(replies)
    assert error is not None and error.code == "budget" and "slot 0 is missing" in error.message
    assert kms.calls == []


def test_a_parent_rewriting_an_entry_blocks_the_dataset(nsm: MockNsm, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    for name in ("a", "b"):
        assert error_of(job(sealed_cap3, ledgers, nsm, job_id=name)[0]) is None
    ledgers.store(DATASET).slots[0] = b"cheaper history"
    error = error_of(job(sealed_cap3, ledgers, nsm, job_id="c")[0])
    assert error is not None and "rewritten or deleted" in error.message


def test_a_parent_replaying_or_writing_junk_neither_blocks_nor_hides_history(
    nsm: MockNsm, sealed_cap3: bytes
) -> None:
    ledgers = MemoryLedgers()
    assert error_of(job(sealed_cap3, ledgers, nsm, job_id="a")[0]) is None
    slots = ledgers.store(DATASET).slots
    slots[1] = slots[0]  # a replay of job a's entry
    slots[2] = b"\xa2dbodyAxcsigAy"  # junk shaped like an entry
    assert error_of(job(sealed_cap3, ledgers, nsm, job_id="b")[0]) is None
    assert sorted(slots) == [0, 1, 2, 3]
    assert [(e.seq, e.job_id) for e in entries(ledgers)] == [(0, "a"), (3, "b")]


def test_production_wiring_refuses_a_ledger_that_does_not_protect_its_entries(
    nsm: MockNsm, sealed_cap3: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    replies, _ = job(sealed_cap3, MemoryLedgers(protected=False), nsm)
    error = error_of(replies)
    # The store's answer to the reservation comes after the key: constant Error, class in the log.
    assert error is not None and (error.code, error.message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert "job failed after the data was opened (LedgerUnavailable)" in caplog.messages


def test_a_dataset_sealed_with_another_ledger_key_never_trains(
    nsm: MockNsm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = seal(tmp_path, max_epsilon=3.0, public_key_from=bytes(32))
    ledgers = MemoryLedgers()
    replies, kms = job(wrong, ledgers, nsm)
    error = error_of(replies)
    assert error is not None and (error.code, error.message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert "job failed after the data was opened (LedgerKeyMismatch)" in caplog.messages
    assert ledgers.store(DATASET).slots == {}


def test_an_enclave_without_a_ledger_backend_refuses_before_kms(nsm: MockNsm, sealed_cap3: bytes) -> None:
    listener = MemoryListener()
    parent = listener.connect()
    for msg in [HELLO, CREDS, JobStart("j", [DATASET]), job_spec(), *stream(0, DATASET, sealed_cap3)]:
        parent.send(msg)
    parent.shutdown_write()
    kms = StubKms()
    EnclaveRuntime(nsm, listener, lambda creds: kms, clock=lambda: FIXED_NOW, training_loop=RecordingLoop(),
                   limits=QUICK_LIMITS).serve(sessions=1)
    last = drain(parent)[-1]
    assert isinstance(last, Error) and "no ledger backend" in last.message and kms.calls == []
