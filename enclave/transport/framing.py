"""Length-prefixed frames of typed messages over a stream socket.

Wire format of one frame:

    u32 big-endian LENGTH || u8 TYPE || PAYLOAD

LENGTH counts the type byte and the payload (so it is never 0); PAYLOAD is
the canonical CBOR of the message's fields (see messages.py). A receiver
checks LENGTH against its maximum frame size before reading a single byte of
the body, and reads exactly one frame at a time, so a hostile peer cannot
make it buffer more than `max_frame` bytes.

Backpressure: sockets stay in blocking mode and `send` writes one frame
before returning, so a sender is held back by the peer's reads and never has
more than the frame it is sending in memory (plus what the kernel buffers).
The dataset streamer builds one frame per chunk it reads, so it holds at most
one chunk and one frame at a time.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from enclave.errors import TransportError
from enclave.transport.address import Address
from enclave.transport.errors import (
    ChannelClosed,
    FrameTooLarge,
    MalformedFrame,
    PeerDisconnected,
    TransportTimeout,
    TruncatedFrame,
)
from enclave.transport.messages import (
    REGISTRY,
    Message,
    MessageRegistry,
    decode_payload,
    encode_payload,
)
from enclave.transport.sockets import Listener

log = logging.getLogger(__name__)

PREFIX = struct.Struct(">I")
PREFIX_SIZE = PREFIX.size
# Room for the type byte, the CBOR map and the byte-string header around a
# full 1 MiB DatasetData chunk.
FRAME_OVERHEAD = 64
DEFAULT_MAX_FRAME = 1024 * 1024 + FRAME_OVERHEAD
_MAX_LENGTH = 0xFFFFFFFF

Tap = Callable[[str, bytes], None]


def encode_frame_parts(msg: Message, registry: MessageRegistry = REGISTRY) -> tuple[bytes, bytes]:
    """(prefix || type byte, payload) for `msg`: sent as two buffers to avoid a copy."""
    type_id = registry.type_id_of(msg)
    payload = encode_payload(msg)
    length = 1 + len(payload)
    if length > _MAX_LENGTH:
        raise FrameTooLarge(f"{type(msg).__name__} of {length} bytes cannot be framed")
    return PREFIX.pack(length) + bytes((type_id,)), payload


def parse_length(prefix: bytes, max_frame: int) -> int:
    """Body length from a 4-byte prefix, refused if 0 or above `max_frame`."""
    (length,) = PREFIX.unpack(prefix)
    if length == 0:
        raise MalformedFrame("frame length is 0: a frame holds at least its type byte")
    if length > max_frame:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the maximum of {max_frame}")
    return int(length)


def decode_body(body: bytes | bytearray | memoryview, registry: MessageRegistry = REGISTRY) -> Message:
    """Decode one frame body (type byte || payload) into its message."""
    if not body:
        raise MalformedFrame("frame body is empty")
    view = memoryview(body)
    cls = registry.class_for(view[0])
    return decode_payload(cls, view[1:])


def max_data_chunk(max_frame: int) -> int:
    """The largest DatasetData payload whose frame fits in `max_frame`."""
    # body = type(1) + map header(1) + "data" key(5) + bytes header(h) + n
    for header, limit in ((1, 23), (2, 0xFF), (3, 0xFFFF), (5, 0xFFFFFFFF)):
        n = max_frame - 7 - header
        if n <= limit:
            return max(n, 0)
    raise ValueError("max_frame is too large")


class FramedChannel:
    """Typed messages over one connected stream socket.

    `send` and `recv` may be used from two different threads at once. A recv
    that times out keeps what it already read, so the next recv resumes the
    same frame. After a frame-boundary error (oversize, truncated, peer gone)
    that direction is unusable and says why; the other direction still works.
    """

    def __init__(
        self,
        sock: socket.socket,
        max_frame: int = DEFAULT_MAX_FRAME,
        tap: Tap | None = None,
        *,
        registry: MessageRegistry = REGISTRY,
        send_timeout: float | None = None,
    ) -> None:
        if max_frame < 1 or max_frame > _MAX_LENGTH:
            raise ValueError(f"max_frame must be within 1..{_MAX_LENGTH}")
        sock.settimeout(None)
        self._sock = sock
        self.max_frame = max_frame
        self._tap = tap
        self._registry = registry
        self._send_timeout = send_timeout
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False
        # Each direction breaks on its own: a cut incoming frame does not stop
        # us from sending a last message, and vice versa.
        self._recv_broken: str | None = None
        self._send_broken: str | None = None
        self._header = bytearray()
        self._body: bytearray | None = None
        self._got = 0

    # ------------------------------------------------------------ sending

    def send(self, msg: Message) -> None:
        head, payload = encode_frame_parts(msg, self._registry)
        length = len(head) - PREFIX_SIZE + len(payload)
        if length > self.max_frame:
            raise FrameTooLarge(
                f"{type(msg).__name__} frame of {length} bytes exceeds "
                f"the maximum of {self.max_frame}"
            )
        with self._send_lock:
            self._check_usable(self._send_broken)
            if self._tap is not None:
                # Tapped before the write so a failed send is still seen by scanners.
                self._tap("sent", head + payload)
            try:
                self._send_all([head, payload])
            except TransportTimeout:
                self._send_broken = "a send timed out mid-frame"
                raise
            except OSError as exc:
                self._send_broken = "the peer went away while sending"
                if self._closed:
                    raise ChannelClosed("channel was closed while sending") from None
                raise PeerDisconnected(f"peer disconnected while sending: {_reason(exc)}") from None

    def _send_all(self, buffers: list[bytes]) -> None:
        views = [memoryview(b) for b in buffers if b]
        deadline = None if self._send_timeout is None else time.monotonic() + self._send_timeout
        poller = None
        while views:
            flags = 0
            if deadline is not None:
                if poller is None:
                    poller = select.poll()
                    poller.register(self._fd(), select.POLLOUT)
                remaining = max(deadline - time.monotonic(), 0.0)
                if not poller.poll(remaining * 1000):
                    raise TransportTimeout(f"send did not complete within {self._send_timeout}s")
                flags = socket.MSG_DONTWAIT
            try:
                # Gathering write: the header and payload go out without being joined.
                sent = self._sock.sendmsg(views, [], flags)
            except BlockingIOError:
                continue
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    # ------------------------------------------------------------ receiving

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; TransportTimeout if none completes within `timeout` seconds."""
        with self._recv_lock:
            self._check_usable(self._recv_broken)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while len(self._header) < PREFIX_SIZE:
                    self._header += self._read(PREFIX_SIZE - len(self._header), deadline)
                if self._body is None:
                    length = parse_length(bytes(self._header), self.max_frame)
                    self._body = bytearray(length)
                    self._got = 0
                view = memoryview(self._body)
                while self._got < len(self._body):
                    self._got += self._read_into(view[self._got :], deadline)
            except (FrameTooLarge, MalformedFrame, TruncatedFrame, PeerDisconnected) as exc:
                self._recv_broken = str(exc)
                raise
            body = self._body
            self._header.clear()
            self._body = None
            self._got = 0
        # The frame is consumed whole, so a bad payload leaves the channel usable.
        return decode_body(body, self._registry)

    def _fd(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:  # closed by another thread
            raise ChannelClosed("channel is closed")
        return fd

    def _in_frame(self) -> bool:
        return bool(self._header) or self._body is not None

    def _wait_readable(self, deadline: float | None) -> None:
        if deadline is None:
            return
        remaining = max(deadline - time.monotonic(), 0.0)
        poller = select.poll()
        poller.register(self._fd(), select.POLLIN)
        # An expired deadline still checks once, so recv(timeout=0) takes what is there.
        if not poller.poll(remaining * 1000):
            raise TransportTimeout("no complete message arrived before the timeout")

    def _read(self, n: int, deadline: float | None) -> bytes:
        buf = bytearray(n)
        got = self._read_into(memoryview(buf), deadline)
        return bytes(buf[:got])

    def _read_into(self, view: memoryview, deadline: float | None) -> int:
        self._wait_readable(deadline)
        try:
            n = self._sock.recv_into(view, len(view))
        except OSError as exc:
            if self._closed:
                raise ChannelClosed("channel was closed while receiving") from None
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN):
                return self._eof(f"connection reset ({_reason(exc)})")
            raise TransportError(f"receive failed: {_reason(exc)}") from None
        if n == 0:
            if self._closed:
                raise ChannelClosed("channel was closed while receiving")
            return self._eof("peer closed the connection")
        if self._tap is not None:
            self._tap("recv", bytes(view[:n]))
        return n

    def _eof(self, why: str) -> int:
        if self._in_frame():
            have = len(self._header) + self._got
            raise TruncatedFrame(f"{why} in the middle of a frame after {have} bytes")
        raise PeerDisconnected(f"{why} between frames")

    # ------------------------------------------------------------ lifecycle

    def _check_usable(self, broken: str | None) -> None:
        if self._closed:
            raise ChannelClosed("channel is closed")
        if broken is not None:
            raise ChannelClosed(f"channel is unusable: {broken}")

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF after what was sent, this side can still receive."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # shutdown wakes a recv blocked in another thread; close alone does not.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> FramedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FramedListener:
    """A socket listener whose connections come out as FramedChannels."""

    def __init__(self, listener: Listener, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._listener = listener
        self._max_frame = max_frame

    @property
    def address(self) -> Address:
        return self._listener.address

    def accept(self, timeout: float | None = None) -> FramedChannel:
        sock, _ = self._listener.accept(timeout=timeout)
        return FramedChannel(sock, self._max_frame)

    def close(self) -> None:
        self._listener.close()


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
