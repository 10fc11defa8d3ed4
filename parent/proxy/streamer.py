"""Relay one sealed file to the enclave as DatasetBegin, DatasetData..., DatasetEnd.

Memory stays constant: one chunk of `frame_size` bytes is read, framed and
sent (blocking until the peer's socket accepts it) before the next is read.
Every DatasetData carries exactly `frame_size` bytes except the last, so the
frame sizes an observer sees depend on the file size only.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from enclave.errors import ConfigError, DatasetError, TransportError
from enclave.transport.framing import FramedChannel, max_data_chunk
from enclave.transport.messages import DatasetBegin, DatasetData, DatasetEnd, Error
from parent.sources import SealedSource, SourceReadError

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 256 * 1024


@dataclass(frozen=True)
class StreamSummary:
    index: int
    dataset_id: str
    size: int
    sha256: bytes
    frames: int


def stream_dataset(
    channel: FramedChannel,
    index: int,
    dataset_id: str,
    source: SealedSource,
    frame_size: int = DEFAULT_FRAME_SIZE,
    progress: Callable[[int], None] | None = None,
) -> StreamSummary:
    """Send `source` over `channel`; `progress(n)` is told each chunk's size (tqdm.update fits)."""
    limit = max_data_chunk(channel.max_frame)
    if not 1 <= frame_size <= limit:
        raise ConfigError(f"frame size {frame_size} must be within 1..{limit} for this channel")
    digest = hashlib.sha256()
    sent = 0
    frames = 0
    channel.send(DatasetBegin(index=index, dataset_id=dataset_id, size=source.size))
    try:
        while True:
            chunk = _read_full(source, frame_size)
            if not chunk:
                break
            digest.update(chunk)
            channel.send(DatasetData(chunk))
            sent += len(chunk)
            frames += 1
            if progress is not None:
                progress(len(chunk))
        if source.size is not None and sent != source.size:
            raise SourceReadError(
                f"{source.uri} ended after {sent} of its {source.size} bytes"
            )
    except DatasetError as exc:
        # Tell the enclave why the stream stops rather than leave it waiting.
        _try_send_error(channel, "dataset-read", str(exc))
        raise
    channel.send(DatasetEnd(index=index, sealed_sha256=digest.digest()))
    log.info("relayed dataset %s (%d bytes, %d frames)", dataset_id, sent, frames)
    return StreamSummary(index, dataset_id, sent, digest.digest(), frames)


def _read_full(source: SealedSource, n: int) -> bytes:
    # Backends may return short reads; filling each chunk keeps frame sizes constant.
    first = source.read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    have = len(first)
    while have < n:
        more = source.read(n - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _try_send_error(channel: FramedChannel, code: str, message: str) -> None:
    try:
        channel.send(Error(code=code, message=message))
    except TransportError:
        log.debug("could not report %s to the peer", code)
