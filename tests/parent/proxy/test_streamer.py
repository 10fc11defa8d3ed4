from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import ConfigError
from enclave.transport.address import UnixAddress
from enclave.transport.errors import RemoteError
from enclave.transport.framing import FramedChannel
from enclave.transport.messages import DatasetBegin, DatasetData, DatasetEnd, Message
from enclave.transport.sockets import connect, listen
from enclave.transport.stream import DatasetStreamReader
from parent.proxy.streamer import stream_dataset
from parent.sources import SealedSource, SourceReadError, open_source
from tests.parent.proxy.moto_s3 import s3_client  # noqa: F401 - fixture
from tests.support.frames import FrameDecoder

SIZE = 5 * 1024 * 1024 + 1234
FRAME = 256 * 1024


@pytest.fixture(scope="module")
def blob() -> bytes:
    return os.urandom(SIZE)


class _Taps:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.recv: list[bytes] = []

    def parent(self, direction: str, data: bytes) -> None:
        (self.sent if direction == "sent" else self.recv).append(data)


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[FramedChannel, FramedChannel, _Taps]]:
    """(parent channel with tap, enclave channel) over a real Unix socket."""
    taps = _Taps()
    with listen(UnixAddress(str(tmp_path / "ctl.sock"))) as listener:
        parent_sock = connect(listener.address, timeout=10)
        enclave_sock, _ = listener.accept(timeout=10)
    parent, enclave = FramedChannel(parent_sock, tap=taps.parent), FramedChannel(enclave_sock)
    yield parent, enclave, taps
    parent.close()
    enclave.close()


def _relay(parent: FramedChannel, source: SealedSource, **kw: Any) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["summary"] = stream_dataset(parent, 3, "fmnist", source, **kw)
        except Exception as exc:  # noqa: BLE001 - surfaced by the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _check_frames(taps: _Taps, blob: bytes) -> None:
    msgs: list[Message] = []
    decoder = FrameDecoder()
    for frame in taps.sent:
        msgs += decoder.feed(frame)
    decoder.finish()
    assert isinstance(msgs[0], DatasetBegin) and msgs[0].size == len(blob)
    assert isinstance(msgs[-1], DatasetEnd)
    assert msgs[-1].sealed_sha256 == hashlib.sha256(blob).digest()
    sizes = [len(m.data) for m in msgs[1:-1] if isinstance(m, DatasetData)]
    assert len(sizes) == len(msgs) - 2
    assert set(sizes[:-1]) == {FRAME}
    assert 0 < sizes[-1] <= FRAME
    assert b"".join(m.data for m in msgs[1:-1]) == blob  # type: ignore[attr-defined]


def test_local_file_arrives_identical(tmp_path: Path, link, blob: bytes) -> None:
    parent, enclave, taps = link
    path = tmp_path / "d.sealed"
    path.write_bytes(blob)
    progress: list[int] = []
    with open_source(str(path)) as src:
        t, out = _relay(parent, src, progress=progress.append)
        reader = DatasetStreamReader(enclave, expected_index=3, expected_id="fmnist", timeout=10)
        got = reader.read()
        t.join()
    assert "error" not in out
    assert got == blob
    assert sum(progress) == len(blob)
    summary = out["summary"]
    assert (summary.size, summary.frames) == (len(blob), -(-len(blob) // FRAME))
    assert summary.sha256 == hashlib.sha256(blob).digest()
    _check_frames(taps, blob)


def test_s3_object_arrives_identical(link, blob: bytes, s3_client: Any) -> None:  # noqa: F811
    parent, enclave, taps = link
    s3_client.put_object(Bucket="sealed", Key="fmnist.sealed", Body=blob)
    with open_source("s3://sealed/fmnist.sealed", s3_client=s3_client) as src:
        t, out = _relay(parent, src)
        got = DatasetStreamReader(enclave, timeout=10).read()
        t.join()
    assert "error" not in out
    assert got == blob
    _check_frames(taps, blob)


class _Trickle(SealedSource):
    """Returns at most `step` bytes per read, and optionally ends early."""

    def __init__(self, data: bytes, step: int, claim: int | None = None) -> None:
        self.uri = "test://trickle"
        self._data = data
        self._pos = 0
        self._step = step
        self.size = len(data) if claim is None else claim

    def read(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + min(n, self._step)]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def test_short_reads_still_give_constant_frames(link) -> None:
    parent, enclave, taps = link
    data = os.urandom(3 * FRAME + 17)
    t, out = _relay(parent, _Trickle(data, step=10_000))
    assert DatasetStreamReader(enclave, timeout=10).read() == data
    t.join()
    _check_frames(taps, data)


def test_truncated_source_reports_error_to_peer(link) -> None:
    parent, enclave, _ = link
    data = os.urandom(FRAME + 5)
    t, out = _relay(parent, _Trickle(data, step=FRAME, claim=len(data) + 100))
    with pytest.raises(RemoteError, match="dataset-read"):
        DatasetStreamReader(enclave, timeout=10).read()
    t.join()
    assert isinstance(out["error"], SourceReadError)
    assert "ended after" in str(out["error"])


def test_frame_size_must_fit_the_channel(link) -> None:
    parent, _, _ = link
    with pytest.raises(ConfigError):
        stream_dataset(parent, 0, "d", _Trickle(b"x", 1), frame_size=parent.max_frame)
    with pytest.raises(ConfigError):
        stream_dataset(parent, 0, "d", _Trickle(b"x", 1), frame_size=0)


def _peak_while_streaming(parent: FramedChannel, enclave: FramedChannel, path: Path) -> tuple[int, bytes]:
    tracemalloc.start()
    try:
        with open_source(str(path)) as src:
            t, out = _relay(parent, src)
            reader = DatasetStreamReader(enclave, timeout=10)
            digest = hashlib.sha256()
            while chunk := reader.read(64 * 1024):
                digest.update(chunk)
            t.join()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "error" not in out
    return peak, digest.digest()


def test_memory_stays_constant(tmp_path: Path, link, blob: bytes) -> None:
    parent, enclave, _ = link
    # No tap here: the fixture's tap keeps every frame, which is the opposite of constant.
    parent._tap = None
    small, large = tmp_path / "small.sealed", tmp_path / "large.sealed"
    small.write_bytes(blob)
    large.write_bytes(blob * 3)
    peak_small, digest_small = _peak_while_streaming(parent, enclave, small)
    peak_large, digest_large = _peak_while_streaming(parent, enclave, large)
    assert digest_small == hashlib.sha256(blob).digest()
    assert digest_large == hashlib.sha256(blob * 3).digest()
    # A few 256 KiB frames in flight, whatever the file size.
    assert peak_small < len(blob) // 2, peak_small
    assert peak_large < peak_small + 4 * FRAME, (peak_small, peak_large)
