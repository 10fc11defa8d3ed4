"""Budget-ledger stand-ins for tests: an in-memory store the test can tamper with."""
from __future__ import annotations

import threading
from collections.abc import Callable

from enclave.ledger.location import LedgerBackends
from enclave.ledger.store import LedgerStore, LedgerUnavailable, StoredSlot

MEMORY_LOCATION = "s3://test-ledgers/hermetic?owner=123456789012"


class MemoryLedgerStore:
    """Write-once numbered slots in a dict; `protected` is what every slot reports.

    Tests play the parent by editing `slots` directly (delete, rewrite, add junk), and
    can run `before_create(seq)` inside `create` to interleave a concurrent writer."""

    def __init__(self, *, protected: bool = True, location: str = MEMORY_LOCATION) -> None:
        self.slots: dict[int, bytes] = {}
        self.protected = protected
        self._location = location
        self._lock = threading.Lock()
        self.before_create: Callable[[int], None] | None = None
        self.reads = 0
        self.creates = 0
        self.fail = False

    @property
    def location(self) -> str:
        return self._location

    def read_all(self) -> list[StoredSlot]:
        if self.fail:
            raise LedgerUnavailable("the test store is down")
        self.reads += 1
        with self._lock:
            return [StoredSlot(seq, data, self.protected) for seq, data in sorted(self.slots.items())]

    def create(self, seq: int, data: bytes) -> bool:
        if self.fail:
            raise LedgerUnavailable("the test store is down")
        hook, self.before_create = self.before_create, None
        if hook is not None:
            hook(seq)
        self.creates += 1
        with self._lock:
            if seq in self.slots:
                return False
            self.slots[seq] = bytes(data)
            return True


class MemoryLedgers:
    """A LedgerBackends factory over one MemoryLedgerStore per dataset id."""

    def __init__(self, *, protected: bool = True) -> None:
        self.stores: dict[str, MemoryLedgerStore] = {}
        self.protected = protected
        self.opened: list[tuple[str, str]] = []

    def store(self, dataset_id: str) -> MemoryLedgerStore:
        return self.stores.setdefault(dataset_id, MemoryLedgerStore(protected=self.protected))

    def open_store(self, location: str, dataset_id: str) -> LedgerStore:
        self.opened.append((location, dataset_id))
        return self.store(dataset_id)

    def backends(self, *, accept_unprotected: bool = False) -> LedgerBackends:
        return LedgerBackends(open_store=self.open_store, accept_unprotected=accept_unprotected)
