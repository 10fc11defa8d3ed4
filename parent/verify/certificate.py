"""Verifying a privacy certificate anywhere, offline.

Order: the caller's policy must pin the enclave image (PCR0) -> parse the file
(sizes, canonical CBOR) and the document -> attestation
chain and signature at the document's own time (certificates are archived; the
leaf lives ~3 hours) -> binding (user_data == SHA-384(body bytes)) -> strict
body decoding (only attested bytes get interpreted) -> attested PCRs -> consistency ->
replay of the ledger with every known accountant. No stated privacy number is believed:
the reported epsilons are the replayed ones.
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from enclave.attestation.document import AttestationDocument, parse_attestation
from enclave.certificate.body import CertificateBody, DatasetRecord
from enclave.certificate.checks import (
    check_attested_pcrs,
    check_body,
    metrics_epsilon,
    parse_time,
)
from enclave.certificate.errors import (
    BudgetExceeded,
    CertificateBindingError,
    DebugEnclaveCertificate,
    InconsistentCertificate,
    StatedEpsilonTooLow,
)
from enclave.certificate.issue import body_digest
from enclave.privacy.accountants import NAMES
from parent.verify.accounting import REL_TOLERANCE, recompute_body_epsilons
from parent.verify.attestation import verify_attestation
from parent.verify.body import decode_body
from parent.verify.envelope import decode_envelope
from parent.verify.policy import DEFAULT_CLOCK_SKEW, AttestationPolicy, require_pinned_image

__all__ = ["VerifiedCertificate", "verify_certificate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that passed every check, with the epsilons the verifier recomputed."""

    body: CertificateBody
    attestation: AttestationDocument
    epsilons: Mapping[str, float] = field(hash=False)
    accountant: str
    body_sha384: bytes

    @property
    def epsilon(self) -> float:
        """The recomputed epsilon under `accountant` (the body's primary unless overridden)."""
        return self.epsilons[self.accountant]

    @property
    def attested_at(self) -> datetime:
        return self.attestation.timestamp


def verify_certificate(
    data: bytes,
    *,
    policy: AttestationPolicy,
    root_der: bytes | None = None,
    accountant: str | None = None,
    allow_debug: bool = False,
) -> VerifiedCertificate:
    """Verify a certificate file; raise a CertificateError or AttestationError subclass otherwise.

    policy: the attestation requirements, checked at the document's own time (so a max_age
        in it constrains nothing here). It must pin the image: every allowed PCR set names
        PCR0, e.g. `AttestationPolicy.from_pcrs({0: pcr0, 1: pcr1, 2: pcr2})`; otherwise
        ImageNotPinned is raised before anything is read. The root signs documents for
        every enclave, so without PCR0 any image could issue a certificate that verifies.
    root_der: trust anchor; defaults to the pinned AWS Nitro Enclaves Root-G1.
    accountant: which recomputed epsilon `.epsilon` reports; default the body's primary.
        Every known accountant is replayed and checked regardless.
    allow_debug: accept debug-mode enclaves (PCR0/1/2 zero), whose memory the host
        can read; only for local experiments.
    """
    if accountant is not None and accountant not in NAMES:
        raise ValueError(f"accountant must be one of {NAMES}")
    require_pinned_image(policy)
    body_bytes, document_bytes = decode_envelope(data)
    archived = parse_attestation(document_bytes)

    document = verify_attestation(
        document_bytes, root_der=root_der, at=archived.timestamp, policy=policy
    )
    digest = body_digest(body_bytes)
    if document.user_data is None or not hmac.compare_digest(document.user_data, digest):
        raise CertificateBindingError(
            "attestation user_data is not SHA-384 of the certificate body: body and "
            "attestation do not belong together"
        )
    # Only bytes the enclave attested are interpreted (strictly) past this point.
    body = decode_body(body_bytes)
    check_attested_pcrs(body, document.pcrs)
    if document.is_debug_mode and not allow_debug:
        raise DebugEnclaveCertificate(
            "the certificate was attested by a debug-mode enclave (PCR0/1/2 zero): its host "
            "could read and alter it"
        )
    check_body(body)
    if parse_time(body.finished_at, "finished_at") > document.timestamp + DEFAULT_CLOCK_SKEW:
        raise InconsistentCertificate(
            f"finished_at {body.finished_at} is later than the certificate's attestation at "
            f"{document.timestamp.isoformat()} (allowed clock skew {DEFAULT_CLOCK_SKEW})"
        )

    recomputed = recompute_body_epsilons(body, body.delta)
    for name, stated in body.epsilon.items():
        truth = recomputed[name]
        if stated < truth * (1.0 - REL_TOLERANCE):
            raise StatedEpsilonTooLow(
                f"stated {name} epsilon {stated!r} is lower than the recomputed {truth!r}"
            )
    spent = recomputed[body.accountant] + metrics_epsilon(body)
    if spent > body.budget["max_epsilon"] * (1.0 + REL_TOLERANCE):
        raise BudgetExceeded(
            f"recomputed epsilon {spent!r} is above the budget's max_epsilon "
            f"{body.budget['max_epsilon']!r}"
        )
    for record in body.datasets:
        _check_dataset_epsilon(body, record)
    log.info("privacy certificate for job %s verified (attested %s)", body.job_id,
             document.timestamp.isoformat())
    return VerifiedCertificate(
        body=body,
        attestation=document,
        epsilons=MappingProxyType(recomputed),
        accountant=accountant or body.accountant,
        body_sha384=digest,
    )


def _check_dataset_epsilon(body: CertificateBody, record: DatasetRecord) -> None:
    """The job's epsilon on one dataset, recomputed at that dataset's delta, against its own cap."""
    name = record.dataset_id[:64]
    delta, cap = float(record.encryption_context["delta"]), float(record.encryption_context["max_epsilon"])
    truth = recompute_body_epsilons(body, delta)[body.accountant]
    if record.epsilon < truth * (1.0 - REL_TOLERANCE):
        raise StatedEpsilonTooLow(
            f"dataset {name!r}: stated epsilon {record.epsilon!r} is lower than the recomputed {truth!r} at its delta"
        )
    if truth + metrics_epsilon(body) > cap * (1.0 + REL_TOLERANCE):
        raise BudgetExceeded(f"dataset {name!r}: recomputed epsilon {truth!r} is above its max_epsilon {cap!r}")
