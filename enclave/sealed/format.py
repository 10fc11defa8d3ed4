"""The sealed-file header (format "sealed-v1") and its encryption context.

Layout of a sealed file::

    magic    b"HRMTSEAL"                      8 bytes
    version  u16 big-endian (1)               2 bytes
    hlen     u32 big-endian                   4 bytes   (1 .. MAX_HEADER_SIZE)
    header   canonical CBOR map               hlen bytes
    chunks   (u32 big-endian ciphertext length || ciphertext-with-16-byte-tag)*

header_hash = SHA-256(magic || version || hlen || header) binds every chunk to the
header (it is part of each chunk's AAD, see `enclave.hazmat.chunk_aead`).

Header map (exactly these keys, canonical CBOR: sorted keys, definite lengths):
    key_id              text   KMS key id / ARN the data key was generated under
    encrypted_data_key  bytes  the KMS CiphertextBlob of the data key
    encryption_context  map    text -> text, exactly the keys its payload type requires
    alg                 text   "AES-256-GCM"
    chunk_size          uint   plaintext bytes per chunk (MIN_CHUNK_SIZE .. MAX_CHUNK_SIZE)
    payload             text   "arrow-ipc-stream" or "hermetic-checkpoint-v1"
    schema              bytes  datasets: the public Arrow schema of the records, exactly the
                               bytes the context's schema_sha256 hashes (the Arrow IPC
                               serialisation without schema-level metadata; field metadata
                               such as tensor shapes stays), 1 .. MAX_SCHEMA_SIZE bytes;
                               checkpoints: empty (a checkpoint has no dataset schema)

A header whose schema bytes do not hash to the context's schema_sha256 is refused
when it is built or decoded, so the schema is bound to the data key through the
context and anyone can check a job against the data's shape before a key is used
(`enclave.sealed.records.header_schema` parses it). A checkpoint carries empty bytes
rather than no key or null: every header has the same key set and field types, and
empty bytes are never a valid Arrow schema, so neither kind can pass for the other.
A header without the schema key (written before it existed) is refused by name.

Each payload type has its own encryption context (CONTEXT_KEYS_BY_PAYLOAD), whose
"hermetic:format" entry names it, so KMS never releases a dataset key for a file
posing as a checkpoint or the other way round:
    arrow-ipc-stream        (datasets)    ENCRYPTION_CONTEXT_KEYS, format "sealed-v1"
    hermetic-checkpoint-v1  (checkpoints) CHECKPOINT_CONTEXT_KEYS, format "checkpoint-v1"

The encryption context is what KMS binds to the data key, so the privacy budget
(max_epsilon, delta) and the record count cannot be changed without KMS refusing
to decrypt. A dataset's context also binds its budget ledger: `ledger`, the location
of the ledger every job on it spends from (`enclave.ledger.location`), and
`ledger_public_key`, the hex Ed25519 public key its entries are signed with (derived
from the data key, `enclave.hazmat.ledger_key`). A context without these two (sealed
before the ledger existed) is refused by name. `model_owner_keys` names who may receive
the model: the KMS keys (ids, ARNs or aliases; sorted, distinct, comma-separated) a job
on the data may seal its checkpoints under; a job naming another key, or a checkpoint
under another key, is refused. A context without it is refused by name.

Floats are written as `repr(float(x))` (shortest round-trip form) and integers as
plain decimal, so a context can be rebuilt byte-for-byte.
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from enclave.hazmat.cbor import dumps, strict_loads
from enclave.ledger.location import location_problem
from enclave.sealed.errors import (
    BadMagic,
    EncryptionContextMismatch,
    MalformedHeader,
    SchemaMismatch,
    UnsupportedVersion,
)

MAGIC = b"HRMTSEAL"
VERSION = 1
FORMAT_NAME = "sealed-v1"
ALG = "AES-256-GCM"
PAYLOAD = "arrow-ipc-stream"
CHECKPOINT_PAYLOAD = "hermetic-checkpoint-v1"
CHECKPOINT_FORMAT_NAME = "checkpoint-v1"

_PREFIX = struct.Struct(">8sHI")
PREFIX_SIZE = _PREFIX.size  # 14

MAX_HEADER_SIZE = 64 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024
# Small chunks are legal (tests use them); the floor only keeps overhead sane.
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 16 * 1024 * 1024

# KMS CiphertextBlob is at most 6144 bytes; key ids/ARNs/aliases at most 2048 chars.
_MAX_BLOB = 6144
_MAX_KEY_ID = 2048
_MAX_CONTEXT_VALUE = 1024
# With the other fields at their limits, a header with a schema this large still fits
# MAX_HEADER_SIZE (tests/enclave/sealed/test_format.py holds this).
MAX_SCHEMA_SIZE = 48 * 1024

FORMAT_CONTEXT_KEY = "hermetic:format"
LEDGER_CONTEXT_KEY = "ledger"
LEDGER_PUBLIC_KEY_CONTEXT_KEY = "ledger_public_key"
MODEL_OWNER_KEYS_CONTEXT_KEY = "model_owner_keys"
ENCRYPTION_CONTEXT_KEYS: frozenset[str] = frozenset(
    {
        "dataset_id",
        "owner",
        "max_epsilon",
        "delta",
        "record_count",
        "schema_sha256",
        LEDGER_CONTEXT_KEY,
        LEDGER_PUBLIC_KEY_CONTEXT_KEY,
        MODEL_OWNER_KEYS_CONTEXT_KEY,
        FORMAT_CONTEXT_KEY,
    }
)
# Datasets sealed before the budget ledger lack exactly these; they are refused by name.
_LEDGER_CONTEXT_KEYS = frozenset({LEDGER_CONTEXT_KEY, LEDGER_PUBLIC_KEY_CONTEXT_KEY})
CHECKPOINT_AUTH_TAG_CONTEXT_KEY = "auth_tag"
CHECKPOINT_CONTEXT_KEYS: frozenset[str] = frozenset(
    {FORMAT_CONTEXT_KEY, "job_id", "spec_sha256", "step", CHECKPOINT_AUTH_TAG_CONTEXT_KEY}
)
CONTEXT_KEYS_BY_PAYLOAD: Mapping[str, frozenset[str]] = MappingProxyType(
    {PAYLOAD: ENCRYPTION_CONTEXT_KEYS, CHECKPOINT_PAYLOAD: CHECKPOINT_CONTEXT_KEYS}
)
FORMAT_BY_PAYLOAD: Mapping[str, str] = MappingProxyType(
    {PAYLOAD: FORMAT_NAME, CHECKPOINT_PAYLOAD: CHECKPOINT_FORMAT_NAME}
)
_PAYLOADS = sorted(CONTEXT_KEYS_BY_PAYLOAD)
_HEADER_KEYS_WITHOUT_SCHEMA = frozenset(
    {"key_id", "encrypted_data_key", "encryption_context", "alg", "chunk_size", "payload"}
)
_HEADER_KEYS = _HEADER_KEYS_WITHOUT_SCHEMA | {"schema"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# One KMS key reference: an id, key ARN, alias name or alias ARN; no separator or space in it.
_KEY_REFERENCE = re.compile(r"[A-Za-z0-9:/_.+=@-]{1,256}")


def canonical_model_owner_keys(keys: Any) -> str:
    """The one textual form of the allowed model-owner keys: sorted, distinct, comma-separated."""
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise MalformedHeader("model_owner_keys must be a list of KMS key references")
    distinct = sorted(set(keys))
    if not distinct:
        raise MalformedHeader("model_owner_keys must name at least one KMS key")
    for key in distinct:
        if not _KEY_REFERENCE.fullmatch(key):
            raise MalformedHeader(f"model-owner key {key[:80]!r} is not a KMS key id, ARN or alias")
    return ",".join(distinct)


def format_context_float(value: float) -> str:
    """The one textual form of a float in an encryption context."""
    return repr(float(value))


def build_encryption_context(
    *,
    dataset_id: str,
    owner: str,
    max_epsilon: float,
    delta: float,
    record_count: int,
    schema_sha256: str,
    ledger: str,
    ledger_public_key: str,
    model_owner_keys: Any,
) -> dict[str, str]:
    """The encryption context of a sealed dataset; raises MalformedHeader if invalid.

    `model_owner_keys`: the KMS keys (ids, ARNs or aliases) a job on the data may seal
    its checkpoints, and so the model, under.
    """
    ctx = {
        "dataset_id": dataset_id,
        "owner": owner,
        "max_epsilon": format_context_float(max_epsilon),
        "delta": format_context_float(delta),
        "record_count": str(int(record_count)),
        "schema_sha256": schema_sha256,
        LEDGER_CONTEXT_KEY: ledger,
        LEDGER_PUBLIC_KEY_CONTEXT_KEY: ledger_public_key,
        MODEL_OWNER_KEYS_CONTEXT_KEY: canonical_model_owner_keys(model_owner_keys),
        FORMAT_CONTEXT_KEY: FORMAT_NAME,
    }
    validate_encryption_context(ctx)
    return ctx


def build_checkpoint_context(*, job_id: str, spec_sha256: str, step: int, auth_tag: str) -> dict[str, str]:
    """The encryption context of a sealed checkpoint; raises MalformedHeader if invalid."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise MalformedHeader("checkpoint step must be a non-negative integer")
    ctx = {
        FORMAT_CONTEXT_KEY: CHECKPOINT_FORMAT_NAME,
        "job_id": job_id,
        "spec_sha256": spec_sha256,
        "step": str(step),
        CHECKPOINT_AUTH_TAG_CONTEXT_KEY: auth_tag,
    }
    validate_encryption_context(ctx, CHECKPOINT_PAYLOAD)
    return ctx


