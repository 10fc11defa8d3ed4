"""Read a dataset's ledger: which slots hold valid entries, what they spend, what is damaged.

The rules (the enclave's and `hermetic budget show`'s, one implementation):

* Slots must be numbered 0..n-1 with none missing: a missing slot before an existing one
  means an entry was deleted, and the whole ledger is refused (`LedgerDamaged`), fail closed.
* A slot whose bytes do not decode, are oversized, are not signed with the dataset's
  ledger key, or name another dataset or another slot (a replay) is junk: ignored, its
  slot consumed. Junk the parent writes can neither block nor change history.
* A valid entry's `prev` must be the SHA-256 of the previous valid entry's stored bytes.
  Only the ledger key's holders sign, and they chain onto what they verified, so a valid
  signature over a wrong `prev` means an earlier entry was rewritten or removed: refused
  (`LedgerDamaged`) rather than ignored, because ignoring it would under-count the spend.
* Entries compose under the caller's accountant, unless a search entry is among them:
  then the whole ledger composes in RDP (`enclave.privacy.searches.compose`).
* A valid entry in a slot the store does not protect from deletion is refused unless the
  caller accepts unprotected slots (the local backend only); unprotected junk is ignored.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from enclave.ledger.entry import InvalidEntry, LedgerEntry, decode_entry, stored_sha256
from enclave.ledger.store import MAX_SLOTS, LedgerError, StoredSlot
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge, compose


class LedgerDamaged(LedgerError):
    """The ledger lost or changed an entry: nothing is spent from it until its owner repairs it."""


@dataclass(frozen=True)
class VerifiedEntry:
    entry: LedgerEntry
    sha256: str
    protected: bool


@dataclass(frozen=True)
class IgnoredSlot:
    seq: int
    reason: str


@dataclass(frozen=True)
class LedgerView:
    """The valid entries of one dataset's ledger, in slot order, and the junk slots."""

    dataset_id: str
    entries: tuple[VerifiedEntry, ...]
    ignored: tuple[IgnoredSlot, ...]
    next_seq: int

    @property
    def head(self) -> str:
        """What the next entry's `prev` must be."""
        return self.entries[-1].sha256 if self.entries else ""

    def segments(self) -> list[Segment]:
        return [seg for e in self.entries for seg in e.entry.segments]

    def searches(self) -> list[SearchCharge]:
        return [e.entry.search for e in self.entries if e.entry.search is not None]

    def spent_epsilon(self, delta: float, accountant: str) -> float:
        """Every valid entry composed at `delta` (the dataset's): under `accountant`, or in RDP with a search."""
        return compose(self.segments(), self.searches(), delta, accountant)


def verify_slots(
    slots: Sequence[StoredSlot], *, public_key: bytes, dataset_id: str, accept_unprotected: bool
) -> LedgerView:
    """The ledger `slots` hold under the rules above; raises LedgerDamaged."""
    if len(slots) > MAX_SLOTS:
        raise LedgerDamaged(f"ledger of {dataset_id!r} holds more than {MAX_SLOTS} slots")
    ordered = sorted(slots, key=lambda s: s.seq)
    for expected, slot in enumerate(ordered):
        if expected and slot.seq == ordered[expected - 1].seq:
            raise LedgerDamaged(f"ledger of {dataset_id!r}: its store reported slot {slot.seq} twice")
        if slot.seq != expected:
            raise LedgerDamaged(
                f"ledger of {dataset_id!r} is damaged: slot {expected} is missing but slot {slot.seq} exists "
                f"(an entry was deleted)"
            )
    entries: list[VerifiedEntry] = []
    ignored: list[IgnoredSlot] = []
    head = ""
    for slot in ordered:
        try:
            entry = decode_entry(slot.data, public_key)
        except InvalidEntry as err:
            ignored.append(IgnoredSlot(slot.seq, str(err)))
            continue
        if entry.dataset_id != dataset_id:
            ignored.append(IgnoredSlot(slot.seq, f"entry is for dataset {entry.dataset_id!r}"))
            continue
        if entry.seq != slot.seq:
            ignored.append(IgnoredSlot(slot.seq, f"entry was written to slot {entry.seq} (a replay)"))
            continue
        if entry.prev != head:
            raise LedgerDamaged(
                f"ledger of {dataset_id!r} is damaged: the entry in slot {slot.seq} follows an entry that is "
                f"no longer there (an entry was rewritten or deleted)"
            )
        if not slot.protected and not accept_unprotected:
            raise LedgerDamaged(
                f"ledger of {dataset_id!r}: slot {slot.seq} holds an entry its store does not protect from deletion"
            )
        head = stored_sha256(slot.data)
        entries.append(VerifiedEntry(entry, head, slot.protected))
    return LedgerView(dataset_id, tuple(entries), tuple(ignored), len(ordered))
