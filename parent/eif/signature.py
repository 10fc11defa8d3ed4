"""The EIF signature section: PCR8 and the PCR0 signature check.

The section is `serde_cbor::to_vec(&Vec<PcrSignature>)` (image-format crate,
src/defs/mod.rs and src/utils/eif_signer.rs): a CBOR array of maps
``{"signing_certificate": PEM bytes, "signature": COSE_Sign1 bytes}``. serde
encodes `Vec<u8>` as an array of small integers, not a byte string; both are
accepted here. Only the first entry counts (nitro-cli signs PCR0 only).

PCR8 is the extend of SHA384(certificate DER). The COSE_Sign1 payload is
`serde_cbor::to_vec(&PcrInfo { register_index: 0, register_value: PCR0 })`,
i.e. ``{"register_index": 0, "register_value": [bytes as integers]}``; describe-eif
reports "SignatureCheck" = (signed payload == that encoding for the measured PCR0).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.hazmat.cbor import strict_loads
from parent.eif.errors import EifBadSignatureSection, EifSignatureInvalid
from parent.eif.measure import extend_zero

COSE_SIGN1_TAG = 18
# COSE algorithm id -> (curve, hash, coordinate size) for the ECDSA keys the
# aws-nitro-enclaves-cose crate signs with.
_ECDSA_ALGS: dict[int, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm, int]] = {
    -7: (ec.SECP256R1, hashes.SHA256(), 32),
    -35: (ec.SECP384R1, hashes.SHA384(), 48),
    -36: (ec.SECP521R1, hashes.SHA512(), 66),
}
_MAX_DEPTH = 8
_COSE_TAGS = frozenset({COSE_SIGN1_TAG})


@dataclass(frozen=True)
class PcrSignature:
    signing_certificate_pem: bytes
    signature: bytes


@dataclass(frozen=True)
class SignatureInfo:
    certificate: x509.Certificate
    pcr8: bytes
    signature: bytes

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


def _decode(data: bytes, what: str) -> Any:
    return strict_loads(data, what=what, error=EifBadSignatureSection, tags=_COSE_TAGS, max_depth=_MAX_DEPTH)


def _byte_vec(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(type(v) is int and 0 <= v <= 255 for v in value):
        return bytes(value)
    raise EifBadSignatureSection(f"{what} is neither a byte array nor a byte string")


def parse_signature_section(data: bytes) -> list[PcrSignature]:
    item = _decode(data, "signature section")
    if not isinstance(item, list) or not item:
        raise EifBadSignatureSection("signature section is not a non-empty CBOR array")
    out = []
    for index, entry in enumerate(item):
        if not isinstance(entry, Mapping):
            raise EifBadSignatureSection(f"signature entry {index} is not a map")
        try:
            cert = entry["signing_certificate"]
            sig = entry["signature"]
        except (KeyError, TypeError):
            raise EifBadSignatureSection(
                f"signature entry {index} lacks signing_certificate or signature"
            ) from None
        out.append(PcrSignature(
            _byte_vec(cert, f"signature entry {index} signing_certificate"),
            _byte_vec(sig, f"signature entry {index} signature"),
        ))
    return out


def read_signature(data: bytes) -> SignatureInfo:
    """PCR8 from the first entry's certificate (PEM, as nitro-cli stores it)."""
    first = parse_signature_section(data)[0]
    try:
        cert = x509.load_pem_x509_certificate(first.signing_certificate_pem)
    except ValueError:
        raise EifBadSignatureSection("signing certificate is not a PEM X.509 certificate") from None
    der = cert.public_bytes(Encoding.DER)
    return SignatureInfo(certificate=cert, pcr8=extend_zero(hashlib.sha384(der).digest()), signature=first.signature)


def pcr0_payload(pcr0: bytes) -> bytes:
    """serde_cbor's encoding of `PcrInfo { register_index: 0, register_value: pcr0 }`."""
    return cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def signed_payload(info: SignatureInfo) -> bytes:
    """Verify the COSE_Sign1 with the certificate's key and return its payload."""
    item = _decode(info.signature, "PCR0 signature")
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise EifBadSignatureSection(f"PCR0 signature has CBOR tag {item.tag}, not COSE_Sign1 (18)")
        item = item.value
    # cbor2 hands a tag's array over as a tuple (immutable), an untagged one as a list.
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise EifBadSignatureSection("PCR0 signature is not a 4-element COSE_Sign1 array")
    protected, _unprotected, payload, signature = item
    if not all(isinstance(v, bytes) for v in (protected, payload, signature)):
        raise EifBadSignatureSection("PCR0 signature members are not byte strings")
    header = _decode(protected, "PCR0 signature protected header") if protected else {}
    alg = header.get(1) if isinstance(header, Mapping) else None
    if type(alg) is not int or alg not in _ECDSA_ALGS:
        raise EifBadSignatureSection(f"PCR0 signature algorithm {alg!r} is not ES256/ES384/ES512")
    curve, hash_alg, size = _ECDSA_ALGS[alg]
    try:
        key = info.certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise EifBadSignatureSection("signing certificate has a key type this reader cannot use") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
        raise EifSignatureInvalid("signing certificate key does not match the PCR0 signature algorithm")
    if len(signature) != 2 * size:
        raise EifBadSignatureSection(f"PCR0 signature is {len(signature)} bytes, expected {2 * size}")
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    try:
        key.verify(encode_dss_signature(r, s), _sig_structure(protected, payload), ec.ECDSA(hash_alg))
    except (InvalidSignature, ValueError):
        raise EifSignatureInvalid("PCR0 signature does not verify with the signing certificate") from None
    return bytes(payload)


def signature_matches(info: SignatureInfo, pcr0: bytes) -> bool:
    """describe-eif's SignatureCheck: the verified payload signs this image's PCR0."""
    return signed_payload(info) == pcr0_payload(pcr0)
