"""`hermetic demo` as a new user runs it: separate processes, real sockets."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from parent.local.demo import FASHION_MNIST, _plaintext_leaks
from tests.support.trackers import read_event_scalars

pytestmark = pytest.mark.skipif(
    not FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed (make dataset)"
)


def test_leak_scan_finds_plaintext_when_it_is_there() -> None:
    with gzip.open(FASHION_MNIST, "rb") as fh:
        raw = fh.read()
    assert _plaintext_leaks(FASHION_MNIST, b"noise" + raw[1000:] + b"noise") >= 190
    assert _plaintext_leaks(FASHION_MNIST, b"\x00" * 100_000) == 0


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`hermetic demo`, shortened to a fraction of an epoch: every stage, every proof."""
    out = tmp_path / "demo"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "parent.cli", "demo", "--out", str(out), "--epochs", "0.2"],
            capture_output=True, text=True, timeout=600, check=False,
        )
    finally:
        # A demo killed by the timeout cannot stop its appliance itself.
        subprocess.run([sys.executable, "-m", "parent.cli", "local", "down", "--state", str(out / "state")],
                       capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["records"] == 60000
    # The opening proof runs on the owner's second sealed copy (a budget ledger of its own).
    assert report["enclave_sealed_sha256"] == report["proofs_sealed_sha256"] != report["sealed_sha256"]
    assert report["enclave_records"] == report["records"]
    assert "plaintext_sha256" not in json.dumps(report)
    assert report["parent_plain_decrypt"] == "AccessDeniedException"
    assert "AccessDenied" in report["modified_enclave_outcome"]
    assert report["modified_enclave_pcr0"] != report["pcr0"]
    assert len(report["proved"]) == 7
    assert "the owner's file and declared record count" in proc.stdout
    # The training job spent the dataset's budget: a second job was refused before any key use.
    assert "has spent epsilon" in report["second_job_outcome"]
    assert 0 < report["spent_epsilon"] <= 3.0
    # A fraction of an epoch still spends the whole budget it planned, and no more.
    assert 0 < report["epsilon"] <= 3.0
    assert report["steps"] > 0
    assert report["test_accuracy"] is not None and 0.1 < report["test_accuracy"] <= 1.0
    assert (out / "job" / "certificate.cbor").exists()
    # What the job released, charted as it arrived: the public test accuracy and the epsilon spent.
    charted = read_event_scalars(Path(report["tensorboard"]))
    released = {"accuracy/fashion-mnist-test", "privacy/epsilon"}
    assert released <= set(charted) <= released | {"throughput/steps_per_second"}
    assert charted["accuracy/fashion-mnist-test"][-1][1] == pytest.approx(report["test_accuracy"], rel=1e-6)
    assert charted["privacy/epsilon"][-1] == (report["steps"], pytest.approx(report["epsilon"], rel=1e-3))
    assert (out / "model.pt").exists()
    assert "Test accuracy on the public Fashion-MNIST test set" in proc.stdout
    # The demo ends with the compliance report of its training job.
    assert report["compliance_report"] == str(out / "report" / "report.html")
    page = (out / "report" / "report.html").read_text()
    assert "Certificate verified" in page and report["job_id"] in page
    assert (out / "report" / "report.pdf").read_bytes().startswith(b"%PDF-")
