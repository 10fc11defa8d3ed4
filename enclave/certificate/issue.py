"""Issuing a privacy certificate inside the enclave.

The enclave checks its own claims before signing (an inconsistent or
over-budget certificate never leaves), asks the NSM for an attestation document
whose user_data is SHA-384 of the canonical body, and checks that document's
PCRs against the ones the body names before wrapping both into the file.
"""
from __future__ import annotations

import hashlib
import hmac
import logging

from enclave.attestation.document import parse_attestation
from enclave.certificate.body import CertificateBody, encode_body
from enclave.certificate.checks import check_attested_pcrs, check_body
from enclave.certificate.envelope import encode_envelope
from enclave.certificate.errors import CertificateBindingError
from enclave.nsm.interface import Nsm

__all__ = ["body_digest", "issue_certificate"]

log = logging.getLogger(__name__)


def body_digest(body_bytes: bytes) -> bytes:
    """SHA-384 of the canonical body bytes: what the attestation's user_data must be (48 bytes)."""
    return hashlib.sha384(body_bytes).digest()


def issue_certificate(body: CertificateBody, nsm: Nsm) -> bytes:
    """The certificate file for `body`, attested by `nsm`; CertificateError if `body` is unfit."""
    check_body(body)
    body_bytes = encode_body(body)
    digest = body_digest(body_bytes)
    document = nsm.attest(user_data=digest)
    # Our own NSM's document: parsing (not verifying) is enough to catch a body
    # that names another image before it reaches anyone.
    parsed = parse_attestation(document)
    if parsed.user_data is None or not hmac.compare_digest(parsed.user_data, digest):
        raise CertificateBindingError("the NSM returned a document for other user_data")
    check_attested_pcrs(body, parsed.pcrs)
    log.info("issued privacy certificate for job %s (%d body bytes)", body.job_id, len(body_bytes))
    return encode_envelope(body_bytes, document)
