"""A training job's output directory holds its audit log, which verifies against its certificate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.audit_log import decode_log, encode_log
from parent.cli import main
from tests.integration.conftest import DataPath
from tests.integration.test_training import _streams, _train_in_process, spec_toml


def test_the_output_directory_holds_an_audit_log_that_verifies(
    data_path: DataPath, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    out = tmp_path / "out"
    body = _train_in_process(data_path, "audit", _streams(data_path, sealed, tmp_path),
                             spec_toml(data_path.model_key_id, steps=10), out)
    log_path, certificate = out / "audit-log.cbor", out / "certificate.cbor"
    records = decode_log(log_path.read_bytes())
    assert body.audit_log_events == len(records)
    # The JSON lines rendering says the same, one event per line.
    lines = [json.loads(line) for line in (out / "audit-log.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == [r.type for r in records]
    assert lines[-1]["sha256"] == body.audit_log_sha256
    assert [r.fields["step"] for r in records if r.type == "metric_released"] == [m.step for m in body.metrics]

    # Decoding the certificate only: valid, with a note that it must be verified on its own.
    assert main(["audit-log", "verify", str(log_path), "--certificate", str(certificate), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["count"] == len(records) and not report["certificate_verified"]
    assert report["events"]["certificate_issuing"] == 1

    # Verifying the certificate too, with verify-certificate's pins.
    (tmp_path / "root.pem").write_bytes(data_path.ca.root_pem)
    pinned = ["--root", str(tmp_path / "root.pem"), "--pcr", f"0={data_path.pcrs[0].hex()}"]
    assert main(["audit-log", "verify", str(log_path), "--certificate", str(certificate), *pinned]) == 0
    assert "audit log: VALID" in capsys.readouterr().out

    # One event dropped: refused, naming where the chain breaks.
    tampered = tmp_path / "tampered.cbor"
    tampered.write_bytes(encode_log([*records[:2], *records[3:]]))
    assert main(["audit-log", "verify", str(tampered), "--certificate", str(certificate)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "event 2" in err[0]
