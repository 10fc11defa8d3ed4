"""AWS Nitro attestation documents: parse, verify against the pinned root, apply policy."""
from __future__ import annotations

from enclave.attestation.document import AttestationDocument, parse_attestation
from enclave.attestation.errors import (
    AttestationError,
    BadBasicConstraints,
    BadCertificate,
    BadKeyUsage,
    BadSignature,
    CertificateExpired,
    CertificateNotYetValid,
    ChainBroken,
    ChainError,
    DocumentInFuture,
    DocumentTooLarge,
    DocumentTooOld,
    MalformedDocument,
    NonceMismatch,
    PcrMismatch,
    PolicyViolation,
    PublicKeyMismatch,
    RootPinMismatch,
    UnsupportedAlgorithm,
    UntrustedRoot,
    UserDataMismatch,
)
from enclave.attestation.policy import AttestationPolicy
from enclave.attestation.roots import AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256
from enclave.attestation.verify import verify_attestation

__all__ = [
    "AWS_NITRO_ROOT_G1_DER",
    "AWS_NITRO_ROOT_G1_SHA256",
    "AttestationDocument",
    "AttestationError",
    "AttestationPolicy",
    "BadBasicConstraints",
    "BadCertificate",
    "BadKeyUsage",
    "BadSignature",
    "CertificateExpired",
    "CertificateNotYetValid",
    "ChainBroken",
    "ChainError",
    "DocumentInFuture",
    "DocumentTooLarge",
    "DocumentTooOld",
    "MalformedDocument",
    "NonceMismatch",
    "PcrMismatch",
    "PolicyViolation",
    "PublicKeyMismatch",
    "RootPinMismatch",
    "UnsupportedAlgorithm",
    "UntrustedRoot",
    "UserDataMismatch",
    "parse_attestation",
    "verify_attestation",
]
