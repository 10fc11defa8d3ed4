"""Render the report once and put its files into place: report.html, report.pdf and report.json.

Everything is rendered in memory first, so a failure while rendering writes nothing;
each file is then written atomically (`parent.storage.write_atomic`): a reader sees
the previous file or the whole new one, never half of it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from parent.report.content import build_document
from parent.report.facts import ReportFacts
from parent.report.html import render_html
from parent.report.pdf import render_pdf
from parent.storage import write_atomic

__all__ = ["HTML_NAME", "JSON_NAME", "PDF_NAME", "ReportFiles", "write_report"]

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
PDF_NAME = "report.pdf"
JSON_NAME = "report.json"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pdf: Path
    json: Path


def write_report(facts: ReportFacts, out_dir: Path) -> ReportFiles:
    """Render `facts` and write the three files into `out_dir` (created if missing)."""
    document = build_document(facts)
    rendered = {
        HTML_NAME: render_html(document).encode("utf-8"),
        PDF_NAME: render_pdf(document),
        JSON_NAME: (json.dumps(facts.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8"),
    }
    out_dir = Path(out_dir)
    for name, data in rendered.items():
        write_atomic(out_dir / name, data)
    log.info("report for job %s written to %s", facts.job_id, out_dir)
    return ReportFiles(out_dir / HTML_NAME, out_dir / PDF_NAME, out_dir / JSON_NAME)
