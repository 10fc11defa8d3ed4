"""Ledger locations as the data owner writes them into a dataset's encryption context.

    local:/ABSOLUTE/DIR              a directory on the machine running the (local, mock)
                                     enclave; the dataset's slots are files in DIR/DATASET_ID/
    s3://BUCKET/PREFIX?owner=ACCOUNT an S3 bucket with Object Lock owned by account ACCOUNT
                                     (enclave.ledger.s3); the dataset's slots are objects
                                     PREFIX/DATASET_ID/SEQ

The location is bound into the context KMS checks, so the enclave cannot be pointed
at another ledger without KMS refusing the data key. Syntax only here: which backends
an enclave can reach is its wiring's choice (`LedgerBackends`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from enclave.ledger.s3 import InvalidLedgerLocation, parse_s3_location
from enclave.ledger.store import LedgerStore, LedgerUnavailable, dataset_dir_name

LOCAL_SCHEME = "local:"
S3_SCHEME = "s3://"
MAX_LOCATION = 1024

__all__ = ["LOCAL_SCHEME", "S3_SCHEME", "LedgerBackends", "NO_LEDGERS", "dataset_dir_name", "local_location",
           "location_problem"]


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
        # One grammar: the S3 backend's own parser, canonical spelling only.
        try:
            parse_s3_location(location)
        except InvalidLedgerLocation as err:
            return str(err)
        return None
    return f"a ledger location starts with {LOCAL_SCHEME!r} or {S3_SCHEME!r}"


def local_location(directory: str) -> str:
    return LOCAL_SCHEME + directory


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
