"""Where a dataset's budget ledger lives: numbered, write-once slots.

A store knows nothing of entries or signatures (enclave.ledger decides what a slot's
bytes mean); it only promises that `create` never overwrites a slot, and says for each
slot it returns whether it can also never be deleted or overwritten by anyone
(`protected`: Object Lock in compliance mode on S3; never for a local directory, whose
owner can delete files). Backends: a local directory (enclave.ledger.local) for
`hermetic local up`, and S3 with conditional writes (enclave.ledger.s3) on AWS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from enclave.errors import HermeticError

# A ledger longer than this is refused rather than read: it bounds memory and time, and a
# parent filling slots with junk cannot make the enclave read without end.
MAX_SLOTS = 100_000
# One entry is a few hundred bytes; anything much larger is junk and is not read whole.
MAX_SLOT_BYTES = 64 * 1024
# A dataset id as one path component (a local directory, an S3 key segment): never '.' or '..'.
MAX_DATASET_DIR = 128
_DATASET_DIR = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class LedgerError(HermeticError):
    """A budget ledger cannot be read, written or trusted."""

    code = "budget"


class LedgerUnavailable(LedgerError):
    """The ledger's store did not answer, or answered with an error."""


def dataset_dir_name(dataset_id: str) -> str:
    """`dataset_id` as one path component, refused if it could name anything else."""
    if not _DATASET_DIR.fullmatch(dataset_id):
        raise LedgerUnavailable(f"dataset id {dataset_id[:64]!r} cannot name a ledger directory")
    return dataset_id


@dataclass(frozen=True)
class StoredSlot:
    """The bytes in slot `seq`, and whether the store guarantees they stay as they are."""

    seq: int
    data: bytes
    protected: bool


class LedgerStore(Protocol):
    """Numbered write-once slots of one dataset's ledger."""

    @property
    def location(self) -> str:
        """The location URI sealed into the dataset's encryption context."""
        ...

    def read_all(self) -> list[StoredSlot]:
        """Every slot present, ordered by `seq` (at most MAX_SLOTS; slots over MAX_SLOT_BYTES
        are returned with their first MAX_SLOT_BYTES + 1 bytes so the reader can reject them)."""
        ...

    def create(self, seq: int, data: bytes) -> bool:
        """Write `data` to slot `seq` if nobody has; True if this call wrote it, False if the
        slot was already taken. Raises LedgerUnavailable when the store fails."""
        ...