def validate_encryption_context(ctx: Mapping[str, Any], payload: str = PAYLOAD) -> None:
    """Raise MalformedHeader unless `ctx` is a well-formed context for `payload`."""
    if not isinstance(ctx, Mapping):
        raise MalformedHeader("encryption_context must be a map")
    if not isinstance(payload, str) or payload not in CONTEXT_KEYS_BY_PAYLOAD:
        raise MalformedHeader(f"unsupported payload {payload!r}, expected one of {_PAYLOADS}")
    required = CONTEXT_KEYS_BY_PAYLOAD[payload]
    keys = set(ctx)
    if payload == CHECKPOINT_PAYLOAD and keys == required - {CHECKPOINT_AUTH_TAG_CONTEXT_KEY}:
        raise MalformedHeader(
            "encryption_context has no auth_tag (a checkpoint made before checkpoints were authenticated): "
            "it cannot be resumed or opened"
        )
    if payload == PAYLOAD and keys - {MODEL_OWNER_KEYS_CONTEXT_KEY} == required - _LEDGER_CONTEXT_KEYS - {
        MODEL_OWNER_KEYS_CONTEXT_KEY
    }:
        raise MalformedHeader(
            "encryption_context has no ledger and ledger_public_key (sealed before datasets had a budget "
            "ledger): seal the data again with a ledger location"
        )
    if payload == PAYLOAD and keys == required - {MODEL_OWNER_KEYS_CONTEXT_KEY}:
        raise MalformedHeader(
            "encryption_context has no model_owner_keys (sealed before data owners chose who receives the "
            "model): seal the data again with --model-owner-key"
        )
    if keys != required:
        missing = sorted(required - keys, key=str)
        extra = sorted(keys - required, key=str)
        raise MalformedHeader(
            f"encryption_context keys wrong (missing {missing}, unexpected {extra})"
        )
    for key, value in ctx.items():
        if not isinstance(value, str) or not value or len(value) > _MAX_CONTEXT_VALUE:
            raise MalformedHeader(f"encryption_context[{key!r}] must be a non-empty short string")
    expected_format = FORMAT_BY_PAYLOAD[payload]
    if ctx[FORMAT_CONTEXT_KEY] != expected_format:
        raise MalformedHeader(
            f"encryption_context format is {ctx[FORMAT_CONTEXT_KEY]!r}, expected {expected_format!r}"
        )
    if payload == CHECKPOINT_PAYLOAD:
        _validate_checkpoint_context(ctx)
    else:
        _validate_dataset_context(ctx)


