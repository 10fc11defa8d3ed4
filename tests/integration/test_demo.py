"""`hermetic demo` as a new user runs it: separate processes, real sockets."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from parent.local.demo import FASHION_MNIST, _plaintext_leaks

pytestmark = pytest.mark.skipif(
    not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed (make dataset)"
)


def test_leak_scan_finds_plaintext_when_it_is_there() -> None:
    with gzip.open(FASHION_MNIST, "rb") as fh:
        raw = fh.read()
    assert _plaintext_leaks(FASHION_MNIST, b"noise" + raw[1000:] + b"noise") >= 190
    assert _plaintext_leaks(FASHION_MNIST, b"\x00" * 100_000) == 0


def test_demo_proves_the_data_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "parent.cli", "demo", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["records"] == 60000
    assert report["enclave_plaintext_sha256"] == report["owner_plaintext_sha256"]
    assert report["parent_plain_decrypt"] == "AccessDeniedException"
    assert "AccessDenied" in report["modified_enclave_outcome"]
    assert report["modified_enclave_pcr0"] != report["pcr0"]
    assert len(report["proved"]) == 4
    assert "equals the owner's" in proc.stdout
