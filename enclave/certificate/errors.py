"""Typed failures of privacy-certificate encoding, issuing and verification.

Each way a certificate can be refused has its own class so auditors' scripts can
react to the reason. Attestation failures are not wrapped: they surface as the
`enclave.errors.AttestationError` subclass the attestation verifier raised.
"""
from __future__ import annotations

from enclave.errors import HermeticError

__all__ = [
    "BudgetExceeded",
    "CertificateBindingError",
    "CertificateError",
    "CertificatePcrMismatch",
    "DebugEnclaveCertificate",
    "InconsistentCertificate",
    "MalformedCertificate",
    "StatedEpsilonTooLow",
]


class CertificateError(HermeticError):
    """A privacy certificate could not be issued or failed verification."""

    code = "certificate"


class MalformedCertificate(CertificateError):
    """The bytes are not a well-formed, canonical hermetic-privacy-certificate-v1."""


class CertificateBindingError(CertificateError):
    """The attestation's user_data is not SHA-384 of the certificate body."""


class CertificatePcrMismatch(CertificateError):
    """The body's PCRs differ from the attested ones, or PCR0/1/2 are not listed."""


class DebugEnclaveCertificate(CertificateError):
    """The attesting enclave ran in debug mode (PCR0/1/2 zero): its claims bind nothing."""


class InconsistentCertificate(CertificateError):
    """The body's parameters contradict each other or the datasets' sealed budgets."""


class StatedEpsilonTooLow(CertificateError):
    """A stated epsilon is lower than the one recomputed from the ledger."""


class BudgetExceeded(CertificateError):
    """The spent epsilon is above the data owners' max_epsilon."""
