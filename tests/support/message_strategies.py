"""Hypothesis strategies for every registered message type (shared by the transport tests).

`STRATEGIES` maps each message class to a strategy for valid instances; the registry
test fails when a registered type has none here.
"""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from enclave.transport.messages import (
    AuditEvent,
    AuditLog,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Credentials,
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
    MetricRelease,
    TrainingJob,
    TrainingProgress,
)

_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_float = st.floats(allow_nan=False)
_text = st.text(max_size=30)
_nonempty = st.text(min_size=1, max_size=30)
_digest = st.binary(min_size=32, max_size=32)
_scalar = st.one_of(st.booleans(), _i64, _float, _text)


def _progress(bounds: tuple[int, int], epsilon: float) -> TrainingProgress:
    step, total = sorted(bounds)
    return TrainingProgress(step=step, total_steps=total, epsilon=epsilon)


STRATEGIES: dict[type[Message], st.SearchStrategy[Any]] = {
    Hello: st.builds(Hello, _nonempty, _u64),
    Goodbye: st.builds(Goodbye),
    Error: st.builds(Error, _text, _text),
    Credentials: st.builds(
        Credentials,
        _nonempty,
        _text,
        st.none() | _text,
        _nonempty,
        st.sampled_from(["https://kms.us-east-1.amazonaws.com", "http://127.0.0.1:4000"]),
        st.none() | _u64,
    ),
    JobStart: st.builds(JobStart, _nonempty, st.lists(_nonempty, max_size=5)),
    TrainingJob: st.builds(TrainingJob, st.text(min_size=1, max_size=200)),
    DatasetBegin: st.builds(DatasetBegin, _u64, _text, st.none() | _u64),
    DatasetData: st.builds(DatasetData, st.binary(max_size=300)),
    DatasetEnd: st.builds(DatasetEnd, _u64, _digest),
    AuditEvent: st.builds(AuditEvent, _nonempty, st.dictionaries(_text, _scalar, max_size=5)),
    JobResult: st.builds(JobResult, _text, _text),
    TrainingProgress: st.builds(_progress, st.tuples(_u64, _u64), _float),
    MetricRelease: st.builds(MetricRelease, _text, _float, _text, _i64),
    CheckpointBegin: st.builds(CheckpointBegin, _u64, _u64, st.booleans()),
    CheckpointData: st.builds(CheckpointData, st.binary(max_size=300)),
    CheckpointEnd: st.builds(CheckpointEnd, _u64, _digest),
    CertificateIssued: st.builds(CertificateIssued, st.binary(max_size=300)),
    AuditLog: st.builds(AuditLog, st.binary(max_size=300)),
}

MESSAGES: st.SearchStrategy[Message] = st.one_of(*STRATEGIES.values())
