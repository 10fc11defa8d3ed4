"""Typed failures of attestation verification: chain, signature, pinned root, policy, pin.

Every distinct way a document can be refused has its own class so callers (the KMS
emulator, the CLI, audit logs) can react to the reason, not to a string.
"""
from __future__ import annotations

from enclave.certificate.errors import CertificateError
from enclave.errors import AttestationError, ConfigError

__all__ = [
    "BadBasicConstraints",
    "BadCertificate",
    "BadKeyUsage",
    "BadSignature",
    "CertificateExpired",
    "CertificateNotYetValid",
    "ChainBroken",
    "ChainError",
    "DocumentInFuture",
    "DocumentTooOld",
    "ImageNotPinned",
    "NonceMismatch",
    "PcrMismatch",
    "PolicyViolation",
    "PublicKeyMismatch",
    "RootPinMismatch",
    "SubjectMismatch",
    "UntrustedRoot",
    "UserDataMismatch",
]


class BadSignature(AttestationError):
    """The COSE_Sign1 signature does not verify under the leaf certificate's key."""


class RootPinMismatch(AttestationError):
    """The bundled AWS root certificate does not match its pinned SHA-256."""


class ChainError(AttestationError):
    """The certificate chain from the leaf to the pinned root is not valid."""


class UntrustedRoot(ChainError):
    """The chain does not end at the pinned root certificate."""


class ChainBroken(ChainError):
    """A certificate is not issued (name and signature) by the next one up the chain."""


class BadCertificate(ChainError):
    """A certificate cannot be parsed or is structurally unacceptable."""


class CertificateExpired(ChainError):
    """A certificate in the chain expired before the verification time."""


class CertificateNotYetValid(ChainError):
    """A certificate in the chain is not yet valid at the verification time."""


class BadBasicConstraints(ChainError):
    """basicConstraints are wrong: an issuer is not a CA, the leaf is a CA, or pathLen is exceeded."""


class BadKeyUsage(ChainError):
    """keyUsage lacks keyCertSign on an issuer or digitalSignature on the leaf."""


class PolicyViolation(AttestationError):
    """A valid document does not satisfy the caller's attestation policy."""


class PcrMismatch(PolicyViolation):
    """No allowed PCR set matches the document's PCRs."""


class NonceMismatch(PolicyViolation):
    """The document's nonce is absent or differs from the expected one."""


class UserDataMismatch(PolicyViolation):
    """The document's user_data is absent or differs from the expected one."""


class PublicKeyMismatch(PolicyViolation):
    """The document's public_key is absent or differs from the expected one."""


class DocumentTooOld(PolicyViolation):
    """The document's timestamp is older than the policy's max_age allows."""


class DocumentInFuture(PolicyViolation):
    """The document's timestamp lies in the future beyond the allowed clock skew."""


class ImageNotPinned(ConfigError):
    """Verification was asked for without requiring the enclave image's measurement (PCR0).

    The Nitro root vouches for every enclave, whatever its code: without PCR0 a
    verified document may come from any image. A caller error, hence `config`.
    """


class SubjectMismatch(CertificateError):
    """A valid certificate is about another sealed dataset or job spec than the verifier's."""
