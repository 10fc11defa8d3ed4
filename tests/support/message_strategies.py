"""Hypothesis strategies for every registered message type (shared by the transport tests)."""
from __future__ import annotations

from hypothesis import strategies as st

from enclave.transport.messages import (
    AuditEvent,
    Credentials,
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
)

_u64 = st.integers(0, 2**64 - 1)
_text = st.text(max_size=30)
_nonempty = st.text(min_size=1, max_size=30)
_scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    _text,
)

MESSAGES = st.one_of(
    st.builds(Hello, _nonempty, _u64),
    st.builds(Goodbye),
    st.builds(Error, _text, _text),
    st.builds(
        Credentials,
        _nonempty,
        _text,
        st.none() | _text,
        _nonempty,
        st.sampled_from(["https://kms.us-east-1.amazonaws.com", "http://127.0.0.1:4000"]),
        st.none() | _u64,
    ),
    st.builds(JobStart, _nonempty, st.lists(_nonempty, max_size=5)),
    st.builds(DatasetBegin, _u64, _text, st.none() | _u64),
    st.builds(DatasetData, st.binary(max_size=300)),
    st.builds(DatasetEnd, _u64, st.binary(min_size=32, max_size=32)),
    st.builds(AuditEvent, _nonempty, st.dictionaries(_text, _scalar, max_size=5)),
    st.builds(JobResult, _text, _text),
)
