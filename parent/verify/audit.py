"""Checking a session's audit log against the certificate that states its head.

The certificate body (version 7 or 8) holds the chain's head and event count; the log
is the chain itself (`enclave.audit_log`). Only the pair is evidence: a log on its own
could be any chain anybody built, and the certificate's attestation is what ties the
head to the enclave. So this module checks the link between the two, not the
certificate's attestation, which is `verify_certificate`'s job.
"""
from __future__ import annotations

from enclave.audit_log import ChainSummary, decode_log, verify_chain
from enclave.certificate.body import CertificateBody
from enclave.certificate.errors import MalformedCertificate

__all__ = ["NoAuditTrail", "verify_audit_log"]


class NoAuditTrail(MalformedCertificate):
    """The certificate predates the audit trail (body version 5 or 6): it states no head to check."""


def verify_audit_log(log_data: bytes, body: CertificateBody) -> ChainSummary:
    """The verified chain's summary; AuditLogError naming the first bad event, or NoAuditTrail."""
    if body.audit_log_sha256 is None or body.audit_log_events is None:
        raise NoAuditTrail(f"the certificate (body version {body.version}) states no audit log")
    summary = verify_chain(decode_log(log_data), head=bytes.fromhex(body.audit_log_sha256),
                           count=body.audit_log_events)
    if summary.job_id != body.job_id:
        raise MalformedCertificate(f"the audit log is job {summary.job_id!r}'s, the certificate job {body.job_id!r}'s")
    return summary
