"""One budget-ledger entry: a signed reservation of privacy loss on a dataset.

Stored bytes (one slot of a `LedgerStore`) are canonical CBOR ``{"body": bytes, "sig": bytes}``:
`sig` is Ed25519 over `body` with the dataset's ledger key (`enclave.hazmat.ledger_key`),
and `body` is the canonical CBOR map of a `LedgerEntry`::

    version     1
    dataset_id  text    the dataset whose budget this spends
    seq         uint    the slot the entry was written to (a copy in another slot is void)
    prev        text    SHA-256 hex of the previous valid entry's stored bytes ("" for the first)
    job_id      text
    nonce       bytes   16 random bytes of the session that wrote it
    kind        text    "reserve": this much privacy loss is spent, whether or not the job finishes
    accountant  text    the job's accountant ("prv", "rdp")
    delta       float   the job's delta
    segments    [[q, sigma, steps], ...]   what the job may run
    created_at  uint    unix seconds (the enclave's clock; informational)

A hyper-parameter search is one entry of version 2 and kind "search", with
`segments` empty and one more key::

    search      {"runs": [[q, sigma, steps], ...], "distribution": text, "mean": float,
                 "shape": float | null}    (`enclave.privacy.searches.SearchCharge`)

Version 2 because an older reader must not take the entry for a plain reservation:
it refuses the unknown version as junk, and the prev chain of any later entry then
shows the ledger damaged rather than under-counted. Reservations stay version 1,
byte for byte, so existing ledgers and their known answers are unchanged.

`decode_entry` checks the signature before it reads the body, and any defect raises
`InvalidEntry`; what an invalid slot means for the ledger is `enclave.ledger.chain`'s call.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from enclave.errors import HermeticError
from enclave.hazmat.cbor import dumps, strict_loads
from enclave.hazmat.ledger_key import SIGNATURE_BYTES, LedgerSigningKey, verify_signature
from enclave.ledger.store import MAX_SLOT_BYTES, LedgerError
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge

__all__ = ["ENTRY_VERSION", "KIND_RESERVE", "KIND_SEARCH", "SEARCH_VERSION", "InvalidEntry", "LedgerEntry",
           "decode_entry", "encode_entry", "stored_sha256"]

ENTRY_VERSION = 1
KIND_RESERVE = "reserve"
KIND_SEARCH = "search"
SEARCH_VERSION = 2
_VERSIONS = {KIND_RESERVE: ENTRY_VERSION, KIND_SEARCH: SEARCH_VERSION}
NONCE_BYTES = 16
MAX_SEGMENTS = 64
_MAX_TEXT = 256
_BODY_KEYS = frozenset({"version", "dataset_id", "seq", "prev", "job_id", "nonce", "kind", "accountant", "delta",
                        "segments", "created_at"})


class InvalidEntry(LedgerError):
    """A slot's bytes are not a well-formed entry signed with the dataset's ledger key."""


def _text(value: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (not value and not empty):
        raise InvalidEntry(f"entry {what} must be {'a' if empty else 'a non-empty'} string of at most {_MAX_TEXT}")
    return value


def _uint(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**63:
        raise InvalidEntry(f"entry {what} must be a non-negative integer")
    return value


@dataclass(frozen=True)
class LedgerEntry:
    dataset_id: str
    seq: int
    prev: str
    job_id: str
    nonce: bytes
    accountant: str
    delta: float
    segments: tuple[Segment, ...]
    created_at: int
    kind: str = KIND_RESERVE
    version: int = ENTRY_VERSION
    search: SearchCharge | None = None  # kind "search" only

    def __post_init__(self) -> None:
        _text(self.dataset_id, "dataset_id")
        _uint(self.seq, "seq")
        if not isinstance(self.prev, str) or (self.prev and (len(self.prev) != 64
                                                             or self.prev.strip("0123456789abcdef"))):
            raise InvalidEntry("entry prev must be empty or 64 lowercase hex digits")
        _text(self.job_id, "job_id")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_BYTES:
            raise InvalidEntry(f"entry nonce must be {NONCE_BYTES} bytes")
        if not isinstance(self.kind, str) or self.kind not in _VERSIONS:
            raise InvalidEntry(f"entry kind {self.kind!r} is not one of {', '.join(_VERSIONS)}")
        if self.version != _VERSIONS[self.kind] or isinstance(self.version, bool):
            raise InvalidEntry(f"entry version {self.version!r} is not {_VERSIONS[self.kind]} (kind {self.kind})")
        if not isinstance(self.accountant, str) or self.accountant not in ACCOUNTANT_NAMES:
            raise InvalidEntry(f"entry accountant {self.accountant!r} is not one of {sorted(ACCOUNTANT_NAMES)}")
        if not isinstance(self.delta, float) or not math.isfinite(self.delta) or not 0.0 < self.delta < 1.0:
            raise InvalidEntry("entry delta must be a float in (0, 1)")
        if self.kind == KIND_SEARCH:
            if not isinstance(self.search, SearchCharge) or self.segments != ():
                raise InvalidEntry("a search entry has a search and no segments")
        elif self.search is not None:
            raise InvalidEntry("only a search entry has a search")
        elif not isinstance(self.segments, tuple) or not 0 < len(self.segments) <= MAX_SEGMENTS:
            raise InvalidEntry(f"entry segments must be 1..{MAX_SEGMENTS} segments")
        if not all(isinstance(s, Segment) and s.steps > 0 for s in self.segments):
            raise InvalidEntry("entry segments must each run at least one step")
        _uint(self.created_at, "created_at")

    @property
    def steps(self) -> int:
        """Steps reserved; for a search, the longest trial's."""
        if self.search is not None:
            return max(r.steps for r in self.search.runs)
        return sum(s.steps for s in self.segments)

    def body(self) -> dict[str, Any]:
        body = {
            "version": self.version,
            "dataset_id": self.dataset_id,
            "seq": self.seq,
            "prev": self.prev,
            "job_id": self.job_id,
            "nonce": self.nonce,
            "kind": self.kind,
            "accountant": self.accountant,
            "delta": self.delta,
            "segments": [[s.q, s.sigma, s.steps] for s in self.segments],
            "created_at": self.created_at,
        }
        if self.search is not None:
            body["search"] = self.search.to_dict()
        return body

    def body_bytes(self) -> bytes:
        return dumps(self.body())


