"""The session's audit trail: a hash chain of every security-relevant event.

Auditors want evidence, not claims. Each event the enclave records is an `AuditRecord`,
encoded as canonical CBOR with every float as float64 (`dumps_f64`, the certificate
body's encoder, so one value has exactly one encoding whatever its magnitude):

    {"seq": n, "type": text, "time": RFC 3339 UTC text, "fields": {text: value}, "prev": 32 bytes}

`prev` is SHA-256 of the previous record's encoding (32 zero bytes for the first), so
changing, dropping, reordering or inserting any record breaks a later link, and the
chain's head (SHA-256 of the last record's encoding) commits to the whole history. The
head and the record count go into the attested certificate body; the records
themselves leave through the egress gate after the certificate (`AuditLog`).

The first record is always `session_start` with the job id and a fresh 16-byte nonce
from the enclave's random source: two sessions of the same job, with the same events at
the same clock readings, still have different chains, so records of one session cannot
be spliced into another's.

`time` is read from the clock the certificate's `started_at`/`finished_at` come from,
formatted the same way (`format_time`), because it is the one clock a verifier already trusts as far as
it trusts the enclave.

The chain is closed by `close`, whose record (`certificate_issuing`) is the last one:
the certificate must contain the head, so the head cannot cover anything recorded after
the certificate is built, and an event recorded after it would be unattested and so
indistinguishable from a forgery. Nothing is appended after `close`. A session that
fails before its certificate releases no log for the same reason: nothing attests it.

The released file (`encode_log`) is canonical CBOR {"version": 1, "events": [record, ...]}:
one item, so the parent writes it as received and a verifier hashes each record exactly
as it re-encodes, the strict decoder having refused any other encoding.
"""
from __future__ import annotations

import hashlib
import hmac
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from enclave.certificate.checks import format_time
from enclave.errors import HermeticError
from enclave.hazmat.cbor import dumps_f64, strict_loads

__all__ = [
    "AUDIT_LOG_VERSION",
    "CLOSING_EVENT",
    "GENESIS",
    "MAX_EVENTS",
    "NONCE_BYTES",
    "SESSION_START",
    "AuditChain",
    "AuditLogError",
    "AuditRecord",
    "ChainSummary",
    "FieldValue",
    "decode_log",
    "encode_log",
    "record_to_json",
    "verify_chain",
]

AUDIT_LOG_VERSION = 1
GENESIS = bytes(32)
NONCE_BYTES = 16
SESSION_START = "session_start"
CLOSING_EVENT = "certificate_issuing"
#: A session records a few events per checkpoint, metric and trial; this bounds the
#: released message and what a hostile log file may cost to read.
MAX_EVENTS = 65536
MAX_FIELDS = 16
MAX_TEXT = 1024
#: The encoded log leaves as one message of one transport frame (1 MiB): the chain
#: refuses an event that would make it larger, which fails the job before its
#: certificate rather than after it.
MAX_LOG_SIZE = 1000 * 1024
# log -> events -> record -> fields -> value
_MAX_DEPTH = 5

FieldValue = str | int | float | bool | bytes
Clock = Callable[[], datetime]


class AuditLogError(HermeticError):
    """An audit log is malformed, or its chain does not hold."""

    # Its head is part of the certificate: a chain that cannot be closed is a certificate failure.
    code = "certificate"


def _text(value: Any, what: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_TEXT:
        raise AuditLogError(f"{what} is not a text string of 1..{MAX_TEXT} characters")
    return value


def _field_value(value: Any, what: str) -> FieldValue:
    # Exact types only: the encoding (and so the hash) must not depend on a subclass.
    if type(value) is str:
        if len(value) > MAX_TEXT:
            raise AuditLogError(f"{what} is longer than {MAX_TEXT} characters")
        return value
    if type(value) in (int, bool, float, bytes):
        if type(value) is bytes and len(value) > 64:
            raise AuditLogError(f"{what} is longer than 64 bytes")
        return value  # type: ignore[no-any-return]
    raise AuditLogError(f"{what} is a {type(value).__name__}, not text, a number, a bool or bytes")


@dataclass(frozen=True)
class AuditRecord:
    """One event of the chain (module docstring for the wire form)."""

    seq: int
    type: str
    time: str
    fields: Mapping[str, FieldValue] = field(hash=False)
    prev: bytes

    def __post_init__(self) -> None:
        if type(self.seq) is not int or not 0 <= self.seq < MAX_EVENTS:
            raise AuditLogError(f"event seq {self.seq!r} is outside 0..{MAX_EVENTS - 1}")
        _text(self.type, f"event {self.seq} type")
        _text(self.time, f"event {self.seq} time")
        if not isinstance(self.fields, Mapping) or len(self.fields) > MAX_FIELDS:
            raise AuditLogError(f"event {self.seq} fields is not a map of at most {MAX_FIELDS} entries")
        checked = {_text(k, f"event {self.seq} field name"): _field_value(v, f"event {self.seq} field {k!r}")
                   for k, v in self.fields.items()}
        object.__setattr__(self, "fields", MappingProxyType(dict(sorted(checked.items()))))
        if type(self.prev) is not bytes or len(self.prev) != 32:
            raise AuditLogError(f"event {self.seq} prev is not 32 bytes")

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "time": self.time, "fields": dict(self.fields),
                "prev": self.prev}

    def encode(self) -> bytes:
        return dumps_f64(self.to_wire())

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def from_wire(cls, raw: Any, index: int) -> AuditRecord:
        if not isinstance(raw, Mapping) or set(raw) != {"seq", "type", "time", "fields", "prev"}:
            raise AuditLogError(f"event {index} is not a map of seq, type, time, fields, prev")
        return cls(seq=raw["seq"], type=raw["type"], time=raw["time"], fields=raw["fields"], prev=raw["prev"])


