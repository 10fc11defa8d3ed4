"""The HTML report as a browser draws it: headless Chromium takes a screenshot, which must not be blank."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from parent.inputs import load_certificate_der, load_measurements
from parent.report.facts import gather_facts
from parent.report.writer import write_report
from tests.parent.report.evidence import Evidence

CHROMIUM = shutil.which("chromium-headless-shell") or "/usr/bin/chromium-headless-shell"
WIDTH, HEIGHT = 1200, 3000


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                    reason="chromium-headless-shell is not installed (Debian package; `make browser` installs it)")
def test_a_browser_renders_the_report(evidence: Evidence, tmp_path: Path) -> None:
    facts = gather_facts(
        evidence.certificate.read_bytes(), certificate_name=str(evidence.certificate),
        pcrs=load_measurements(evidence.measurements), root_der=load_certificate_der(evidence.root),
        measurements_name=str(evidence.measurements), ledger=str(evidence.ledger),
        audit_log=evidence.audit_log.read_bytes(), audit_log_name=str(evidence.audit_log))
    files = write_report(facts, tmp_path / "report")
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", files.html.resolve().as_uri()],
        capture_output=True, timeout=120, check=True, stdin=subprocess.DEVNULL)
    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    # Not blank: the page has text, tables and figures, so its pixels vary a lot, and not only at the top.
    assert pixels.std() > 0.05
    assert pixels[HEIGHT // 2 :].std() > 0.05
    assert len({tuple(row) for row in pixels[::50, ::50, :3].reshape(-1, 3).round(2).tolist()}) > 20
