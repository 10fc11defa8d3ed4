"""The report's facts: verified inputs only, numbers recomputed by the project's own accountants."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enclave.audit_log import AuditLogError
from enclave.certificate.errors import StatedEpsilonTooLow
from enclave.privacy.calibration import epsilon
from enclave.privacy.ledger import Segment
from parent.inputs import load_measurements
from parent.local.local_ca import LocalCa
from parent.report.errors import LedgerEvidenceError
from parent.report.facts import CURVE_POINTS, ReportFacts, gather_facts
from parent.verify.accounting import recompute_epsilon
from tests.parent.report.evidence import DATASET, EARLIER_JOB, JOB, Evidence, make_evidence, write_ledger
from tests.support.certificates import DELTA, SIGMA, STEPS, Q


def facts_of(evidence: Evidence, *, ledger: Path | None = None, audit_log: bytes | None = None) -> ReportFacts:
    return gather_facts(
        evidence.certificate.read_bytes(), certificate_name=str(evidence.certificate),
        pcrs=load_measurements(evidence.measurements), root_der=_der(evidence.root),
        ledger=str(ledger if ledger is not None else evidence.ledger),
        audit_log=audit_log if audit_log is not None else evidence.audit_log.read_bytes(),
        audit_log_name=str(evidence.audit_log))


def _der(path: Path) -> bytes:
    from parent.inputs import load_certificate_der

    return load_certificate_der(path)


def test_the_numbers_are_the_accountants_own(evidence: Evidence) -> None:
    facts = facts_of(evidence)
    assert facts.job_id == JOB and facts.accountant == "prv"
    assert facts.epsilon == pytest.approx(recompute_epsilon([{"q": Q, "sigma": SIGMA, "steps": STEPS}], DELTA, "prv"))
    assert facts.delta == DELTA and facts.privacy_unit == "record" and facts.neighbouring == "zero-out"
    assert len(facts.curve) == CURVE_POINTS and facts.curve[-1] == (STEPS, pytest.approx(facts.epsilon))
    step, value = facts.curve[9]
    assert value == pytest.approx(epsilon(Q, SIGMA, step, DELTA, "prv"))
    assert [(p.name, p.step) for p in facts.accuracy] == [("accuracy/public", 50), ("test_accuracy", STEPS)]
    assert facts.accuracy[0].epsilon == pytest.approx(epsilon(Q, SIGMA, 50, DELTA, "prv"))
    assert not facts.root_is_aws and facts.pinned_pcrs[0] == facts.attested_pcrs[0]


def test_the_ledger_is_verified_and_shows_every_job_on_the_dataset(evidence: Evidence) -> None:
    (ledger,) = facts_of(evidence).ledgers
    assert ledger.dataset_id == DATASET and [e.job_id for e in ledger.entries] == [EARLIER_JOB, JOB]
    assert [e.this_job for e in ledger.entries] == [False, True]
    assert ledger.spent_epsilon == pytest.approx(evidence.dataset_epsilon) and ledger.agrees
    assert ledger.entries[0].cumulative_epsilon < ledger.spent_epsilon
    assert not ledger.all_protected  # a local directory


def test_the_audit_trail_is_verified_and_summarised(evidence: Evidence) -> None:
    trail = facts_of(evidence).audit_trail
    assert trail is not None and trail.count == 7
    assert dict(trail.by_type)["metric_released"] == 2 and trail.events[0].type == "session_start"
    assert "dataset_id=patients-2024" in trail.events[1].fields


def test_a_tampered_audit_log_is_refused(evidence: Evidence) -> None:
    data = evidence.audit_log.read_bytes()
    tampered = data.replace(b"accuracy/public", b"accuracy/PUBLIC", 1)
    assert tampered != data
    with pytest.raises(AuditLogError):
        facts_of(evidence, audit_log=tampered)


def test_a_ledger_without_this_job_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    other = tmp_path / "other-ledger"
    write_ledger(other, [(EARLIER_JOB, Segment(0.01, 1.5, 40))])
    with pytest.raises(LedgerEvidenceError, match="holds no entry of job"):
        facts_of(evidence, ledger=other)


def test_a_ledger_with_a_rewritten_entry_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(evidence.ledger, copy)
    slot = copy / DATASET / "0000000000.entry"
    data = bytearray(slot.read_bytes())
    data[-1] ^= 1  # the signature no longer verifies
    slot.write_bytes(bytes(data))
    with pytest.raises(LedgerEvidenceError, match="does not verify"):
        facts_of(evidence, ledger=copy)


def test_a_missing_ledger_directory_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    with pytest.raises(LedgerEvidenceError, match="no directory"):
        facts_of(evidence, ledger=tmp_path / "nowhere")


def test_a_certificate_stating_too_little_epsilon_gets_no_facts(ca: LocalCa, tmp_path: Path) -> None:
    evidence = make_evidence(ca, tmp_path, epsilon={"prv": 0.01, "rdp": 0.01})
    with pytest.raises(StatedEpsilonTooLow):
        facts_of(evidence)
