"""`hermetic report` through the real CLI entry point: a report for a verified certificate, nothing otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parent.cli import main
from parent.local.local_ca import LocalCa
from tests.parent.report.evidence import Evidence, audit_result, make_evidence
from tests.support.certificates import PCRS


@pytest.fixture()
def evidence(ca: LocalCa, tmp_path: Path) -> Evidence:
    return make_evidence(ca, tmp_path / "evidence")


def report(evidence: Evidence, out: Path, *extra: str) -> int:
    return main(["report", *evidence.pins(), "--ledger", str(evidence.ledger), "--audit-log",
                 str(evidence.audit_log), "--out", str(out), *extra])


def refused(evidence: Evidence, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, str]:
    """Exit 1, one error object, one line on stderr, and nothing written."""
    assert report(evidence, out, *extra, "--json") == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)
    assert captured.err == f"hermetic: error: {error['error']}\n"
    assert not out.exists()
    return error


def test_a_verified_certificate_gets_its_report(evidence: Evidence, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert report(evidence, out, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"] == "certificate verified" and printed["html"] == str(out / "report.html")
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")
    facts = json.loads((out / "report.json").read_text())
    assert facts["job_id"] == "job-0001" and facts["audit_trail"]["count"] == 7
    assert facts["epsilon"] == pytest.approx(printed["epsilon"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_the_text_summary_names_the_files(evidence: Evidence, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert report(evidence, tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert out.startswith("privacy certificate: VALID; report for job job-0001") and "report.pdf" in out


def test_wrong_root_is_refused(evidence: Evidence, other_ca: LocalCa, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    evidence.root.write_bytes(other_ca.root_pem)
    assert refused(evidence, tmp_path / "r", capsys)["code"] == "attestation"


def test_wrong_measurements_are_refused(evidence: Evidence, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    evidence.measurements.write_text(json.dumps({"PCR0": PCRS[0].hex(), "PCR2": "ab" * 48}))
    error = refused(evidence, tmp_path / "r", capsys)
    assert error["error_type"] == "PcrMismatch" and "PCR2" in error["error"]


def test_a_tampered_certificate_is_refused(evidence: Evidence, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = evidence.certificate.read_bytes()
    evidence.certificate.write_bytes(data.replace(b"hospital-a", b"hospital-b", 1))
    assert refused(evidence, tmp_path / "r", capsys)["code"] == "certificate"


def test_an_unpinned_image_is_refused(evidence: Evidence, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["report", str(evidence.certificate), "--root", str(evidence.root), "--out", str(out),
                 "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error_type"] == "ImageNotPinned" and not out.exists()


def test_a_tampered_audit_log_is_refused(evidence: Evidence, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = evidence.audit_log.read_bytes()
    evidence.audit_log.write_bytes(data.replace(b"accuracy/public", b"accuracy/PUBLIC", 1))
    error = refused(evidence, tmp_path / "r", capsys)
    assert error["error_type"] == "AuditLogError" and "event 5 (metric_released)" in error["error"]


def test_a_bad_audit_result_is_a_typed_error(evidence: Evidence, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "audit.json"
    bad.write_text(json.dumps(audit_result(correct=-1)))
    error = refused(evidence, tmp_path / "r", capsys, "--audit", str(bad))
    assert error["error_type"] == "AuditResultError" and "correct" in error["error"]


def test_a_good_audit_result_is_in_the_report(evidence: Evidence, tmp_path: Path) -> None:
    result = tmp_path / "audit.json"
    result.write_text(json.dumps(audit_result()))
    control = tmp_path / "control.json"
    control.write_text(json.dumps(audit_result(control=True, epsilon_lower_bound=3.5, ceiling=4.0, correct=100)))
    assert report(evidence, tmp_path / "r", "--audit", str(result), "--audit", str(control)) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Supplied by the operator, not attested." in page
    assert "<td>noised run</td><td>0.4 at 0.95</td>" in page and "<td>no-noise control</td><td>3.5 at 0.95</td>" in page
    assert "the audit sees a mechanism without noise" in page
