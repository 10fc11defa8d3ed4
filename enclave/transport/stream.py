"""A relayed dataset as a read-only file object.

The parent relays a sealed file as DatasetBegin, DatasetData..., DatasetEnd.
`DatasetStreamReader` turns that back into a byte stream the sealed-file
reader consumes (`read_header(stream)` / `iter_plaintext(stream, ...)`),
hashing as it goes: EOF is reported only after DatasetEnd's SHA-256 matched
the bytes relayed, otherwise the read raises StreamDigestMismatch. The
sealed format authenticates every chunk anyway; the digest catches a relay
that drops, repeats or reorders whole frames at the transport level.
"""
from __future__ import annotations

import hashlib
import io
import logging

from enclave.transport.channel import Channel
from enclave.transport.errors import DatasetStreamError, RemoteError, StreamDigestMismatch
from enclave.transport.messages import DatasetBegin, DatasetData, DatasetEnd, Error, Message

log = logging.getLogger(__name__)


class DatasetStreamReader(io.RawIOBase):
    """Bytes of one relayed dataset.

    Pass `begin` if the caller already received the DatasetBegin; otherwise the
    first message read must be one. `expected_index` / `expected_id`, when
    given, must match it. Reads return fewer bytes than asked only at EOF.
    Closing the reader does not close the channel; closing it early leaves the
    rest of the stream unread on the channel.
    """

    def __init__(
        self,
        channel: Channel,
        begin: DatasetBegin | None = None,
        *,
        expected_index: int | None = None,
        expected_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self._channel = channel
        self._timeout = timeout
        if begin is None:
            first = self._next()
            if not isinstance(first, DatasetBegin):
                raise DatasetStreamError(f"expected DatasetBegin, got {type(first).__name__}")
            begin = first
        if expected_index is not None and begin.index != expected_index:
            raise DatasetStreamError(
                f"dataset stream has index {begin.index}, expected {expected_index}"
            )
        if expected_id is not None and begin.dataset_id != expected_id:
            raise DatasetStreamError(
                f"dataset stream is {begin.dataset_id!r}, expected {expected_id!r}"
            )
        self.begin = begin
        self._hash = hashlib.sha256()
        self._pending = memoryview(b"")
        self._received = 0
        self._done = False

    @property
    def dataset_id(self) -> str:
        return self.begin.dataset_id

    @property
    def index(self) -> int:
        return self.begin.index

    @property
    def size(self) -> int | None:
        return self.begin.size

    @property
    def bytes_received(self) -> int:
        return self._received

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the bytes relayed so far (the verified file digest once finished)."""
        return self._hash.digest()

    @property
    def sha256_hex(self) -> str:
        return self._hash.hexdigest()

    @property
    def finished(self) -> bool:
        """True once DatasetEnd arrived and the digest matched."""
        return self._done

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]  # io passes these only
        if self.closed:
            raise ValueError("read from a closed dataset stream")
        out = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(out):
            if not self._pending:
                if self._done or not self._fill():
                    break
            n = min(len(out) - filled, len(self._pending))
            out[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled

    def _next(self) -> Message:
        msg = self._channel.recv(timeout=self._timeout)
        if isinstance(msg, Error):
            raise RemoteError(msg.code, msg.message)
        return msg

    def _fill(self) -> bool:
        """Load the next data frame; False at a verified end."""
        while True:
            msg = self._next()
            if isinstance(msg, DatasetData):
                if not msg.data:
                    continue
                self._received += len(msg.data)
                if self.size is not None and self._received > self.size:
                    raise DatasetStreamError(
                        f"dataset {self.dataset_id!r} relayed more than its announced {self.size} bytes"
                    )
                self._hash.update(msg.data)
                self._pending = memoryview(msg.data)
                return True
            if isinstance(msg, DatasetEnd):
                self._finish(msg)
                return False
            raise DatasetStreamError(
                f"unexpected {type(msg).__name__} inside dataset stream {self.dataset_id!r}"
            )

    def _finish(self, end: DatasetEnd) -> None:
        if end.index != self.index:
            raise DatasetStreamError(
                f"DatasetEnd index {end.index} does not match DatasetBegin index {self.index}"
            )
        if self.size is not None and self._received != self.size:
            raise DatasetStreamError(
                f"dataset {self.dataset_id!r} ended after {self._received} of {self.size} bytes"
            )
        if self._hash.digest() != end.sealed_sha256:
            raise StreamDigestMismatch(
                f"SHA-256 of the relayed dataset {self.dataset_id!r} does not match DatasetEnd"
            )
        self._done = True
        log.debug("dataset %s (%d bytes) relayed intact", self.dataset_id, self._received)
