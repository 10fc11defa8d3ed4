"""A verified certificate with everything a report reads: root, measurements, ledger, audit log.

Nothing is trained: the certificate is issued by the mock NSM over a consistent body
(`tests.support.certificates`), the budget ledger holds entries signed with the ledger
key the body's encryption context names, and the audit chain's head is the body's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enclave.audit_log import AuditChain, encode_log
from enclave.certificate.body import AUDITED_BODY_VERSION, DatasetRecord, ReleasedMetric
from enclave.certificate.issue import issue_certificate
from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.entry import LedgerEntry, encode_entry, stored_sha256
from enclave.ledger.local import slot_name
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.sealed.format import build_encryption_context
from parent.local.local_ca import LocalCa
from tests.support.certificates import DELTA, MAX_EPSILON, PCRS, SIGMA, STEPS, Q, make_body, new_nsm, sha256_hex

DATASET = "patients-2024"
JOB = "job-0001"
EARLIER_JOB = "job-0000"
EARLIER = Segment(0.01, 1.5, 40)
KEY = LedgerSigningKey(bytes(range(32)), DATASET)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Evidence:
    certificate: Path
    root: Path
    measurements: Path
    ledger: Path
    audit_log: Path
    dataset_epsilon: float  # what the ledger holds after this job's entry

    def pins(self) -> list[str]:
        return [str(self.certificate), "--root", str(self.root), "--measurements", str(self.measurements)]


def _entry(seq: int, prev: str, job_id: str, segment: Segment) -> bytes:
    return encode_entry(LedgerEntry(dataset_id=DATASET, seq=seq, prev=prev, job_id=job_id, nonce=os.urandom(16),
                                    accountant="prv", delta=DELTA, segments=(segment,),
                                    created_at=1_735_689_600 + seq * 3600), KEY)


def write_ledger(root: Path, jobs: list[tuple[str, Segment]]) -> None:
    """Entries for `jobs`, in order, as a local ledger directory ROOT/DATASET/."""
    directory = root / DATASET
    directory.mkdir(parents=True, exist_ok=True)
    prev = ""
    for seq, (job_id, segment) in enumerate(jobs):
        data = _entry(seq, prev, job_id, segment)
        (directory / slot_name(seq)).write_bytes(data)
        prev = stored_sha256(data)


def audit_chain() -> AuditChain:
    chain = AuditChain(JOB, b"\x07" * 16, lambda: NOW)
    chain.append("ledger_read", dataset_id=DATASET, spent_epsilon=0.5)
    chain.append("budget_reserved", dataset_id=DATASET, slot=1, steps=STEPS)
    chain.append("dataset_opened", dataset_id=DATASET, records=60000, sealed_sha256=sha256_hex("sealed"))
    chain.append("metric_released", name="accuracy/public", kind="public_eval", step=50, value=0.71)
    chain.append("metric_released", name="test_accuracy", kind="public_eval", step=STEPS, value=0.8125)
    chain.close(model_sha256=sha256_hex("model"), checkpoint_sha256=sha256_hex("checkpoint"), steps=STEPS)
    return chain


def make_evidence(ca: LocalCa, directory: Path, **body: Any) -> Evidence:
    ledger = directory / "ledger"
    this_job = Segment(Q, SIGMA, STEPS)
    write_ledger(ledger, [(EARLIER_JOB, EARLIER), (JOB, this_job)])
    context = build_encryption_context(
        dataset_id=DATASET, owner="hospital-a", max_epsilon=MAX_EPSILON, delta=DELTA, record_count=60000,
        schema_sha256=sha256_hex("schema"), ledger=f"local:{ledger}", ledger_public_key=KEY.public_key_hex,
        model_owner_keys=["alias/hermetic-model-owner"])
    epsilon = compose_epsilon([this_job], DELTA, "prv")
    spent = compose_epsilon([EARLIER, this_job], DELTA, "prv")
    chain = audit_chain()
    fields: dict[str, Any] = {
        "version": AUDITED_BODY_VERSION, "audit_log_sha256": chain.head.hex(), "audit_log_events": chain.count,
        "datasets": (DatasetRecord(DATASET, sha256_hex("sealed"), "alias/hospital-a", context, 60000, epsilon,
                                   spent),),
        "metrics": (ReleasedMetric("accuracy/public", 0.71, "public_eval", 50, 0.0),
                    ReleasedMetric("test_accuracy", 0.8125, "public_eval", STEPS, 0.0)),
    }
    fields.update(body)
    certificate = directory / "certificate.cbor"
    certificate.write_bytes(issue_certificate(make_body(**fields), new_nsm(ca)))
    root = directory / "root.pem"
    root.write_bytes(ca.root_pem)
    measurements = directory / "measurements.json"
    measurements.write_text(json.dumps({"Measurements": {f"PCR{i}": PCRS[i].hex() for i in (0, 1, 2)},
                                        "HashAlgorithm": "Sha384 { ... }"}))
    audit_log = directory / "audit-log.cbor"
    audit_log.write_bytes(encode_log(chain.records))
    return Evidence(certificate, root, measurements, ledger, audit_log, spent)


def audit_result(**overrides: Any) -> dict[str, Any]:
    """A well-formed `hermetic audit --json` result."""
    result: dict[str, Any] = {
        "epsilon_certified": 2.0, "epsilon_lower_bound": 0.4, "ceiling": 1.9, "canaries": 1000,
        "canary_kind": "dirac", "guesses": 100,
        "correct": 92, "confidence": 0.95, "control": False, "delta": DELTA, "accountant": "prv",
        "sampling_rate": Q, "noise_multiplier": SIGMA, "steps": STEPS, "records": 60000, "seconds": 312.5,
        "job": "audit-job", "verdict": "consistent: the lower bound does not exceed the certified epsilon",
    }
    result.update(overrides)
    return result
