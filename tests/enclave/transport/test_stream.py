from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator

import pytest

from enclave.transport.errors import (
    DatasetStreamError,
    PeerDisconnected,
    RemoteError,
    StreamDigestMismatch,
)
from enclave.transport.framing import FramedChannel
from enclave.transport.messages import (
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Hello,
    Message,
)
from enclave.transport.stream import DatasetStreamReader

PAYLOAD = bytes(range(256)) * 1000  # 256000 bytes


@pytest.fixture
def channels() -> Iterator[tuple[FramedChannel, FramedChannel]]:
    a, b = socket.socketpair()
    ca, cb = FramedChannel(a), FramedChannel(b)
    yield ca, cb
    ca.close()
    cb.close()


def _send_all(chan: FramedChannel, msgs: list[Message]) -> threading.Thread:
    def run() -> None:
        try:
            for m in msgs:
                chan.send(m)
        except PeerDisconnected:
            pass  # the reader gave up on a bad stream and closed its end


    t = threading.Thread(target=run)
    t.start()
    return t


def _good_stream(data: bytes = PAYLOAD, chunk: int = 7000, index: int = 2) -> list[Message]:
    msgs: list[Message] = [DatasetBegin(index, "ds-1", len(data))]
    msgs += [DatasetData(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    msgs.append(DatasetEnd(index, hashlib.sha256(data).digest()))
    return msgs


def test_reads_relayed_bytes_and_verifies_digest(channels) -> None:
    tx, rx = channels
    t = _send_all(tx, _good_stream() + [Hello("after", 1)])
    reader = DatasetStreamReader(rx, expected_index=2, expected_id="ds-1", timeout=10)
    assert (reader.index, reader.dataset_id, reader.size) == (2, "ds-1", len(PAYLOAD))
    assert reader.read() == PAYLOAD
    assert reader.finished and reader.bytes_received == len(PAYLOAD)
    assert reader.read(10) == b""
    # The reader stops exactly at DatasetEnd: the next message is still on the channel.
    assert rx.recv(timeout=10) == Hello("after", 1)
    t.join()


def test_short_reads_only_at_eof_and_buffered_wrapping(channels) -> None:
    tx, rx = channels
    t = _send_all(tx, _good_stream(chunk=1000))
    reader = DatasetStreamReader(rx, timeout=10)
    assert reader.read(1500) == PAYLOAD[:1500]  # spans two frames
    buffered = io.BufferedReader(reader)
    rest = b"".join(iter(lambda: buffered.read(4096), b""))
    assert PAYLOAD[:1500] + rest == PAYLOAD
    t.join()


def test_begin_passed_in(channels) -> None:
    tx, rx = channels
    msgs = _good_stream()
    t = _send_all(tx, msgs)
    begin = rx.recv(timeout=10)
    assert isinstance(begin, DatasetBegin)
    assert DatasetStreamReader(rx, begin, timeout=10).read() == PAYLOAD
    t.join()


def test_digest_mismatch(channels) -> None:
    tx, rx = channels
    msgs = _good_stream()
    msgs[-1] = DatasetEnd(2, hashlib.sha256(b"other").digest())
    t = _send_all(tx, msgs)
    reader = DatasetStreamReader(rx, timeout=10)
    with pytest.raises(StreamDigestMismatch):
        reader.read()
    assert not reader.finished
    t.join()


def test_reordered_frames_caught_by_digest(channels) -> None:
    tx, rx = channels
    msgs = _good_stream()
    msgs[1], msgs[2] = msgs[2], msgs[1]
    t = _send_all(tx, msgs)
    with pytest.raises(StreamDigestMismatch):
        DatasetStreamReader(rx, timeout=10).read()
    t.join()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: m[:1] + m[2:], "ended after"),  # a frame dropped
        (lambda m: m[:2] + m[1:], "more than its announced"),  # a frame repeated
        (lambda m: m[:-1] + [DatasetEnd(3, m[-1].sealed_sha256)], "index 3"),
        (lambda m: m[:3] + [Hello("x", 1)] + m[3:], "unexpected Hello"),
    ],
)
def test_protocol_violations(channels, mutate, match: str) -> None:
    tx, rx = channels
    msgs = mutate(_good_stream())
    t = _send_all(tx, msgs)
    with pytest.raises(DatasetStreamError, match=match):
        DatasetStreamReader(rx, timeout=10).read()
    rx.close()
    t.join()


def test_remote_error_mid_stream(channels) -> None:
    tx, rx = channels
    msgs = _good_stream()[:3] + [Error("dataset-read", "s3 went away")]
    t = _send_all(tx, msgs)
    reader = DatasetStreamReader(rx, timeout=10)
    with pytest.raises(RemoteError, match="dataset-read: s3 went away"):
        reader.read()
    t.join()


def test_first_message_must_be_begin_and_match(channels) -> None:
    tx, rx = channels
    t = _send_all(tx, [DatasetData(b"x"), DatasetBegin(0, "a", None)])
    with pytest.raises(DatasetStreamError, match="expected DatasetBegin"):
        DatasetStreamReader(rx, timeout=10)
    with pytest.raises(DatasetStreamError, match="expected 'b'"):
        DatasetStreamReader(rx, expected_id="b", timeout=10)
    t.join()


def test_unknown_size_stream(channels) -> None:
    tx, rx = channels
    msgs = _good_stream()
    msgs[0] = DatasetBegin(2, "ds-1", None)
    t = _send_all(tx, msgs)
    assert DatasetStreamReader(rx, timeout=10).read() == PAYLOAD
    t.join()


def test_closed_reader_refuses_reads(channels) -> None:
    tx, rx = channels
    t = _send_all(tx, _good_stream()[:1])
    reader = DatasetStreamReader(rx, timeout=10)
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)
    t.join()
