"""Privacy certificates: issued inside the enclave, verified anywhere offline.

A certificate file is canonical CBOR `{"format": "hermetic-privacy-certificate-v1",
"body": <canonical body bytes>, "attestation": <NSM COSE_Sign1>}` where the
attestation's user_data is SHA-384 of the body bytes.
"""
from __future__ import annotations

from enclave.certificate.accounting import KNOWN_ACCOUNTANTS, PRIMARY_ACCOUNTANT, recompute_epsilon
from enclave.certificate.body import (
    CertificateBody,
    DatasetRecord,
    PublicDatasetRecord,
    ReleasedMetric,
    body_to_json,
    decode_body,
    encode_body,
)
from enclave.certificate.checks import check_body, format_time
from enclave.certificate.envelope import CERTIFICATE_FORMAT, decode_envelope, encode_envelope
from enclave.certificate.errors import (
    BudgetExceeded,
    CertificateBindingError,
    CertificateError,
    CertificatePcrMismatch,
    DebugEnclaveCertificate,
    InconsistentCertificate,
    MalformedCertificate,
    StatedEpsilonTooLow,
)
from enclave.certificate.issue import body_digest, issue_certificate
from enclave.certificate.verify import VerifiedCertificate, verify_certificate

__all__ = [
    "BudgetExceeded",
    "CERTIFICATE_FORMAT",
    "CertificateBindingError",
    "CertificateBody",
    "CertificateError",
    "CertificatePcrMismatch",
    "DatasetRecord",
    "DebugEnclaveCertificate",
    "InconsistentCertificate",
    "KNOWN_ACCOUNTANTS",
    "MalformedCertificate",
    "PRIMARY_ACCOUNTANT",
    "PublicDatasetRecord",
    "ReleasedMetric",
    "StatedEpsilonTooLow",
    "VerifiedCertificate",
    "body_digest",
    "body_to_json",
    "check_body",
    "decode_body",
    "decode_envelope",
    "encode_body",
    "encode_envelope",
    "format_time",
    "issue_certificate",
    "recompute_epsilon",
    "verify_certificate",
]
