"""The parent writes the audit log as released, beside the certificate, and renders it for people."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enclave.audit_log import AuditChain, AuditLogError, encode_log
from enclave.transport.messages import AuditLog
from parent.proxy.artifacts import AUDIT_LOG, AUDIT_LOG_JSONL, ArtifactError, ArtifactSink


def _log() -> bytes:
    chain = AuditChain("job-1", b"\x05" * 16, lambda: datetime(2025, 1, 1, tzinfo=UTC))
    chain.append("metric_released", name="acc", kind="public_eval", step=1, value=0.5)
    chain.close(model_sha256="m", checkpoint_sha256="c", steps=1)
    return encode_log(chain.records)


def test_the_log_is_written_as_released_and_rendered_one_event_a_line(tmp_path: Path) -> None:
    sink = ArtifactSink(tmp_path)
    sink(AuditLog(data=_log()))
    assert (tmp_path / AUDIT_LOG).read_bytes() == _log()
    lines = [json.loads(line) for line in (tmp_path / AUDIT_LOG_JSONL).read_text().splitlines()]
    assert [line["type"] for line in lines] == ["session_start", "metric_released", "certificate_issuing"]
    assert lines[0]["fields"] == {"job_id": "job-1", "nonce": "05" * 16}
    assert sink.summary()["audit_log"] == str(tmp_path / AUDIT_LOG)


def test_a_second_log_is_refused(tmp_path: Path) -> None:
    sink = ArtifactSink(tmp_path)
    sink(AuditLog(data=_log()))
    with pytest.raises(ArtifactError):
        sink(AuditLog(data=_log()))


def test_a_malformed_log_is_kept_as_released_but_not_rendered(tmp_path: Path) -> None:
    sink = ArtifactSink(tmp_path)
    with pytest.raises(AuditLogError):
        sink(AuditLog(data=b"\xa0"))
    assert (tmp_path / AUDIT_LOG).read_bytes() == b"\xa0"
    assert not (tmp_path / AUDIT_LOG_JSONL).exists() and sink.summary()["audit_log"] is None
