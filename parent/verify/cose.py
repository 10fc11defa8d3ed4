"""Checking the ES384 signature of a COSE_Sign1 attestation document."""
from __future__ import annotations

import logging

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from enclave.attestation.errors import MalformedDocument, UnsupportedAlgorithm
from enclave.hazmat.cose import ES384_SIGNATURE_SIZE, P384_COORDINATE_SIZE, sig_structure
from parent.verify.errors import BadSignature

__all__ = ["verify_es384"]

log = logging.getLogger(__name__)


def verify_es384(
    protected: bytes, payload: bytes, signature: bytes, public_key: CertificatePublicKeyTypes
) -> None:
    """Check a raw r||s ES384 signature over the Sign1 Sig_structure; BadSignature if it fails."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise UnsupportedAlgorithm("signing certificate key is not an ECDSA P-384 key")
    if len(signature) != ES384_SIGNATURE_SIZE:
        raise MalformedDocument(
            f"ES384 signature must be {ES384_SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    r = int.from_bytes(signature[:P384_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[P384_COORDINATE_SIZE:], "big")
    if r == 0 or s == 0:
        raise BadSignature("COSE signature has a zero r or s component")
    try:
        public_key.verify(
            encode_dss_signature(r, s), sig_structure(protected, payload), ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature as err:
        raise BadSignature("COSE signature does not verify with the leaf certificate key") from err
    log.debug("COSE_Sign1 ES384 signature verified")