def _validate_checkpoint_context(ctx: Mapping[str, str]) -> None:
    if not _DECIMAL.fullmatch(ctx["step"]):
        raise MalformedHeader("encryption_context step must be a plain decimal integer")
    if not _HEX64.fullmatch(ctx["spec_sha256"]):
        raise MalformedHeader("encryption_context spec_sha256 must be 64 lowercase hex digits")
    if not _HEX64.fullmatch(ctx[CHECKPOINT_AUTH_TAG_CONTEXT_KEY]):
        raise MalformedHeader("encryption_context auth_tag must be 64 lowercase hex digits (HMAC-SHA256)")


def _validate_dataset_context(ctx: Mapping[str, str]) -> None:
    eps = _context_float(ctx, "max_epsilon")
    if not (math.isfinite(eps) and eps > 0):
        raise MalformedHeader("encryption_context max_epsilon must be finite and > 0")
    delta = _context_float(ctx, "delta")
    if not 0.0 < delta < 1.0:
        raise MalformedHeader("encryption_context delta must be in (0, 1)")
    if not _DECIMAL.fullmatch(ctx["record_count"]):
        raise MalformedHeader("encryption_context record_count must be a plain decimal integer")
    if not _HEX64.fullmatch(ctx["schema_sha256"]):
        raise MalformedHeader("encryption_context schema_sha256 must be 64 lowercase hex digits")
    problem = location_problem(ctx[LEDGER_CONTEXT_KEY])
    if problem is not None:
        raise MalformedHeader(f"encryption_context ledger: {problem}")
    if not _HEX64.fullmatch(ctx[LEDGER_PUBLIC_KEY_CONTEXT_KEY]):
        raise MalformedHeader("encryption_context ledger_public_key must be 64 lowercase hex digits (Ed25519)")
    allowed = ctx[MODEL_OWNER_KEYS_CONTEXT_KEY]
    if canonical_model_owner_keys(allowed.split(",")) != allowed:
        raise MalformedHeader("encryption_context model_owner_keys is not sorted, distinct and comma-separated")


