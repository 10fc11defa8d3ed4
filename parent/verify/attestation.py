"""Full verification of a Nitro attestation document.

Order: parse (structure, sizes, algorithm) -> certificate path to the pinned
root at the verification time -> COSE signature with the leaf key -> policy.
Nothing from the document is trusted before the signature step succeeds.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from enclave.attestation.document import AttestationDocument, parse_attestation
from parent.verify.chain import verify_chain
from parent.verify.cose import verify_es384
from parent.verify.policy import AttestationPolicy
from parent.verify.roots import AWS_NITRO_ROOT_G1_DER

log = logging.getLogger(__name__)


def verify_attestation(
    data: bytes,
    *,
    root_der: bytes | None = None,
    at: datetime | None = None,
    policy: AttestationPolicy | None = None,
) -> AttestationDocument:
    """Verify `data` and return the document; raise an AttestationError subclass otherwise.

    root_der: trust anchor (DER); defaults to the pinned AWS Nitro Enclaves Root-G1.
    at: aware datetime at which every certificate must be valid; defaults to now.
        Archived documents (leaves live ~3 hours) are verified by passing
        `at=parse_attestation(data).timestamp` explicitly.
    policy: optional PCR / nonce / user_data / public_key / freshness requirements.
        Without one that pins PCR0 (`policy.require_pinned_image`), the document may come
        from any enclave image under the root; chain-only callers (the KMS emulator, which
        evaluates PCR0 through the key policy) must check the image themselves.
    """
    if at is None:
        at = datetime.now(UTC)
    elif at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("verification time must be a timezone-aware datetime")
    anchor = AWS_NITRO_ROOT_G1_DER if root_der is None else root_der

    document = parse_attestation(data)
    path = verify_chain(document.certificate, document.cabundle, anchor, at)
    verify_es384(document.protected, document.payload, document.signature, path[0].public_key())
    if policy is not None:
        policy.check(document, at=at)
    log.info("attestation document from %s verified at %s", document.module_id, at.isoformat())
    return document
