"""Spend a dataset's budget: check a job against its ledger, then reserve what it will run.

`check_budget` composes every valid entry's segments with the job's planned ones (one
accountant, the dataset's delta) and refuses the job if the total passes the cap. It
needs only the public key, so the enclave runs it before KMS is asked for the data key.

`reserve` writes the job's entry into the next free slot and returns only once the
store confirms it: re-read, the slot holds exactly these bytes, and (unless the backend
is the local directory) is protected from deletion. A taken slot means another writer
won the race: re-read, re-verify, re-check and try the next slot, or refuse if the job
no longer fits. One entry reserves all of a session's steps before the first one runs: a
job that crashes has spent its whole reservation (nothing is refunded, nothing is free).

Why one entry per session rather than one per checkpoint interval: a job the ledger
admitted then runs to its certificate, and of two enclaves racing for the last budget
exactly one trains; per-interval entries would waste less on a crash but let a concurrent
job take the budget mid-run and leave the first with sealed checkpoints and no
certificate. A resumed or forked checkpoint reserves the steps it runs again. The check
before the key (`check_budget` in the runtime) composes the job's whole plan, even for a
resume: the checkpoint arrives after the sealed dataset, so its step is not known yet.
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.chain import LedgerView, verify_slots
from enclave.ledger.entry import (
    ENTRY_VERSION,
    KIND_RESERVE,
    KIND_SEARCH,
    SEARCH_VERSION,
    LedgerEntry,
    encode_entry,
    stored_sha256,
)
from enclave.ledger.store import LedgerError, LedgerStore, LedgerUnavailable
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge, compose
from enclave.sealed.format import SealedHeader

log = logging.getLogger(__name__)

# Relative slack for the cap's float formatting in the context, as enclave.training.budget.
BUDGET_RTOL = 1e-9
# Each lost race means another job's entry landed; more than this many in a row is a store
# misbehaving (or a parent replaying "taken"), and the job is refused.
MAX_ATTEMPTS = 32


class LedgerBudgetExceeded(LedgerError):
    """The dataset's earlier jobs and this one together would pass the data owner's cap."""


@dataclass(frozen=True)
class Budget:
    """A dataset's cap, from its encryption context."""

    dataset_id: str
    max_epsilon: float
    delta: float


@dataclass(frozen=True)
class BudgetCheck:
    spent: float  # every valid entry, composed
    job: float  # this job's segments alone
    total: float  # both, composed
    max_epsilon: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.max_epsilon - self.spent)

    @property
    def fits(self) -> bool:
        return self.total <= self.max_epsilon * (1 + BUDGET_RTOL)


class LedgerKeyMismatch(LedgerError):
    """The ledger key derived from the released data key is not the one the context names."""


def dataset_budget(header: SealedHeader) -> Budget:
    return Budget(dataset_id=header.dataset_id, max_epsilon=header.max_epsilon, delta=header.delta)


def ledger_signing_key(header: SealedHeader, data_key: bytes) -> LedgerSigningKey:
    """The dataset's ledger key, derived from its data key; it must match the context's public key."""
    key = LedgerSigningKey(data_key, header.dataset_id)
    if not hmac.compare_digest(key.public_key, header.ledger_public_key):
        raise LedgerKeyMismatch(
            f"the ledger key derived from the data key of {header.dataset_id!r} is not the context's "
            f"ledger_public_key: the dataset was sealed with another key"
        )
    return key


def assess(view: LedgerView, segments: Sequence[Segment], budget: Budget, accountant: str,
           searches: Sequence[SearchCharge] = ()) -> BudgetCheck:
    spent = view.spent_epsilon(budget.delta, accountant)
    job = compose(segments, searches, budget.delta, accountant)
    total = compose([*view.segments(), *segments], [*view.searches(), *searches], budget.delta, accountant)
    return BudgetCheck(spent=spent, job=job, total=total, max_epsilon=budget.max_epsilon)


