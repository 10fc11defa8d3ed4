"""`hermetic audit-log verify` refusals: no head to check, another chain, bad options."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enclave.audit_log import AuditChain, encode_log
from enclave.certificate.body import AUDITED_BODY_VERSION, encode_body
from enclave.certificate.envelope import encode_envelope
from parent.cli import main
from tests.support.certificates import make_body

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _chain(nonce: bytes, job_id: str = "job-0001") -> AuditChain:
    chain = AuditChain(job_id, nonce, lambda: NOW)
    chain.close(model_sha256="m", checkpoint_sha256="c", steps=1)
    return chain


def _files(tmp_path: Path, chain: AuditChain, *, audited: bool = True) -> tuple[str, str]:
    fields = {"version": AUDITED_BODY_VERSION, "audit_log_sha256": chain.head.hex(),
              "audit_log_events": chain.count} if audited else {}
    # Decoding only (no pin): the attestation is not read, so any bytes stand in for it.
    (tmp_path / "c.cbor").write_bytes(encode_envelope(encode_body(make_body(**fields)), b"unread"))
    (tmp_path / "log.cbor").write_bytes(encode_log(chain.records))
    return str(tmp_path / "log.cbor"), str(tmp_path / "c.cbor")


def test_an_honest_pair_verifies_with_a_note_that_the_certificate_was_only_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, cert = _files(tmp_path, _chain(b"\x01" * 16))
    assert main(["audit-log", "verify", log, "--certificate", cert]) == 0
    out = capsys.readouterr().out
    assert "audit log: VALID (2 events of job job-0001" in out and "verify-certificate" in out


def test_another_sessions_chain_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, cert = _files(tmp_path, _chain(b"\x01" * 16))
    (tmp_path / "other.cbor").write_bytes(encode_log(_chain(b"\x02" * 16).records))
    assert main(["audit-log", "verify", str(tmp_path / "other.cbor"), "--certificate", cert, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and "event 1 (certificate_issuing)" in report["error"]


def test_a_certificate_without_an_audit_trail_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, cert = _files(tmp_path, _chain(b"\x01" * 16), audited=False)
    assert main(["audit-log", "verify", log, "--certificate", cert]) == 1
    assert "body version 5) states no audit log" in capsys.readouterr().err


def test_root_without_a_pin_is_a_usage_error(tmp_path: Path) -> None:
    log, cert = _files(tmp_path, _chain(b"\x01" * 16))
    with pytest.raises(SystemExit) as info:
        main(["audit-log", "verify", log, "--certificate", cert, "--root", str(tmp_path / "root.pem")])
    assert info.value.code == 2
