"""A dataset's budget ledger read from the host: `hermetic budget show`.

The ledger's location, its public key and the cap come from the dataset's encryption
context (a sealed file's header, or the copy `hermetic seal --local` records in the
local appliance's state). Entries are decoded and verified by the enclave's own code
(`enclave.ledger.chain.verify_slots`), so the host counts exactly what an enclave
would: spent epsilon is recomputed from the valid entries, never read from anywhere.
Unprotected slots are accepted for `local:` ledgers only, as the local enclave does.
`s3://` ledgers are read with the caller's S3 client (default: boto3's credential chain),
from the same keys and with the same expected bucket owner as the enclave
(`enclave.ledger.s3`); the caller needs s3:ListBucket, s3:GetObject and
s3:GetObjectRetention, or every slot reads as unprotected and the ledger does not verify.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from enclave.ledger.chain import LedgerView, verify_slots
from enclave.ledger.local import LocalDirectoryStore
from enclave.ledger.location import LOCAL_SCHEME, S3_SCHEME, location_problem
from enclave.ledger.reserve import BUDGET_RTOL
from enclave.ledger.s3 import S3LedgerStore
from enclave.ledger.store import LedgerError, LedgerStore, LedgerUnavailable
from enclave.privacy.accountants import PRIMARY
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge, compose
from enclave.sealed.errors import MalformedHeader
from enclave.sealed.format import LEDGER_CONTEXT_KEY, LEDGER_PUBLIC_KEY_CONTEXT_KEY, validate_encryption_context

log = logging.getLogger(__name__)

_MAX_CONTEXT_FILE = 64 * 1024


@dataclass(frozen=True)
class BudgetReport:
    dataset_id: str
    ledger: str
    max_epsilon: float
    delta: float
    accountant: str
    valid: bool  # the chain verifies (no deleted or rewritten entry)
    spent_epsilon: float | None  # None when the ledger is damaged: nothing can be spent from it
    entries: tuple[dict[str, Any], ...] = ()
    ignored: tuple[dict[str, Any], ...] = ()
    problem: str | None = None
    note: str | None = None  # e.g. a local ledger directory that does not exist (yet) on this machine

    @property
    def remaining_epsilon(self) -> float | None:
        if self.spent_epsilon is None:
            return None
        return max(0.0, self.max_epsilon - self.spent_epsilon)

    @property
    def exhausted(self) -> bool:
        return self.spent_epsilon is not None and self.spent_epsilon >= self.max_epsilon * (1 - BUDGET_RTOL)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "ledger": self.ledger,
            "max_epsilon": self.max_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "spent_epsilon": self.spent_epsilon,
            "remaining_epsilon": self.remaining_epsilon,
            "valid": self.valid,
            "problem": self.problem,
            "note": self.note,
            "entries": list(self.entries),
            "ignored": list(self.ignored),
        }


def context_from_file(path: Path) -> dict[str, str]:
    """An encryption context recorded as JSON (what `seal --local` writes), validated."""
    try:
        with open(path, "rb") as fh:
            raw = json.loads(fh.read(_MAX_CONTEXT_FILE))
    except OSError as err:
        raise ConfigError(f"cannot read dataset context {path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(f"dataset context {path} is not valid JSON: {err}") from None
    try:
        validate_encryption_context(raw)
    except MalformedHeader as err:
        raise ConfigError(f"dataset context {path}: {err}") from None
    return dict(raw)


def open_ledger_store(location: str, dataset_id: str, s3_client: Any | None = None) -> LedgerStore:
    """The store a location names, as the host reads it (`s3_client` for `s3://` ledgers; default boto3's)."""
    problem = location_problem(location)
    if problem is not None:
        raise LedgerUnavailable(f"ledger location {location[:80]!r}: {problem}")
    if location.startswith(LOCAL_SCHEME):
        return LocalDirectoryStore(Path(location[len(LOCAL_SCHEME):]), dataset_id)
    if location.startswith(S3_SCHEME):
        if s3_client is None:
            import boto3  # imported on use: `hermetic --help` stays fast

            s3_client = boto3.session.Session().client("s3")
        return S3LedgerStore.for_dataset(location, dataset_id, s3_client)
    raise LedgerUnavailable(f"no ledger backend on this host for {location!r}")


def budget_report(
    context: Mapping[str, str],
    store: LedgerStore | None = None,
    accountant: str = PRIMARY,
    *,
    s3_client: Any | None = None,
) -> BudgetReport:
    """The dataset's cap, what its ledger spends, and every entry; `store` defaults to the context's
    location (read with `s3_client` when it is in S3)."""
    dataset_id, location = context["dataset_id"], context[LEDGER_CONTEXT_KEY]
    max_epsilon, delta = float(context["max_epsilon"]), float(context["delta"])
    store = store if store is not None else open_ledger_store(location, dataset_id, s3_client)
    note = None
    if isinstance(store, LocalDirectoryStore) and not store.directory.is_dir():
        # Empty either way, but say so: on another machine than the enclave's, this is not its ledger.
        note = f"ledger directory {store.directory} does not exist: no job has reserved on this machine"
    base = dict(dataset_id=dataset_id, ledger=location, max_epsilon=max_epsilon, delta=delta, accountant=accountant)
    slots = store.read_all()  # LedgerUnavailable: an error, not a verdict on the ledger
    try:
        view = verify_slots(slots, public_key=bytes.fromhex(context[LEDGER_PUBLIC_KEY_CONTEXT_KEY]),
                            dataset_id=dataset_id, accept_unprotected=location.startswith(LOCAL_SCHEME))
    except LedgerError as err:
        log.warning("ledger of %s does not verify: %s", dataset_id, err)
        return BudgetReport(**base, valid=False, spent_epsilon=None, problem=str(err))  # type: ignore[arg-type]
    if view.searches():
        base["accountant"] = "rdp"  # a ledger holding a search composes in RDP, whatever was asked
    return BudgetReport(
        **base,  # type: ignore[arg-type]
        valid=True,
        note=note,
        spent_epsilon=view.spent_epsilon(delta, accountant),
        entries=tuple(_entries_json(view, delta, accountant)),
        ignored=tuple({"slot": i.seq, "reason": i.reason} for i in view.ignored),
    )


def _entries_json(view: LedgerView, delta: float, accountant: str) -> list[dict[str, Any]]:
    out = []
    so_far: list[Segment] = []
    searches: list[SearchCharge] = []
    for verified in view.entries:
        entry = verified.entry
        so_far += entry.segments
        searches += [] if entry.search is None else [entry.search]
        out.append({
            "slot": entry.seq,
            "job_id": entry.job_id,
            "kind": entry.kind,
            "accountant": entry.accountant,
            "delta": entry.delta,
            "steps": entry.steps,
            "segments": [seg.to_dict() for seg in entry.segments],
            "created_at": datetime.fromtimestamp(entry.created_at, UTC).isoformat(timespec="seconds"),
            "protected": verified.protected,
            "sha256": verified.sha256,
            # The dataset's epsilon after this entry, all entries before it included.
            # From the first search on, the ledger composes in RDP, as the enclave composes it.
            "cumulative_epsilon": compose(so_far, searches, delta, accountant),
        } | ({} if entry.search is None else {"search": entry.search.to_dict()}))
    return out

