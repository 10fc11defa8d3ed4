"""Where the parent puts what the enclave releases: checkpoints, certificate, metrics, audit log.

Checkpoints arrive as ciphertext under the model owner's key and are written
atomically once their SHA-256 checks out; the certificate is written as the
enclave made it. Nothing here can read either.

The audit log is written as the enclave made it (`audit-log.cbor`, the evidence
`hermetic audit-log verify` checks against the certificate), then rendered one event
per line as `audit-log.jsonl` for people; a log that does not decode is refused
before the rendering, the CBOR file staying for inspection.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from enclave.audit_log import decode_log, record_to_json
from enclave.errors import HermeticError
from enclave.transport.messages import (
    AuditLog,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Message,
    MetricRelease,
    TrainingProgress,
)
from parent.storage import write_atomic

log = logging.getLogger(__name__)

FINAL_CHECKPOINT = "model.ckpt.sealed"
CERTIFICATE = "certificate.cbor"
AUDIT_LOG = "audit-log.cbor"
AUDIT_LOG_JSONL = "audit-log.jsonl"


class ArtifactError(HermeticError):
    """The enclave's released artefacts were inconsistent."""


@dataclass
class ArtifactSink:
    out_dir: Path
    on_progress: Callable[[TrainingProgress], None] | None = None
    on_metric: Callable[[MetricRelease], None] | None = None
    checkpoints: list[Path] = field(default_factory=list)
    metrics: list[MetricRelease] = field(default_factory=list)
    certificate: Path | None = None
    audit_log: Path | None = None
    last_progress: TrainingProgress | None = None
    _begin: CheckpointBegin | None = None
    _parts: list[bytes] = field(default_factory=list)

    def __call__(self, msg: Message) -> None:
        if isinstance(msg, TrainingProgress):
            self.last_progress = msg
            if self.on_progress is not None:
                self.on_progress(msg)
        elif isinstance(msg, MetricRelease):
            self.metrics.append(msg)
            if self.on_metric is not None:
                self.on_metric(msg)
        elif isinstance(msg, CheckpointBegin):
            self._begin, self._parts = msg, []
        elif isinstance(msg, CheckpointData):
            if self._begin is None:
                raise ArtifactError("checkpoint data arrived before CheckpointBegin")
            self._parts.append(msg.data)
        elif isinstance(msg, CheckpointEnd):
            self._finish_checkpoint(msg)
        elif isinstance(msg, CertificateIssued):
            path = self.out_dir / CERTIFICATE
            write_atomic(path, msg.data)
            self.certificate = path
            log.info("certificate written to %s", path)
        elif isinstance(msg, AuditLog):
            self._write_audit_log(msg)

    def _write_audit_log(self, msg: AuditLog) -> None:
        if self.audit_log is not None:
            raise ArtifactError("the enclave sent a second audit log")
        path = self.out_dir / AUDIT_LOG
        write_atomic(path, msg.data)
        records = decode_log(msg.data)
        lines = "".join(json.dumps(record_to_json(r), sort_keys=True) + "\n" for r in records)
        write_atomic(self.out_dir / AUDIT_LOG_JSONL, lines.encode())
        self.audit_log = path
        log.info("audit log of %d events written to %s", len(records), path)

    def _finish_checkpoint(self, end: CheckpointEnd) -> None:
        begin, data = self._begin, b"".join(self._parts)
        self._begin, self._parts = None, []
        if begin is None or begin.step != end.step or len(data) != begin.size:
            raise ArtifactError(f"checkpoint at step {end.step} arrived incomplete")
        if hashlib.sha256(data).digest() != end.sha256:
            raise ArtifactError(f"checkpoint at step {end.step} does not match its digest")
        path = self.out_dir / "checkpoints" / f"step-{end.step:08d}.sealed"
        write_atomic(path, data)
        self.checkpoints.append(path)
        if begin.final:
            write_atomic(self.out_dir / FINAL_CHECKPOINT, data)
        log.info("checkpoint at step %d written to %s", end.step, path)

    def summary(self) -> dict[str, object]:
        return {
            "checkpoints": [str(p) for p in self.checkpoints],
            "final_checkpoint": str(self.out_dir / FINAL_CHECKPOINT) if self.checkpoints else None,
            "certificate": str(self.certificate) if self.certificate else None,
            "audit_log": str(self.audit_log) if self.audit_log else None,
            "metrics": [
                {"name": m.name, "value": m.value, "kind": m.kind, "step": m.step} for m in self.metrics
            ],
        }

    def write_summary(self) -> None:
        write_atomic(self.out_dir / "released.json", (json.dumps(self.summary(), indent=2) + "\n").encode())