def encode_entry(entry: LedgerEntry, key: LedgerSigningKey) -> bytes:
    """The bytes to store in slot `entry.seq`: the body and its signature."""
    body = entry.body_bytes()
    data = dumps({"body": body, "sig": key.sign(body)})
    if len(data) > MAX_SLOT_BYTES:
        raise InvalidEntry(f"entry is {len(data)} bytes, a slot holds at most {MAX_SLOT_BYTES}")
    return data


def stored_sha256(data: bytes) -> str:
    """What the next entry's `prev` names: SHA-256 hex of the stored bytes."""
    return hashlib.sha256(data).hexdigest()


def decode_entry(data: bytes, public_key: bytes) -> LedgerEntry:
    """The entry in `data` if it is canonical, signed with `public_key` and well-formed; else InvalidEntry."""
    outer = strict_loads(data, what="ledger entry", error=InvalidEntry, canonical=dumps, max_depth=2,
                         max_size=MAX_SLOT_BYTES)
    if not isinstance(outer, dict) or set(outer) != {"body", "sig"}:
        raise InvalidEntry("ledger entry must be a map of exactly body and sig")
    body, sig = outer["body"], outer["sig"]
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise InvalidEntry(f"ledger entry body must be bytes and sig {SIGNATURE_BYTES} bytes")
    # Nothing in the body is read before the signature says the ledger key wrote it.
    if not verify_signature(public_key, sig, body):
        raise InvalidEntry("ledger entry signature does not verify with the dataset's ledger key")
    fields = strict_loads(body, what="ledger entry body", error=InvalidEntry, canonical=dumps, max_depth=5)
    keys = _BODY_KEYS | {"search"} if isinstance(fields, dict) and fields.get("kind") == KIND_SEARCH else _BODY_KEYS
    if not isinstance(fields, dict) or set(fields) != keys:
        raise InvalidEntry(f"ledger entry body must have exactly the keys {', '.join(sorted(keys))}")
    search = None
    if "search" in fields:
        try:
            search = SearchCharge.from_dict(fields["search"])
        except HermeticError as err:
            raise InvalidEntry(f"entry search is invalid: {err}") from None
    raw_segments = fields["segments"]
    if not isinstance(raw_segments, list) or len(raw_segments) > MAX_SEGMENTS:
        raise InvalidEntry(f"entry segments must be a list of at most {MAX_SEGMENTS}")
    segments = []
    for item in raw_segments:
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], float)
                or not isinstance(item[1], float) or isinstance(item[2], bool) or not isinstance(item[2], int)):
            raise InvalidEntry("entry segment must be [q float, sigma float, steps int]")
        try:
            segments.append(Segment(item[0], item[1], item[2]))
        except HermeticError as err:
            raise InvalidEntry(f"entry segment is invalid: {err}") from None
    return LedgerEntry(
        dataset_id=fields["dataset_id"],
        seq=fields["seq"],
        prev=fields["prev"],
        job_id=fields["job_id"],
        nonce=fields["nonce"],
        accountant=fields["accountant"],
        delta=fields["delta"],
        segments=tuple(segments),
        created_at=fields["created_at"],
        kind=fields["kind"],
        version=fields["version"],
        search=search,
    )