def check_budget(view: LedgerView, segments: Sequence[Segment], budget: Budget, accountant: str,
                 searches: Sequence[SearchCharge] = ()) -> BudgetCheck:
    """The check; raises LedgerBudgetExceeded (spent and remaining epsilon in its message) if it does not fit.

    With a search in the ledger or the job, every epsilon here is the RDP composition.
    """
    check = assess(view, segments, budget, accountant, searches)
    if not check.fits:
        raise LedgerBudgetExceeded(
            f"dataset {budget.dataset_id!r} has spent epsilon {check.spent:.4f} of its {budget.max_epsilon:g} "
            f"(remaining {check.remaining:.4f}, delta {budget.delta:g}, {len(view.entries)} entries); this job "
            f"(epsilon {check.job:.4f} alone) would bring it to {check.total:.4f} "
            f"({'rdp, with a search' if searches or view.searches() else accountant})"
        )
    return check


def read_view(store: LedgerStore, *, public_key: bytes, dataset_id: str, accept_unprotected: bool) -> LedgerView:
    return verify_slots(store.read_all(), public_key=public_key, dataset_id=dataset_id,
                        accept_unprotected=accept_unprotected)



def check_header_budget(
    store: LedgerStore, header: SealedHeader, segments: Sequence[Segment], accountant: str, *, accept_unprotected: bool,
    searches: Sequence[SearchCharge] = (),
) -> BudgetCheck:
    """The header's ledger, read and verified with its key, plus the job against its cap (check_budget)."""
    view = read_view(store, public_key=header.ledger_public_key, dataset_id=header.dataset_id,
                     accept_unprotected=accept_unprotected)
    return check_budget(view, segments, dataset_budget(header), accountant, searches)

@dataclass(frozen=True)
class Reservation:
    entry: LedgerEntry
    check: BudgetCheck  # `total` is the dataset's cumulative epsilon including this entry
    # SHA-256 hex of the entry's stored bytes: what the next entry's `prev` names, and what
    # the session's audit trail records, so an auditor can find this very entry in the store.
    sha256: str


def reserve(
    store: LedgerStore,
    key: LedgerSigningKey,
    *,
    budget: Budget,
    job_id: str,
    accountant: str,
    job_delta: float,
    segments: Sequence[Segment],
    nonce: bytes,
    now: Callable[[], int],
    accept_unprotected: bool,
    search: SearchCharge | None = None,
) -> Reservation:
    """Write this job's reservation into the ledger (see the module docstring); raises LedgerError.

    A search is reserved whole, in one entry of kind "search" (and no `segments`), before its
    first trial: its cost is the repeat-and-select bound, not a count of steps run.
    """
    searches = () if search is None else (search,)
    for _ in range(MAX_ATTEMPTS):
        view = read_view(store, public_key=key.public_key, dataset_id=budget.dataset_id,
                         accept_unprotected=accept_unprotected)
        check = check_budget(view, segments, budget, accountant, searches)
        entry = LedgerEntry(
            dataset_id=budget.dataset_id, seq=view.next_seq, prev=view.head, job_id=job_id, nonce=nonce,
            accountant=accountant, delta=job_delta, segments=tuple(segments), created_at=now(),
            kind=KIND_RESERVE if search is None else KIND_SEARCH,
            version=ENTRY_VERSION if search is None else SEARCH_VERSION, search=search,
        )
        data = encode_entry(entry, key)
        if not store.create(entry.seq, data):
            log.info("ledger slot %d of %s was taken: re-reading", entry.seq, budget.dataset_id)
            continue
        _confirm(store, entry.seq, data, accept_unprotected)
        log.info("reserved %d steps in slot %d of %s: epsilon %.4f of %.4f spent", entry.steps, entry.seq,
                 budget.dataset_id, check.total, budget.max_epsilon)
        return Reservation(entry, check, stored_sha256(data))
    raise LedgerUnavailable(f"could not reserve budget on {budget.dataset_id!r}: {MAX_ATTEMPTS} slots in a row taken")


def _confirm(store: LedgerStore, seq: int, data: bytes, accept_unprotected: bool) -> None:
    """Proceed only once the store shows the slot holding our bytes, protected where that is required."""
    for slot in store.read_all():
        if slot.seq == seq:
            if slot.data != data:
                raise LedgerUnavailable(f"ledger slot {seq} does not hold the reservation just written")
            if not slot.protected and not accept_unprotected:
                raise LedgerUnavailable(f"ledger slot {seq} is not protected from deletion: the job does not start")
            return
    raise LedgerUnavailable(f"ledger slot {seq} is missing right after the reservation was written")