class AuditChain:
    """The enclave's append-only chain for one session; closed once, by `close`."""

    def __init__(self, job_id: str, nonce: bytes, clock: Clock) -> None:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the session nonce must be {NONCE_BYTES} bytes")
        self._clock = clock
        self._records: list[AuditRecord] = []
        self._closed = False
        # The log map, its version and the events array's head: less than this.
        self._size = 32
        # KMS calls and metric releases may come from other threads than the session's.
        self._lock = threading.Lock()
        self.append(SESSION_START, job_id=job_id, nonce=bytes(nonce))

    @property
    def records(self) -> tuple[AuditRecord, ...]:
        return tuple(self._records)

    @property
    def head(self) -> bytes:
        return self._records[-1].digest()

    @property
    def count(self) -> int:
        return len(self._records)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, type_: str, /, **fields: FieldValue) -> AuditRecord:
        with self._lock:
            return self._append(type_, fields)

    def _append(self, type_: str, fields: Mapping[str, FieldValue]) -> AuditRecord:
        if self._closed:
            raise AuditLogError(f"the audit chain is closed; {type_!r} cannot be recorded")
        if len(self._records) >= MAX_EVENTS:
            raise AuditLogError(f"the audit chain holds {MAX_EVENTS} events already")
        prev = self._records[-1].digest() if self._records else GENESIS
        record = AuditRecord(seq=len(self._records), type=type_, time=format_time(self._clock()),
                             fields=fields, prev=prev)
        size = len(record.encode())
        if self._size + size > MAX_LOG_SIZE:
            raise AuditLogError(f"the audit log would exceed {MAX_LOG_SIZE} bytes at event {record.seq}")
        self._size += size
        self._records.append(record)
        return record

    def close(self, **fields: FieldValue) -> tuple[bytes, int]:
        """Record `certificate_issuing` and fix the chain: the (head, count) the certificate states."""
        with self._lock:
            self._append(CLOSING_EVENT, fields)
            self._closed = True
            return self._records[-1].digest(), len(self._records)


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    """A JSON-ready form for people: byte strings (prev, the nonce) as lowercase hex.

    Only the CBOR file is evidence: this rendering is not hashed and cannot be verified.
    """
    def value(v: FieldValue) -> Any:
        return v.hex() if isinstance(v, bytes) else v

    return {"seq": record.seq, "type": record.type, "time": record.time,
            "fields": {k: value(v) for k, v in record.fields.items()}, "prev": record.prev.hex(),
            "sha256": record.digest().hex()}


def encode_log(records: Sequence[AuditRecord]) -> bytes:
    """The released log file: canonical CBOR {"version": 1, "events": [record, ...]}."""
    return dumps_f64({"version": AUDIT_LOG_VERSION, "events": [r.to_wire() for r in records]})


def decode_log(data: bytes) -> tuple[AuditRecord, ...]:
    """The records of a log file; AuditLogError unless it is exactly a canonical version 1 log."""
    item = strict_loads(data, what="audit log", error=AuditLogError, canonical=dumps_f64,
                        max_depth=_MAX_DEPTH, max_size=MAX_LOG_SIZE)
    if not isinstance(item, Mapping) or set(item) != {"version", "events"}:
        raise AuditLogError("audit log is not a map of version and events")
    if type(item["version"]) is not int or item["version"] != AUDIT_LOG_VERSION:
        raise AuditLogError(f"audit log version is not {AUDIT_LOG_VERSION}")
    events = item["events"]
    if type(events) is not list or len(events) > MAX_EVENTS:
        raise AuditLogError(f"audit log events is not a list of at most {MAX_EVENTS}")
    return tuple(AuditRecord.from_wire(raw, i) for i, raw in enumerate(events))


@dataclass(frozen=True)
class ChainSummary:
    """A verified chain: its head, its count, and how many events of each type it holds."""

    head: bytes
    count: int
    by_type: Mapping[str, int]
    job_id: str


def verify_chain(records: Iterable[AuditRecord], *, head: bytes, count: int) -> ChainSummary:
    """Check every link and the head/count a certificate states; AuditLogError names the first bad event.

    Links are checked before the head so that the error points at where the chain was
    changed rather than only saying that its end differs.
    """
    items = tuple(records)
    if not items:
        raise AuditLogError("the audit log holds no event")
    prev = GENESIS
    for index, record in enumerate(items):
        if record.seq != index:
            raise AuditLogError(f"event {index}: seq is {record.seq}, expected {index}")
        if not hmac.compare_digest(record.prev, prev):
            raise AuditLogError(f"event {index} ({record.type}): prev does not match the previous event")
        if index == 0 and (record.type != SESSION_START or set(record.fields) != {"job_id", "nonce"}):
            raise AuditLogError("event 0 is not a session_start with job_id and nonce")
        prev = record.digest()
    if len(items) != count:
        raise AuditLogError(f"event {min(len(items), count)}: the log holds {len(items)} events, "
                            f"the certificate states {count}")
    if not hmac.compare_digest(prev, head):
        raise AuditLogError(f"event {len(items) - 1} ({items[-1].type}): the chain head is not the certificate's")
    if items[-1].type != CLOSING_EVENT:
        raise AuditLogError(f"event {len(items) - 1} is a {items[-1].type}, not the closing {CLOSING_EVENT}")
    job_id = items[0].fields["job_id"]
    return ChainSummary(head=prev, count=len(items), by_type=MappingProxyType(dict(Counter(r.type for r in items))),
                        job_id=str(job_id))
