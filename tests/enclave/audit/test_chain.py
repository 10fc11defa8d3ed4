"""The audit chain as an attacker sees it: every edit of a released log must be caught."""
from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from enclave import audit_log
from enclave.audit_log import (
    CLOSING_EVENT,
    GENESIS,
    AuditChain,
    AuditLogError,
    AuditRecord,
    decode_log,
    encode_log,
    verify_chain,
)
from enclave.transport.framing import DEFAULT_MAX_FRAME, encode_frame_parts
from enclave.transport.messages import AuditLog

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def _clock() -> Any:
    ticks = iter(range(10_000))
    return lambda: _EPOCH + timedelta(milliseconds=next(ticks))


def _chain(nonce: bytes = b"\x01" * 16, job_id: str = "job") -> AuditChain:
    chain = AuditChain(job_id, nonce, _clock())
    chain.append("dataset_opened", dataset_id="d", records=7, sealed_sha256="ab" * 32)
    chain.append("metric_released", name="acc", step=3, value=0.75)
    chain.append("checkpoint_emitted", step=3, sealed_sha256="cd" * 32)
    chain.close(model_sha256="m", steps=3)
    return chain


# --- known answers ------------------------------------------------------------------------


def test_known_answer_one_event_by_hand() -> None:
    record = AuditRecord(seq=1, type="x", time="t", fields={"v": 0.5, "n": 2}, prev=GENESIS)
    # RFC 8949 deterministic: map(5), keys sorted by length then bytes; floats always float64.
    expected = (
        "a5"
        "63736571" "01"                                 # "seq": 1
        "6470726576" "5820" + "00" * 32 +              # "prev": 32 zero bytes ("p" sorts before "t")
        "6474696d65" "6174"                             # "time": "t"
        "6474797065" "6178"                             # "type": "x"
        "666669656c6473" "a2" "616e02" "6176fb3fe0000000000000"  # "fields": {"n": 2, "v": 0.5}
    )
    assert record.encode().hex() == expected


# Pinned: a change here changes every head ever attested, so it needs a format version bump.
THREE_EVENT_HEAD = "82acab024a5029f0e309cced604fadaa92f3b2abe97fe899629a713df1b7643a"


def test_known_answer_three_event_head() -> None:
    chain = AuditChain("j", bytes(range(16)), lambda: _EPOCH)
    chain.append("metric_released", name="acc", step=1, value=0.25)
    head, count = chain.close(steps=1)
    assert count == 3
    # The head is the SHA-256 of the last record, which links the two before it.
    records = chain.records
    assert records[1].prev == hashlib.sha256(records[0].encode()).digest()
    assert records[2].prev == hashlib.sha256(records[1].encode()).digest()
    assert head == hashlib.sha256(records[2].encode()).digest()
    assert head.hex() == THREE_EVENT_HEAD


# --- the honest chain ---------------------------------------------------------------------


def test_an_honest_chain_verifies_through_its_file() -> None:
    chain = _chain()
    records = decode_log(encode_log(chain.records))
    summary = verify_chain(records, head=chain.head, count=chain.count)
    assert summary.count == 5 and summary.job_id == "job"
    assert dict(summary.by_type) == {"session_start": 1, "dataset_opened": 1, "metric_released": 1,
                                     "checkpoint_emitted": 1, CLOSING_EVENT: 1}


def test_nothing_is_recorded_after_the_chain_is_closed() -> None:
    chain = _chain()
    with pytest.raises(AuditLogError, match="closed"):
        chain.append("error", code="x", message="y")


def test_sessions_differ_by_their_nonce() -> None:
    assert _chain(b"\x01" * 16).head != _chain(b"\x02" * 16).head


def test_a_head_other_than_the_certificates_is_refused() -> None:
    chain = _chain()
    with pytest.raises(AuditLogError, match="event 4 .*head"):
        verify_chain(chain.records, head=bytes(32), count=chain.count)
    with pytest.raises(AuditLogError, match="certificate states 6"):
        verify_chain(chain.records, head=chain.head, count=6)


