"""The certificate file: canonical CBOR {"format", "body", "attestation"}.

`body` is the canonical body bytes exactly as hashed; `attestation` is the NSM's
COSE_Sign1 document whose user_data is SHA-384 of those bytes. Both travel as
byte strings so nothing is ever re-encoded between signing and checking.
"""
from __future__ import annotations

from enclave.certificate.body import MAX_BODY_SIZE
from enclave.certificate.errors import MalformedCertificate
from enclave.hazmat.cbor import dumps_f64
from enclave.hazmat.cose import MAX_DOCUMENT_SIZE

__all__ = ["CERTIFICATE_FORMAT", "ENVELOPE_KEYS", "MAX_CERTIFICATE_SIZE", "encode_envelope"]

CERTIFICATE_FORMAT = "hermetic-privacy-certificate-v1"
#: Body and document at their limits plus the map's own few dozen bytes.
MAX_CERTIFICATE_SIZE = MAX_BODY_SIZE + MAX_DOCUMENT_SIZE + 256
ENVELOPE_KEYS = frozenset({"format", "body", "attestation"})


def encode_envelope(body_bytes: bytes, attestation: bytes) -> bytes:
    """The certificate file for already-encoded body bytes and their attestation document."""
    if not isinstance(body_bytes, bytes) or not isinstance(attestation, bytes):
        raise TypeError("body and attestation must be bytes")
    data = dumps_f64(
        {"format": CERTIFICATE_FORMAT, "body": body_bytes, "attestation": attestation}
    )
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise MalformedCertificate(f"certificate is {len(data)} bytes, more than {MAX_CERTIFICATE_SIZE}")
    return data
