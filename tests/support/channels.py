"""An in-memory Channel pair and listener: the runtime's protocol without sockets.

Like httpx's MockTransport: every message goes through the real frame encoding and
decoding (a message that cannot be framed fails on `send` as it would on a socket,
and the receiver gets a freshly decoded copy), but frames travel through queues.
Both sides may be driven from one thread: `send` never blocks.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Self

from enclave.transport.address import Address, UnixAddress
from enclave.transport.errors import (
    ChannelClosed,
    FrameTooLarge,
    PeerDisconnected,
    TransportTimeout,
)
from enclave.transport.framing import (
    DEFAULT_MAX_FRAME,
    PREFIX_SIZE,
    decode_body,
    encode_frame_parts,
    parse_length,
)
from enclave.transport.messages import Message

# A label for reports and logs: nothing listens there.
MEMORY_ADDRESS = UnixAddress("/in-memory/enclave.sock")


@dataclass
class _Pipe:
    """One direction: whole frames, then None once the writer is done."""

    frames: queue.SimpleQueue[bytes | None] = field(default_factory=queue.SimpleQueue)
    writer_done: bool = False
    reader_closed: bool = False


class MemoryChannel:
    """One end of a channel pair (see `channel_pair`)."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._in = inbound
        self._out = outbound
        self.max_frame = max_frame
        self._closed = False
        self._eof = False

    def send(self, msg: Message) -> None:
        head, payload = encode_frame_parts(msg)
        length = len(head) - PREFIX_SIZE + len(payload)
        if length > self.max_frame:
            raise FrameTooLarge(
                f"{type(msg).__name__} frame of {length} bytes exceeds the maximum of {self.max_frame}"
            )
        if self._closed or self._out.writer_done:
            raise ChannelClosed("channel is closed for sending")
        if self._out.reader_closed:
            raise PeerDisconnected("peer disconnected while sending")
        self._out.frames.put(head + payload)

    def recv(self, timeout: float | None = None) -> Message:
        if self._closed:
            raise ChannelClosed("channel is closed")
        if self._eof:
            raise PeerDisconnected("peer closed the connection between frames")
        try:
            frame = self._in.frames.get(timeout=timeout)
        except queue.Empty:
            raise TransportTimeout("no complete message arrived before the timeout") from None
        if frame is None:
            self._eof = True
            raise PeerDisconnected("peer closed the connection between frames")
        length = parse_length(frame[:PREFIX_SIZE], self.max_frame)
        return decode_body(frame[PREFIX_SIZE : PREFIX_SIZE + length])

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF after what was sent, this side can still receive."""
        if not self._out.writer_done:
            self._out.writer_done = True
            self._out.frames.put(None)

    def close(self) -> None:
        if self._closed:
            return
        self.shutdown_write()
        self._closed = True
        self._in.reader_closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def channel_pair(max_frame: int = DEFAULT_MAX_FRAME) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected ends: what one sends, the other receives."""
    a_to_b, b_to_a = _Pipe(), _Pipe()
    return MemoryChannel(b_to_a, a_to_b, max_frame), MemoryChannel(a_to_b, b_to_a, max_frame)


class MemoryListener:
    """Hands the runtime the enclave end of each pair `connect` made, in order."""

    def __init__(self, address: Address = MEMORY_ADDRESS) -> None:
        self._address = address
        self._pending: queue.SimpleQueue[MemoryChannel] = queue.SimpleQueue()
        self.closed = False

    @property
    def address(self) -> Address:
        return self._address

    def connect(self) -> MemoryChannel:
        """A new connection; returns the parent's end."""
        enclave_end, parent_end = channel_pair()
        self._pending.put(enclave_end)
        return parent_end

    def accept(self, timeout: float | None = None) -> MemoryChannel:
        if self.closed:
            raise ChannelClosed("listener is closed")
        try:
            return self._pending.get(timeout=timeout)
        except queue.Empty:
            raise TransportTimeout(f"no connection on {self._address} within {timeout}s") from None

    def close(self) -> None:
        self.closed = True


def drain(channel: MemoryChannel) -> list[Message]:
    """Everything sent to `channel` up to the peer's close; TransportTimeout if it never closed."""
    out: list[Message] = []
    while True:
        try:
            out.append(channel.recv(timeout=0))
        except PeerDisconnected:
            return out
