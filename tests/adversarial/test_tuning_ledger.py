"""A hyper-parameter search against the budget ledger, through the enclave runtime.

A search is reserved whole, in one "search" entry, before its first trial; a ledger
holding one composes in RDP; a search that would pass the cap is refused before KMS
is asked for the data key; a rewritten search entry is damage; a search is not resumed."""
from __future__ import annotations

import pytest
from dp_accounting import dp_event as ev
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.chain import LedgerDamaged
from enclave.ledger.entry import KIND_SEARCH, SEARCH_VERSION, decode_entry
from enclave.ledger.reserve import read_view
from enclave.privacy import rdp
from enclave.transport.messages import RESUME_STREAM, AuditEvent, JobStart, Message, TrainingJob
from parent.local.mock_nsm import MockNsm
from tests.adversarial.test_ledger_runtime import DATASET, entries, error_of, job, sealed_cap2, sealed_cap3
from tests.enclave.test_runtime import CREDS, DATA_KEY, HELLO, KEY_ARN, RecordingLoop, StubKms, run_session, stream
from tests.support.ledgers import MemoryLedgers
from tests.support.specs import mlp_spec

__all__ = ["sealed_cap2", "sealed_cap3"]  # module fixtures, shared

TUNING = """[eval]
public = "pub"
[tuning]
lr = [0.05, 0.1]
trials = {{ distribution = "geometric", mean = {mean} }}
select = {{ metric = "accuracy/pub" }}
"""


def tuning_job(*, noise: float = 1.5, mean: float = 3.0) -> TrainingJob:
    text = mlp_spec(key_id=KEY_ARN, name="tuning-test", steps=2, noise=noise, extra=TUNING.format(mean=mean))
    return TrainingJob(text.replace("noise_multiplier = ", 'accountant = "rdp"\nnoise_multiplier = '))


def reference(events: list[ev.DpEvent]) -> float:
    acc = dp_rdp.RdpAccountant(list(rdp.ORDERS))
    for e in events:
        acc.compose(e)
    return float(acc.get_epsilon(1e-5))


def run(q: float, sigma: float, steps: int) -> ev.DpEvent:
    return ev.SelfComposedDpEvent(ev.PoissonSampledDpEvent(q, ev.GaussianDpEvent(sigma)), steps)


def test_a_second_search_past_the_cap_is_refused_before_any_kms_request(nsm: MockNsm, sealed_cap2: bytes) -> None:
    ledgers = MemoryLedgers()
    first, kms = job(sealed_cap2, ledgers, nsm, job_id="search-1", spec=tuning_job())
    assert error_of(first) is None and kms.calls == ["Decrypt"]
    [entry] = entries(ledgers)
    assert (entry.kind, entry.version, entry.segments) == (KIND_SEARCH, SEARCH_VERSION, ())
    assert entry.search is not None and entry.search.mean == 3.0 and entry.search.distribution == "geometric"
    assert [(r.q, r.sigma, r.steps) for r in entry.search.runs] == [(0.1, 1.5, 2)]
    [reserved] = [m for m in first if isinstance(m, AuditEvent) and m.kind == "budget_reserved"]
    alone = reference([ev.RepeatAndSelectDpEvent(run(0.1, 1.5, 2), 3.0, 1.0)])
    assert reserved.fields["job_epsilon"] == pytest.approx(alone, rel=1e-6)

    second, kms = job(sealed_cap2, ledgers, nsm, job_id="search-2", spec=tuning_job())
    error = error_of(second)
    assert error is not None and error.code == "budget"
    assert "has spent epsilon" in error.message and "remaining" in error.message and "with a search" in error.message
    assert kms.calls == []
    assert len(entries(ledgers)) == 1


def test_a_ledger_with_a_search_composes_in_rdp(nsm: MockNsm, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    plain, _ = job(sealed_cap3, ledgers, nsm, job_id="plain")
    assert error_of(plain) is None
    search, _ = job(sealed_cap3, ledgers, nsm, job_id="search", spec=tuning_job(noise=2.0))
    assert error_of(search) is None
    [reserved] = [m for m in search if isinstance(m, AuditEvent) and m.kind == "budget_reserved"]
    expected = reference([run(0.1, 1.0, 2), ev.RepeatAndSelectDpEvent(run(0.1, 2.0, 2), 3.0, 1.0)])
    assert reserved.fields["dataset_epsilon"] == pytest.approx(expected, rel=1e-6)
    view = read_view(ledgers.store(DATASET), public_key=LedgerSigningKey(DATA_KEY, DATASET).public_key,
                     dataset_id=DATASET, accept_unprotected=False)
    assert view.spent_epsilon(1e-5, "prv") == pytest.approx(expected, rel=1e-6)


def test_a_rewritten_search_entry_is_damage(nsm: MockNsm, sealed_cap3: bytes) -> None:
    ledgers = MemoryLedgers()
    assert error_of(job(sealed_cap3, ledgers, nsm, job_id="search", spec=tuning_job(noise=2.0))[0]) is None
    assert error_of(job(sealed_cap3, ledgers, nsm, job_id="after")[0]) is None
    store = ledgers.store(DATASET)
    public = LedgerSigningKey(DATA_KEY, DATASET).public_key
    assert decode_entry(store.slots[0], public).search is not None
    # The parent makes the search look cheaper (a larger mean would cost more, a smaller one less).
    store.slots[0] = store.slots[0].replace(b"geometric", b"geometrix")
    with pytest.raises(LedgerDamaged, match="rewritten or deleted"):
        read_view(store, public_key=public, dataset_id=DATASET, accept_unprotected=False)
    replies, kms = job(sealed_cap3, ledgers, nsm, job_id="next")
    error = error_of(replies)
    assert error is not None and "damaged" in error.message and kms.calls == []


def test_a_search_is_not_resumed(nsm: MockNsm, sealed_cap3: bytes) -> None:
    kms = StubKms()
    messages: list[Message] = [HELLO, CREDS, JobStart("resumed", [DATASET, RESUME_STREAM]), tuning_job(),
                               *stream(0, DATASET, sealed_cap3)]
    replies = run_session(nsm, messages, kms=kms, ledgers=MemoryLedgers(),
                          training_loop=RecordingLoop())  # type: ignore[arg-type]  # a loop factory
    error = error_of(replies)
    assert error is not None and error.code == "config" and "cannot be resumed" in error.message
    assert kms.calls == []
