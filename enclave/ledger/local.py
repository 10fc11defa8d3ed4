"""The local-directory ledger backend, for `hermetic local up` and tests.

Slot `seq` of dataset D is the file ROOT/D/SEQ.entry (SEQ zero-padded to 10 digits).
`create` writes a temporary file (O_CREAT|O_EXCL, 0600), fsyncs it, then hard-links it to
the slot's name: link() fails if the name exists, so a slot is taken whole or not at
all and never overwritten, and a reader never sees half an entry; the directory is
fsynced after. Every slot is reported unprotected: whoever owns the directory can delete
or rewrite files, so a local-directory ledger is only as safe as its directory's owner
(deleting the newest entries cannot be detected). `local_backends` is what the mock
enclave's wiring gives the runtime.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from enclave.ledger.location import LOCAL_SCHEME, LedgerBackends, dataset_dir_name, local_location
from enclave.ledger.store import MAX_SLOT_BYTES, MAX_SLOTS, LedgerStore, LedgerUnavailable, StoredSlot

_SLOT = re.compile(r"(\d{10})\.entry")


def slot_name(seq: int) -> str:
    return f"{seq:010d}.entry"


class LocalDirectoryStore:
    """One dataset's slots in ROOT/DATASET_ID/ (see the module docstring)."""

    def __init__(self, root: Path, dataset_id: str) -> None:
        self._root = Path(root)
        self._dir = self._root / dataset_dir_name(dataset_id)

    @property
    def location(self) -> str:
        return local_location(str(self._root))

    @property
    def directory(self) -> Path:
        return self._dir

    def read_all(self) -> list[StoredSlot]:
        try:
            names = sorted(n for n in os.listdir(self._dir) if _SLOT.fullmatch(n))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise LedgerUnavailable(f"cannot list ledger directory {self._dir}: {err.strerror}") from None
        if len(names) > MAX_SLOTS:
            raise LedgerUnavailable(f"ledger directory {self._dir} holds more than {MAX_SLOTS} slots")
        slots = []
        for name in names:
            try:
                with open(self._dir / name, "rb") as fh:
                    data = fh.read(MAX_SLOT_BYTES + 1)
            except FileNotFoundError:
                continue  # deleted while listing: the gap check sees it on the next read
            except OSError as err:
                raise LedgerUnavailable(f"cannot read ledger slot {self._dir / name}: {err.strerror}") from None
            slots.append(StoredSlot(int(name[:10]), data, protected=False))
        return slots

    def create(self, seq: int, data: bytes) -> bool:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self._dir / f".{slot_name(seq)}.{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, self._dir / slot_name(seq))
                except FileExistsError:
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            dir_fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise LedgerUnavailable(f"cannot write ledger slot {seq} in {self._dir}: {err.strerror}") from None
        return True


def local_backends(root: Path) -> LedgerBackends:
    """Ledgers in `root` only, unprotected slots accepted: the local (mock) enclave's wiring."""
    root = Path(root).resolve()
    expected = local_location(str(root))

    def open_store(location: str, dataset_id: str) -> LedgerStore:
        if location != expected:
            raise LedgerUnavailable(
                f"ledger {location!r} is not this local enclave's ledger {expected!r}"
                if location.startswith(LOCAL_SCHEME) else f"this local enclave has no ledger backend for {location!r}"
            )
        return LocalDirectoryStore(root, dataset_id)

    return LedgerBackends(open_store=open_store, accept_unprotected=True)
