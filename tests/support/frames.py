"""Frames decoded from a byte string, without a socket: the test side of the wire."""
from __future__ import annotations

from enclave.transport.errors import TruncatedFrame
from enclave.transport.framing import (
    DEFAULT_MAX_FRAME,
    PREFIX_SIZE,
    decode_body,
    encode_frame_parts,
    parse_length,
)
from enclave.transport.messages import REGISTRY, Message, MessageRegistry


def encode_frame(msg: Message, registry: MessageRegistry = REGISTRY) -> bytes:
    """The complete frame (prefix included) for `msg`."""
    head, payload = encode_frame_parts(msg, registry)
    return head + payload


class FrameDecoder:
    """Incremental decoder for a byte stream of frames (pure, no socket).

    `feed` returns the messages completed by the new bytes; `finish` says the
    stream ended and raises TruncatedFrame if a frame was cut. Every failure
    is a TransportError subclass.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, registry: MessageRegistry = REGISTRY) -> None:
        self.max_frame = max_frame
        self._registry = registry
        self._buf = bytearray()
        self._length: int | None = None

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while True:
            if self._length is None:
                if len(self._buf) < PREFIX_SIZE:
                    return out
                self._length = parse_length(bytes(self._buf[:PREFIX_SIZE]), self.max_frame)
                del self._buf[:PREFIX_SIZE]
            if len(self._buf) < self._length:
                return out
            body = bytes(self._buf[: self._length])
            del self._buf[: self._length]
            self._length = None
            out.append(decode_body(body, self._registry))

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf) + (PREFIX_SIZE if self._length is not None else 0)

    def finish(self) -> None:
        if self.pending:
            raise TruncatedFrame(f"stream ended inside a frame ({self.pending} bytes left over)")


def decode_frames(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[Message]:
    """Decode a complete byte string of frames."""
    decoder = FrameDecoder(max_frame)
    messages = decoder.feed(data)
    decoder.finish()
    return messages