def _context_float(ctx: Mapping[str, str], key: str) -> float:
    text = ctx[key]
    try:
        value = float(text)
    except ValueError:
        raise MalformedHeader(f"encryption_context {key} is not a number") from None
    # Exactly one spelling per value keeps the context reproducible byte-for-byte.
    if format_context_float(value) != text:
        raise MalformedHeader(f"encryption_context {key} is not in canonical form")
    return value


@dataclass(frozen=True)
class SealedHeader:
    """The authenticated header of a sealed file (see module docstring)."""

    key_id: str
    encrypted_data_key: bytes
    encryption_context: Mapping[str, str]
    alg: str = ALG
    chunk_size: int = DEFAULT_CHUNK_SIZE
    payload: str = PAYLOAD
    schema: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not 0 < len(self.key_id) <= _MAX_KEY_ID:
            raise MalformedHeader("key_id must be a non-empty string of at most 2048 characters")
        if not isinstance(self.encrypted_data_key, bytes) or not 0 < len(self.encrypted_data_key) <= _MAX_BLOB:
            raise MalformedHeader("encrypted_data_key must be 1..6144 bytes")
        if not isinstance(self.payload, str) or self.payload not in CONTEXT_KEYS_BY_PAYLOAD:
            raise MalformedHeader(f"unsupported payload {self.payload!r}, expected one of {_PAYLOADS}")
        validate_encryption_context(self.encryption_context, self.payload)
        # A private read-only copy: the header hash must not change under our feet.
        object.__setattr__(
            self, "encryption_context", MappingProxyType(dict(self.encryption_context))
        )
        if self.alg != ALG:
            raise MalformedHeader(f"unsupported alg {self.alg!r}, expected {ALG!r}")
        if (
            not isinstance(self.chunk_size, int)
            or isinstance(self.chunk_size, bool)
            or not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE
        ):
            raise MalformedHeader(
                f"chunk_size must be an integer in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"
            )
        self._check_schema()

    def _check_schema(self) -> None:
        if not isinstance(self.schema, bytes):
            raise MalformedHeader("schema must be bytes")
        if self.payload != PAYLOAD:
            if self.schema:
                raise MalformedHeader(f"a {self.payload!r} header carries no schema, got {len(self.schema)} bytes")
            return
        if not self.schema:
            raise MalformedHeader("a dataset header must carry its schema")
        if len(self.schema) > MAX_SCHEMA_SIZE:
            raise MalformedHeader(f"schema is {len(self.schema)} bytes, limit {MAX_SCHEMA_SIZE}")
        actual = hashlib.sha256(self.schema).hexdigest()
        if actual != self.encryption_context["schema_sha256"]:
            raise SchemaMismatch(
                f"header schema hashes to {actual[:16]}..., the encryption context says "
                f"{self.encryption_context['schema_sha256'][:16]}..."
            )

    # -- context accessors (datasets) ----------------------------------------
    def _dataset_entry(self, key: str) -> str:
        # A checkpoint handed in where a dataset is expected is refused by type,
        # before anyone asks KMS for its key.
        if self.payload != PAYLOAD:
            raise EncryptionContextMismatch(
                f"sealed file holds a {self.payload!r} payload, not a dataset"
            )
        return self.encryption_context[key]

    @property
    def dataset_id(self) -> str:
        return self._dataset_entry("dataset_id")

    @property
    def owner(self) -> str:
        return self._dataset_entry("owner")

    @property
    def max_epsilon(self) -> float:
        return float(self._dataset_entry("max_epsilon"))

    @property
    def delta(self) -> float:
        return float(self._dataset_entry("delta"))

    @property
    def record_count(self) -> int:
        return int(self._dataset_entry("record_count"))

    @property
    def schema_sha256(self) -> str:
        return self._dataset_entry("schema_sha256")

    @property
    def ledger_location(self) -> str:
        return self._dataset_entry(LEDGER_CONTEXT_KEY)

    @property
    def ledger_public_key(self) -> bytes:
        return bytes.fromhex(self._dataset_entry(LEDGER_PUBLIC_KEY_CONTEXT_KEY))

    @property
    def model_owner_keys(self) -> tuple[str, ...]:
        """The KMS keys the data owner allowed checkpoints (the model) to be sealed under."""
        return tuple(self._dataset_entry(MODEL_OWNER_KEYS_CONTEXT_KEY).split(","))

    # -- wire form ---------------------------------------------------------
    def header_bytes(self) -> bytes:
        """The canonical CBOR of the header map alone."""
        return dumps(
            {
                "key_id": self.key_id,
                "encrypted_data_key": self.encrypted_data_key,
                "encryption_context": dict(self.encryption_context),
                "alg": self.alg,
                "chunk_size": self.chunk_size,
                "payload": self.payload,
                "schema": self.schema,
            }
        )

    def encode(self) -> bytes:
        """Magic, version, header length and header: everything before the chunks."""
        body = self.header_bytes()
        if len(body) > MAX_HEADER_SIZE:
            raise MalformedHeader(f"header is {len(body)} bytes, limit {MAX_HEADER_SIZE}")
        return _PREFIX.pack(MAGIC, VERSION, len(body)) + body

    @cached_property
    def header_hash(self) -> bytes:
        """SHA-256 of everything up to and including the header bytes."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> SealedHeader:
        """Parse exactly one encoded header (as produced by encode())."""
        if len(data) < PREFIX_SIZE:
            check_magic_prefix(data[: len(MAGIC)])
            raise MalformedHeader("header is shorter than its fixed prefix")
        magic, version, length = _PREFIX.unpack_from(data)
        check_magic_prefix(magic)
        check_version(version)
        check_header_length(length)
        if len(data) != PREFIX_SIZE + length:
            raise MalformedHeader(
                f"header length field says {length} bytes, got {len(data) - PREFIX_SIZE}"
            )
        return cls.from_header_bytes(data[PREFIX_SIZE:])

    @classmethod
    def from_header_bytes(cls, body: bytes) -> SealedHeader:
        """Parse the CBOR header map, insisting on its canonical encoding."""
        obj = strict_loads(body, what="header", error=MalformedHeader, canonical=dumps, max_depth=8)
        if not isinstance(obj, dict):
            raise MalformedHeader("header is not a CBOR map")
        if set(obj) == _HEADER_KEYS_WITHOUT_SCHEMA:
            raise MalformedHeader("header carries no schema (sealed before headers had one): seal the data again")
        if set(obj) != _HEADER_KEYS:
            raise MalformedHeader(
                f"header keys wrong (expected {sorted(_HEADER_KEYS)}, got {sorted(map(str, obj))})"
            )
        ctx = obj["encryption_context"]
        if not isinstance(ctx, dict) or not all(isinstance(k, str) for k in ctx):
            raise MalformedHeader("encryption_context must be a map of strings")
        header = cls(
            key_id=obj["key_id"],
            encrypted_data_key=obj["encrypted_data_key"],
            encryption_context=ctx,
            alg=obj["alg"],
            chunk_size=obj["chunk_size"],
            payload=obj["payload"],
            schema=obj["schema"],
        )
        # Re-encoding must give the same bytes: this rejects trailing bytes,
        # non-canonical key order or integer widths, and semantic tags.
        if header.header_bytes() != body:
            raise MalformedHeader("header is not canonical CBOR")
        return header


def check_magic_prefix(magic: bytes) -> None:
    if magic != MAGIC[: len(magic)] or not magic:
        raise BadMagic("not a Hermetic sealed file (bad magic)")


def check_version(version: int) -> None:
    if version != VERSION:
        raise UnsupportedVersion(f"sealed file version {version} is not supported (expected {VERSION})")


def check_header_length(length: int) -> None:
    if not 0 < length <= MAX_HEADER_SIZE:
        raise MalformedHeader(f"header length {length} outside 1..{MAX_HEADER_SIZE}")


def unpack_prefix(prefix: bytes) -> tuple[bytes, int, int]:
    """Split the 14-byte fixed prefix into (magic, version, header length)."""
    return _PREFIX.unpack(prefix)


def check_encryption_context(header: SealedHeader, expected: Mapping[str, str]) -> None:
    """Raise EncryptionContextMismatch unless every expected entry is in the header's context."""
    actual = header.encryption_context
    for key in sorted(expected):
        if key not in actual:
            raise EncryptionContextMismatch(f"encryption context lacks {key!r}")
        if actual[key] != expected[key]:
            raise EncryptionContextMismatch(
                f"encryption context {key!r} is {actual[key]!r}, expected {expected[key]!r}"
            )