def test_a_chain_not_ending_with_its_closing_event_is_refused() -> None:
    chain = AuditChain("job", b"\x01" * 16, _clock())
    chain.append("metric_released", name="acc", step=3, value=0.75)
    with pytest.raises(AuditLogError, match="not the closing"):
        verify_chain(chain.records, head=chain.head, count=chain.count)


def test_field_values_have_exact_types() -> None:
    class Text(str):
        pass

    with pytest.raises(AuditLogError):
        AuditRecord(seq=0, type="x", time="t", fields={"a": Text("v")}, prev=GENESIS)
    with pytest.raises(AuditLogError):
        AuditRecord(seq=0, type="x", time="t", fields={"a": [1]}, prev=GENESIS)


# --- attacks ------------------------------------------------------------------------------


def _replace_field(record: AuditRecord, name: str, value: Any) -> AuditRecord:
    return dataclasses.replace(record, **{name: value})


def _flip(record: AuditRecord, which: int) -> AuditRecord:
    """A different record: one of its five attributes (or one field value) changed."""
    choice = which % 6
    if choice == 0:
        return _replace_field(record, "seq", record.seq + 1)
    if choice == 1:
        return _replace_field(record, "type", record.type + "x")
    if choice == 2:
        return _replace_field(record, "time", record.time.replace("Z", "1Z"))
    if choice == 3:
        return _replace_field(record, "prev", bytes(b ^ 1 for b in record.prev))
    if choice == 4:
        return _replace_field(record, "fields", {**record.fields, "extra": 1})
    name = sorted(record.fields)[0]
    value = record.fields[name]
    changed: Any = value + b"!" if isinstance(value, bytes) else (
        value + "!" if isinstance(value, str) else (not value if isinstance(value, bool) else value + 1))
    return _replace_field(record, "fields", {**record.fields, name: changed})


_OTHER = _chain(b"\x09" * 16)


def _mutate(records: list[AuditRecord], kind: int, i: int, j: int, which: int) -> list[AuditRecord]:
    n = len(records)
    i, j = i % n, j % n
    if kind == 0:
        records[i] = _flip(records[i], which)
    elif kind == 1:
        del records[i]
    elif kind == 2:
        if i == j:
            j = (i + 1) % n
        records[i], records[j] = records[j], records[i]
    elif kind == 3:
        del records[max(i, 1):]
    else:
        records[i] = _OTHER.records[i]
    return records


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(0, 4), i=st.integers(0, 100), j=st.integers(0, 100), which=st.integers(0, 100))
def test_every_mutation_is_caught(kind: int, i: int, j: int, which: int) -> None:
    chain = _chain()
    mutated = _mutate(list(chain.records), kind, i, j, which)
    assert mutated != list(chain.records)
    with pytest.raises(AuditLogError):
        verify_chain(decode_log(encode_log(mutated)), head=chain.head, count=chain.count)


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_file_bytes_are_refused_or_caught(flips: list[tuple[int, int]]) -> None:
    chain = _chain()
    original = encode_log(chain.records)
    data = bytearray(original)
    for offset, mask in flips:
        data[offset % len(data)] ^= mask
    assume(bytes(data) != original)  # two flips of one byte may cancel out
    with pytest.raises(AuditLogError):
        verify_chain(decode_log(bytes(data)), head=chain.head, count=chain.count)


def test_a_spliced_session_is_caught_even_whole() -> None:
    chain = _chain()
    with pytest.raises(AuditLogError, match="head"):
        verify_chain(_OTHER.records, head=chain.head, count=chain.count)


def test_the_chain_refuses_an_event_that_would_outgrow_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = _chain(b"\x03" * 16)
    monkeypatch.setattr(audit_log, "MAX_LOG_SIZE", len(encode_log(chain.records)) + 10)
    chain = AuditChain("job", b"\x03" * 16, _clock())
    with pytest.raises(AuditLogError, match="would exceed"):
        for _ in range(10):
            chain.append("metric_released", name="acc", step=3, value=0.75)


def test_a_log_of_the_largest_size_fits_one_transport_frame() -> None:
    prefix, body = encode_frame_parts(AuditLog(data=bytes(audit_log.MAX_LOG_SIZE)))
    assert len(prefix) + len(body) <= DEFAULT_MAX_FRAME
