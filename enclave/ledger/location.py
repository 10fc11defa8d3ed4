"""Ledger locations as the data owner writes them into a dataset's encryption context.

    local:/ABSOLUTE/DIR      a directory on the machine running the (local, mock) enclave;
                             the dataset's slots are files in DIR/DATASET_ID/
    s3://BUCKET[/PREFIX]     an S3 bucket with Object Lock (enclave.ledger.s3)

The location is bound into the context KMS checks, so the enclave cannot be pointed
at another ledger without KMS refusing the data key. Syntax only here: which backends
an enclave can reach is its wiring's choice (`LedgerBackends`).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from enclave.ledger.store import LedgerStore, LedgerUnavailable

LOCAL_SCHEME = "local:"
S3_SCHEME = "s3://"
MAX_LOCATION = 1024
_S3 = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/=-]*)?")
_DATASET_DIR = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def location_problem(location: str) -> str | None:
    """Why `location` is not a ledger location, or None if it is one."""
    if not isinstance(location, str) or not location or len(location) > MAX_LOCATION:
        return f"a ledger location is a non-empty string of at most {MAX_LOCATION} characters"
    if location.startswith(LOCAL_SCHEME):
        path = location[len(LOCAL_SCHEME):]
        parts = path.split("/")
        if not path.startswith("/") or "\x00" in path or ".." in parts or any(c.isspace() for c in path):
            return f"a local ledger location is {LOCAL_SCHEME}/ABSOLUTE/DIR without '..' or spaces"
        return None
    if location.startswith(S3_SCHEME):
        if not _S3.fullmatch(location):
            return "an S3 ledger location is s3://BUCKET[/PREFIX] with a valid bucket name"
        return None
    return f"a ledger location starts with {LOCAL_SCHEME!r} or {S3_SCHEME!r}"


def local_location(directory: str) -> str:
    return LOCAL_SCHEME + directory


def dataset_dir_name(dataset_id: str) -> str:
    """`dataset_id` as one path component, refused if it could name anything else."""
    if not _DATASET_DIR.fullmatch(dataset_id):
        raise LedgerUnavailable(f"dataset id {dataset_id[:64]!r} cannot name a ledger directory")
    return dataset_id


def _no_backend(location: str, dataset_id: str) -> LedgerStore:
    raise LedgerUnavailable(f"this enclave has no ledger backend for {location!r} (dataset {dataset_id!r})")


@dataclass(frozen=True)
class LedgerBackends:
    """How an enclave reaches ledgers: `open_store(location, dataset_id)`, and whether slots the store
    does not protect from deletion count. Only the local wiring sets `accept_unprotected`: a
    local-directory ledger is only as safe as its directory's owner."""

    open_store: Callable[[str, str], LedgerStore] = _no_backend
    accept_unprotected: bool = False


#: No backend at all: every job on a sealed dataset is refused (the default until the wiring names one).
NO_LEDGERS = LedgerBackends()
