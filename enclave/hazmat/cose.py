"""COSE_Sign1 (RFC 9052) as AWS Nitro attestation documents use it.

Only what NSM produces is accepted: ES384 (`{1: -35}` in the protected header),
a 96-byte raw r||s signature and an attached payload. The signature is always
checked over the payload bytes exactly as received; nothing is re-encoded, so
documents whose payload map is indefinite-length verify like any other.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from enclave.attestation.errors import DocumentTooLarge, MalformedDocument, UnsupportedAlgorithm
from enclave.hazmat.cbor import strict_loads

log = logging.getLogger(__name__)

# Real documents are about 4.5 KiB; with the optional fields at their AWS maximum
# (3 x 1 KiB) and a longer chain they stay well under this.
MAX_DOCUMENT_SIZE = 32 * 1024
COSE_SIGN1_TAG = 18
ALG_ES384 = -35
HEADER_ALG = 1
ES384_SIGNATURE_SIZE = 96
P384_COORDINATE_SIZE = 48
# The COSE structures are flat; the payload nests at most map -> array/map -> bytes.
MAX_CBOR_DEPTH = 8
_COSE_TAGS = frozenset({COSE_SIGN1_TAG})


@dataclass(frozen=True)
class CoseSign1:
    """The four members of a COSE_Sign1 message, as raw as they arrived."""

    protected: bytes
    unprotected: Mapping[Any, Any]
    payload: bytes
    signature: bytes
    tagged: bool


def cbor_decode_strict(data: bytes, *, what: str, allow_cose_tag: bool = False) -> Any:
    """One CBOR item of a document under the strict policy; MalformedDocument otherwise."""
    return strict_loads(data, what=what, error=MalformedDocument, max_depth=MAX_CBOR_DEPTH,
                        tags=_COSE_TAGS if allow_cose_tag else frozenset())


def decode_cose_sign1(data: bytes) -> CoseSign1:
    """Split a tagged or untagged COSE_Sign1 into its members, checking the algorithm."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedDocument("attestation document must be bytes")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_SIZE:
        raise DocumentTooLarge(
            f"attestation document is {len(data)} bytes, more than {MAX_DOCUMENT_SIZE}"
        )
    if not data:
        raise MalformedDocument("attestation document is empty")
    item = cbor_decode_strict(data, what="attestation document", allow_cose_tag=True)
    tagged = isinstance(item, cbor2.CBORTag)
    if tagged:
        item = item.value
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise MalformedDocument("attestation document is not a 4-element COSE_Sign1 array")
    protected, unprotected, payload, signature = item
    if type(protected) is not bytes:
        raise MalformedDocument("COSE protected header is not a byte string")
    if not isinstance(unprotected, Mapping):
        raise MalformedDocument("COSE unprotected header is not a map")
    if type(payload) is not bytes:
        # A nil payload would be a detached-content COSE message; NSM never does that.
        raise MalformedDocument("COSE payload is not an attached byte string")
    if type(signature) is not bytes:
        raise MalformedDocument("COSE signature is not a byte string")
    _check_protected_header(protected)
    if len(signature) != ES384_SIGNATURE_SIZE:
        raise MalformedDocument(
            f"ES384 signature must be {ES384_SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return CoseSign1(
        protected=protected,
        unprotected=unprotected,
        payload=payload,
        signature=signature,
        tagged=tagged,
    )


def _check_protected_header(protected: bytes) -> None:
    header = cbor_decode_strict(protected, what="COSE protected header")
    if not isinstance(header, Mapping):
        raise MalformedDocument("COSE protected header is not a map")
    alg = header.get(HEADER_ALG)
    # bool is an int subclass in Python; CBOR `true` is not an algorithm id.
    if type(alg) is not int:
        raise UnsupportedAlgorithm("COSE protected header has no integer algorithm")
    if alg != ALG_ES384:
        raise UnsupportedAlgorithm(f"COSE algorithm {alg} is not ES384 (-35)")
    extra = set(header) - {HEADER_ALG}
    if extra:
        # Unknown protected headers may be critical to the signer's meaning; refuse them.
        raise MalformedDocument(f"COSE protected header has unexpected labels {sorted(map(repr, extra))}")


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The COSE Sig_structure for Sign1: `["Signature1", protected, h'', payload]`."""
    return cbor2.dumps(["Signature1", protected, b"", payload])
