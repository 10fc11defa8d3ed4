"""The certificate file: canonical CBOR {"format", "body", "attestation"}.

`body` is the canonical body bytes exactly as hashed; `attestation` is the NSM's
COSE_Sign1 document whose user_data is SHA-384 of those bytes. Both travel as
byte strings so nothing is ever re-encoded between signing and checking.
"""
from __future__ import annotations

from enclave.attestation.cose import MAX_DOCUMENT_SIZE
from enclave.certificate.body import MAX_BODY_SIZE
from enclave.certificate.canonical import canonical_dumps, strict_loads
from enclave.certificate.errors import MalformedCertificate

__all__ = ["CERTIFICATE_FORMAT", "MAX_CERTIFICATE_SIZE", "decode_envelope", "encode_envelope"]

CERTIFICATE_FORMAT = "hermetic-privacy-certificate-v1"
#: Body and document at their limits plus the map's own few dozen bytes.
MAX_CERTIFICATE_SIZE = MAX_BODY_SIZE + MAX_DOCUMENT_SIZE + 256
_KEYS = frozenset({"format", "body", "attestation"})


def encode_envelope(body_bytes: bytes, attestation: bytes) -> bytes:
    """The certificate file for already-encoded body bytes and their attestation document."""
    if not isinstance(body_bytes, bytes) or not isinstance(attestation, bytes):
        raise TypeError("body and attestation must be bytes")
    data = canonical_dumps(
        {"format": CERTIFICATE_FORMAT, "body": body_bytes, "attestation": attestation}
    )
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise MalformedCertificate(f"certificate is {len(data)} bytes, more than {MAX_CERTIFICATE_SIZE}")
    return data


def decode_envelope(data: bytes) -> tuple[bytes, bytes]:
    """(body bytes, attestation bytes) of a certificate file; MalformedCertificate otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedCertificate("certificate is not a byte string")
    data = bytes(data)
    if not data:
        raise MalformedCertificate("certificate file is empty")
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise MalformedCertificate(f"certificate is {len(data)} bytes, more than {MAX_CERTIFICATE_SIZE}")
    item = strict_loads(data, what="certificate")
    if not isinstance(item, dict) or set(item) != _KEYS:
        raise MalformedCertificate("certificate is not a map of exactly format, body, attestation")
    if item["format"] != CERTIFICATE_FORMAT:
        raise MalformedCertificate(f"certificate format is not {CERTIFICATE_FORMAT!r}")
    body, attestation = item["body"], item["attestation"]
    if type(body) is not bytes or type(attestation) is not bytes:
        raise MalformedCertificate("certificate body and attestation must be byte strings")
    if len(body) > MAX_BODY_SIZE:
        raise MalformedCertificate(f"certificate body is {len(body)} bytes, more than {MAX_BODY_SIZE}")
    if len(attestation) > MAX_DOCUMENT_SIZE:
        raise MalformedCertificate(
            f"certificate attestation is {len(attestation)} bytes, more than {MAX_DOCUMENT_SIZE}"
        )
    return body, attestation
