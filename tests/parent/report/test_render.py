"""HTML and PDF render the same document: self-contained HTML, a multi-page PDF, every section present."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from parent.audit.result import parse_audit_result
from parent.inputs import load_certificate_der, load_measurements
from parent.report.content import AUDIT_COMMAND, build_document
from parent.report.document import Figure
from parent.report.facts import ReportFacts, gather_facts
from parent.report.frameworks import frameworks
from parent.report.html import render_html
from parent.report.pdf import render_pdf
from parent.report.writer import write_report
from tests.parent.report.evidence import Evidence, audit_result

FRAMEWORK_TITLES = ("NIST SP 800-226", "GDPR", "HIPAA", "CCPA")


def facts_of(evidence: Evidence, *, empirical: bool = False, ledger: bool = True) -> ReportFacts:
    return gather_facts(
        evidence.certificate.read_bytes(), certificate_name=str(evidence.certificate),
        pcrs=load_measurements(evidence.measurements), root_der=load_certificate_der(evidence.root),
        measurements_name=str(evidence.measurements), ledger=str(evidence.ledger) if ledger else None,
        audit_log=evidence.audit_log.read_bytes(), audit_log_name=str(evidence.audit_log),
        empirical=(parse_audit_result(json.dumps(audit_result()).encode()),) if empirical else ())


def test_html_is_self_contained_and_states_the_computed_guarantee(evidence: Evidence) -> None:
    facts = facts_of(evidence)
    page = render_html(build_document(facts))
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == 3  # epsilon curve, budget over jobs, accuracy
    assert "Certificate verified" in page
    assert f"epsilon = {facts.total_epsilon:.4g}" in page and f"delta = {facts.delta:.4g}" in page
    for title in FRAMEWORK_TITLES:
        assert re.search(rf"<h2>\d+\. {re.escape(title)}", page), title
    assert "45 CFR 164.514(b)(1)" in page and "1798.140(m)" in page and "Art. 35" in page
    assert "No empirical audit was supplied" in page and AUDIT_COMMAND.replace(">", "&gt;") in page


def test_text_is_escaped(evidence: Evidence) -> None:
    facts = facts_of(evidence)
    hostile = ReportFacts(**{**facts.__dict__, "certificate_file": "<img src=x onerror=alert(1)>"})
    page = render_html(build_document(hostile))
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_the_empirical_audit_is_shown_as_the_operators_unattested_statement(evidence: Evidence) -> None:
    page = render_html(build_document(facts_of(evidence, empirical=True)))
    assert "Supplied by the operator, not attested." in page and "public or synthetic" in page
    assert "<td>noised run</td><td>0.4 at 0.95</td><td>1.9</td><td>92 / 100 (1000 dirac canaries)</td>" in page
    assert "not above the accountant&#x27;s epsilon, as it must not be" in page
    assert "No empirical audit was supplied" not in page


def test_a_noised_run_and_its_control_are_shown_side_by_side(evidence: Evidence) -> None:
    page = _with_audit(evidence, {}, {"control": True, "epsilon_lower_bound": 3.5, "ceiling": 4.0, "correct": 100})
    assert "<td>no-noise control</td><td>3.5 at 0.95</td>" in page
    assert "the audit sees a mechanism without noise" in page and "did not rise above" not in page
    missed = _with_audit(evidence, {}, {"control": True, "epsilon_lower_bound": 1.5, "correct": 99})
    assert "NOT above the accountant&#x27;s epsilon" in missed and "did not rise above" in missed


def test_without_a_ledger_the_budget_figure_is_replaced_by_a_sentence(evidence: Evidence) -> None:
    document = build_document(facts_of(evidence, ledger=False))
    figures = [b for s in document.sections for b in s.blocks if isinstance(b, Figure)]
    assert len(figures) == 2
    assert "No budget ledger was supplied" in render_html(document)


def test_every_framework_row_names_evidence_and_a_duty(evidence: Evidence) -> None:
    tables = frameworks(facts_of(evidence))
    assert [t.key for t in tables] == ["nist", "gdpr", "hipaa", "ccpa"]
    for table in tables:
        assert table.rows and all(row.requirement and row.evidence and row.duty for row in table.rows)
    nist = {row.requirement.split(":")[0]: row for row in tables[0].rows}
    assert "Unit of privacy" in nist and "Randomness generation" in nist and "Side channels and implementation hazards" in nist


def test_pdf_has_several_pages(evidence: Evidence) -> None:
    pdf = render_pdf(build_document(facts_of(evidence)))
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) > 1


def test_the_writer_puts_three_files_into_place(evidence: Evidence, tmp_path: Path) -> None:
    files = write_report(facts_of(evidence), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.pdf"]
    facts = json.loads(files.json.read_text())
    assert facts["verdict"] == "certificate verified" and facts["ledgers"][0]["agrees"] is True
    assert facts["total_epsilon"] == pytest.approx(facts["epsilon"])


def _with_audit(evidence: Evidence, *results: dict[str, object]) -> str:
    facts = facts_of(evidence)
    audits = tuple(parse_audit_result(json.dumps(audit_result(**result)).encode()) for result in results)
    return render_html(build_document(ReportFacts(**{**facts.__dict__, "empirical": audits})))


def test_an_audit_of_another_recipe_or_above_epsilon_is_flagged(evidence: Evidence) -> None:
    same = _with_audit(evidence, {})
    assert "not the certified job&#x27;s" not in same and "ABOVE" not in same
    assert "not the certified job&#x27;s" in _with_audit(evidence, {"sampling_rate": 0.02})
    assert "ABOVE the accountant" in _with_audit(evidence, {"epsilon_lower_bound": 1.8, "epsilon_certified": 1.0})
