"""The attestation document payload (aws-nitro-enclaves-nsm-api attestation_process.md).

`parse_attestation` checks structure and types only; it proves nothing about who
made the document. Verification (certificate chain, signature, policy) is host-side,
in `parent.verify`: trust no field before it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from enclave.attestation.errors import DocumentTooLarge, MalformedDocument
from enclave.hazmat.cose import cbor_decode_strict, decode_cose_sign1

log = logging.getLogger(__name__)

DIGEST_SHA384 = "SHA384"
PCR_COUNT = 32
PCR_VALUE_SIZES = frozenset({32, 48, 64})
# AWS NSM caps each of these at 1024 bytes (attestation_process.md, `.size(0..1024)`).
MAX_OPTIONAL_FIELD_SIZE = 1024
# The spec bounds certificates at 1024 bytes; AWS ones are ~640-800. We allow a little
# more so locally issued test chains with longer names still fit.
MAX_CERTIFICATE_SIZE = 2048
MAX_CABUNDLE_LENGTH = 8
MAX_MODULE_ID_LENGTH = 256
# datetime cannot represent years after 9999; anything later is nonsense anyway.
MAX_TIMESTAMP_MS = 253_402_300_799_999

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")


@dataclass(frozen=True)
class AttestationDocument:
    """A parsed (not necessarily verified) Nitro attestation document."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes] = field(hash=False)
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    protected: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def timestamp(self) -> datetime:
        """The NSM's clock at signing, as an aware UTC datetime (millisecond precision)."""
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)

    @property
    def is_debug_mode(self) -> bool:
        """Debug-mode enclaves report all-zero PCR0/1/2 (and PCR8)."""
        return all(
            not any(self.pcrs.get(index, b"\x01")) for index in (0, 1, 2)
        )


def parse_attestation(data: bytes) -> AttestationDocument:
    """Parse a COSE_Sign1 attestation document; MalformedDocument (or a subclass) if it is not one."""
    message = decode_cose_sign1(data)
    body = cbor_decode_strict(message.payload, what="attestation payload")
    if not isinstance(body, Mapping):
        raise MalformedDocument("attestation payload is not a map")
    for key in body:
        if type(key) is not str:
            raise MalformedDocument("attestation payload has a non-text key")
    missing = [name for name in _REQUIRED if name not in body]
    if missing:
        raise MalformedDocument(f"attestation payload lacks {', '.join(missing)}")
    unknown = sorted(set(body) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        # Newer NSM versions may add fields; they are signed but we do not interpret them.
        log.debug("ignoring unknown attestation fields %s", unknown)

    return AttestationDocument(
        module_id=_module_id(body["module_id"]),
        digest=_digest(body["digest"]),
        timestamp_ms=_timestamp(body["timestamp"]),
        pcrs=_pcrs(body["pcrs"]),
        certificate=_certificate(body["certificate"], "certificate"),
        cabundle=_cabundle(body["cabundle"]),
        public_key=_optional_bytes(body, "public_key"),
        user_data=_optional_bytes(body, "user_data"),
        nonce=_optional_bytes(body, "nonce"),
        protected=message.protected,
        payload=message.payload,
        signature=message.signature,
    )


def _module_id(value: Any) -> str:
    if type(value) is not str:
        raise MalformedDocument("module_id is not a text string")
    if not value or len(value) > MAX_MODULE_ID_LENGTH:
        raise MalformedDocument(f"module_id length {len(value)} is outside 1..{MAX_MODULE_ID_LENGTH}")
    return value


def _digest(value: Any) -> str:
    if type(value) is not str:
        raise MalformedDocument("digest is not a text string")
    if value != DIGEST_SHA384:
        raise MalformedDocument(f"digest {value[:16]!r} is not {DIGEST_SHA384}")
    return value


def _timestamp(value: Any) -> int:
    if type(value) is not int:
        raise MalformedDocument("timestamp is not an unsigned integer")
    if not 0 < value <= MAX_TIMESTAMP_MS:
        raise MalformedDocument("timestamp is out of range")
    return value


def _pcrs(value: Any) -> Mapping[int, bytes]:
    if not isinstance(value, Mapping):
        raise MalformedDocument("pcrs is not a map")
    if not 1 <= len(value) <= PCR_COUNT:
        raise MalformedDocument(f"pcrs has {len(value)} entries, expected 1..{PCR_COUNT}")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise MalformedDocument("pcrs has an index outside 0..31")
        if type(pcr) is not bytes or len(pcr) not in PCR_VALUE_SIZES:
            raise MalformedDocument(f"PCR{index} is not a 32, 48 or 64 byte string")
        pcrs[index] = pcr
    return MappingProxyType(dict(sorted(pcrs.items())))


def _certificate(value: Any, what: str) -> bytes:
    if type(value) is not bytes or not value:
        raise MalformedDocument(f"{what} is not a non-empty byte string")
    if len(value) > MAX_CERTIFICATE_SIZE:
        raise DocumentTooLarge(f"{what} is {len(value)} bytes, more than {MAX_CERTIFICATE_SIZE}")
    return value


def _cabundle(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, (list, tuple)):
        raise MalformedDocument("cabundle is not an array")
    if not value:
        raise MalformedDocument("cabundle is empty")
    if len(value) > MAX_CABUNDLE_LENGTH:
        raise DocumentTooLarge(f"cabundle has {len(value)} certificates, more than {MAX_CABUNDLE_LENGTH}")
    return tuple(_certificate(cert, f"cabundle[{i}]") for i, cert in enumerate(value))


def _optional_bytes(body: Mapping[str, Any], name: str) -> bytes | None:
    # Real documents carry CBOR null for absent fields; others omit the key.
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not bytes:
        raise MalformedDocument(f"{name} is neither a byte string nor null")
    if len(value) > MAX_OPTIONAL_FIELD_SIZE:
        raise DocumentTooLarge(f"{name} is {len(value)} bytes, more than {MAX_OPTIONAL_FIELD_SIZE}")
    return value
