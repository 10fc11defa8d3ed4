"""Reading a certificate file: canonical CBOR {"format", "body", "attestation"}."""
from __future__ import annotations

from enclave.certificate.body import MAX_BODY_SIZE
from enclave.certificate.envelope import CERTIFICATE_FORMAT, ENVELOPE_KEYS, MAX_CERTIFICATE_SIZE
from enclave.certificate.errors import MalformedCertificate
from enclave.hazmat.cbor import dumps_f64, strict_loads
from enclave.hazmat.cose import MAX_DOCUMENT_SIZE

__all__ = ["decode_envelope"]


def decode_envelope(data: bytes) -> tuple[bytes, bytes]:
    """(body bytes, attestation bytes) of a certificate file; MalformedCertificate otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedCertificate("certificate is not a byte string")
    data = bytes(data)
    if not data:
        raise MalformedCertificate("certificate file is empty")
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise MalformedCertificate(f"certificate is {len(data)} bytes, more than {MAX_CERTIFICATE_SIZE}")
    item = strict_loads(data, what="certificate", error=MalformedCertificate, canonical=dumps_f64, max_depth=2)
    if not isinstance(item, dict):
        raise MalformedCertificate(f"certificate is a CBOR {type(item).__name__}, not a map")
    if set(item) != ENVELOPE_KEYS:
        found = ", ".join(sorted(repr(key)[:24] for key in item)[:8]) or "none"
        raise MalformedCertificate(f"certificate map must hold exactly format, body, attestation; it holds {found}")
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
