from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.errors import TransportError
from enclave.transport.address import TcpAddress, UnixAddress
from enclave.transport.errors import (
    ChannelClosed,
    FrameTooLarge,
    MalformedFrame,
    PeerDisconnected,
    TransportTimeout,
    TruncatedFrame,
    UnknownMessageType,
)
from enclave.transport.framing import DEFAULT_MAX_FRAME, FramedChannel, max_data_chunk
from enclave.transport.messages import (
    AuditEvent,
    DatasetData,
    DatasetEnd,
    Goodbye,
    Hello,
    Message,
)
from enclave.transport.sockets import connect, listen
from tests.support.frames import FrameDecoder, decode_frames, encode_frame
from tests.support.message_strategies import MESSAGES

# ---------------------------------------------------------------- pure codec

KNOWN_FRAMES = [
    (Goodbye(), "00000002" "02" "a0"),
    (DatasetData(b"\x01\x02\x03"), "0000000b" "21" "a1" "6464617461" "43010203"),
    (
        Hello("parent", 1),
        "00000020" "01" "a2" "64726f6c65" "66706172656e74" "70" + b"protocol_version".hex() + "01",
    ),
    (
        DatasetEnd(0, bytes(32)),
        "00000039" "22" "a2" "65696e646578" "00" "6d" + b"sealed_sha256".hex() + "5820" + "00" * 32,
    ),
]


@pytest.mark.parametrize(("msg", "frame_hex"), KNOWN_FRAMES)
def test_known_answer_frames(msg: Message, frame_hex: str) -> None:
    frame = bytes.fromhex(frame_hex)
    assert encode_frame(msg) == frame
    assert decode_frames(frame) == [msg]


@given(st.lists(MESSAGES, max_size=5))
def test_frames_round_trip_in_any_split(msgs: list[Message]) -> None:
    data = b"".join(encode_frame(m) for m in msgs)
    assert decode_frames(data) == msgs
    # Byte-at-a-time feeding gives the same messages.
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    decoder.finish()
    assert out == msgs


@given(st.binary(max_size=200))
def test_decoder_raises_only_transport_errors(data: bytes) -> None:
    try:
        decode_frames(data, max_frame=1000)
    except TransportError:
        pass


@given(st.integers(0, 255), st.binary(max_size=100))
def test_any_body_decodes_or_raises_transport_error(type_id: int, payload: bytes) -> None:
    body = bytes([type_id]) + payload
    try:
        decode_frames(struct.pack(">I", len(body)) + body)
    except TransportError:
        pass


def test_decoder_refuses_oversize_from_the_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge, match="11 bytes exceeds the maximum of 10"):
        decoder.feed(struct.pack(">I", 11))


def test_decoder_errors() -> None:
    with pytest.raises(MalformedFrame, match="length is 0"):
        decode_frames(b"\x00\x00\x00\x00")
    with pytest.raises(TruncatedFrame):
        decode_frames(encode_frame(Goodbye())[:-1])
    with pytest.raises(TruncatedFrame):
        decode_frames(b"\x00\x00")
    with pytest.raises(UnknownMessageType):
        decode_frames(b"\x00\x00\x00\x02\xfe\xa0")


def test_max_data_chunk_fits_exactly() -> None:
    for max_frame in (100, 300, 70000, DEFAULT_MAX_FRAME):
        n = max_data_chunk(max_frame)
        assert len(encode_frame(DatasetData(bytes(n)))) - 4 <= max_frame
    assert max_data_chunk(DEFAULT_MAX_FRAME) >= 1024 * 1024


# ---------------------------------------------------------------- channels


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _channel_pair_over(kind: str, tmp_path: Path) -> tuple[FramedChannel, FramedChannel, list]:
    taps: list[tuple[str, str, bytes]] = []
    addr = TcpAddress("127.0.0.1", 0) if kind == "tcp" else UnixAddress(str(tmp_path / "c.sock"))
    with listen(addr) as listener:
        client = connect(listener.address, timeout=10)
        server, _ = listener.accept(timeout=10)
    return (
        FramedChannel(client, tap=lambda d, b: taps.append(("client", d, b))),
        FramedChannel(server, tap=lambda d, b: taps.append(("server", d, b))),
        taps,
    )


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_channel_over_real_sockets_moves_big_frames_and_tap_sees_every_byte(
    kind: str, tmp_path: Path
) -> None:
    client, server, taps = _channel_pair_over(kind, tmp_path)
    big = bytes(range(256)) * 4096  # 1 MiB: larger than socket buffers
    msgs: list[Message] = [Hello("parent", 1), DatasetData(big), AuditEvent("k", {"a": 1}), Goodbye()]

    def sender() -> None:
        for m in msgs:
            client.send(m)

    t = threading.Thread(target=sender)
    t.start()
    got = [server.recv(timeout=10) for _ in msgs]
    t.join()
    assert got == msgs
    sent = b"".join(b for who, d, b in taps if who == "client" and d == "sent")
    recv = b"".join(b for who, d, b in taps if who == "server" and d == "recv")
    assert sent == recv == b"".join(encode_frame(m) for m in msgs)
    client.close()
    with pytest.raises(PeerDisconnected):
        server.recv(timeout=10)
    server.close()


def test_channel_over_socketpair_all_types(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = FramedChannel(pair[0]), FramedChannel(pair[1])
    for frame_hex in [h for _, h in KNOWN_FRAMES]:
        pair[0].sendall(bytes.fromhex(frame_hex))
    assert [b.recv(timeout=5) for _ in KNOWN_FRAMES] == [m for m, _ in KNOWN_FRAMES]
    a.send(Hello("x", 2))
    assert b.recv(timeout=5) == Hello("x", 2)


def test_oversize_refused_before_the_body_is_read(pair: tuple[socket.socket, socket.socket]) -> None:
    seen: list[bytes] = []
    chan = FramedChannel(pair[1], max_frame=1000, tap=lambda d, b: seen.append(b))
    # Claim a 2 GiB frame and send part of a body; the receiver must not wait for it.
    pair[0].sendall(struct.pack(">I", 2**31) + b"\x21" + b"x" * 500)
    with pytest.raises(FrameTooLarge, match="2147483648 bytes exceeds the maximum of 1000"):
        chan.recv(timeout=5)
    assert b"".join(seen) == struct.pack(">I", 2**31)
    with pytest.raises(ChannelClosed, match="unusable"):
        chan.recv(timeout=5)


def test_send_refuses_oversize_without_writing(pair: tuple[socket.socket, socket.socket]) -> None:
    seen: list[bytes] = []
    chan = FramedChannel(pair[0], max_frame=100, tap=lambda d, b: seen.append(b))
    with pytest.raises(FrameTooLarge):
        chan.send(DatasetData(bytes(200)))
    assert seen == []
    chan.send(DatasetData(bytes(50)))  # still usable
    assert FramedChannel(pair[1]).recv(timeout=5) == DatasetData(bytes(50))


@pytest.mark.parametrize("cut", [1, 3, 4, 7])
def test_truncated_mid_frame(pair: tuple[socket.socket, socket.socket], cut: int) -> None:
    frame = encode_frame(DatasetData(b"abcdef"))
    pair[0].sendall(encode_frame(Goodbye()) + frame[:cut])
    pair[0].close()
    chan = FramedChannel(pair[1])
    assert chan.recv(timeout=5) == Goodbye()
    with pytest.raises(TruncatedFrame):
        chan.recv(timeout=5)


def test_clean_eof_between_frames(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[0].sendall(encode_frame(Goodbye()))
    pair[0].shutdown(socket.SHUT_WR)
    chan = FramedChannel(pair[1])
    assert chan.recv(timeout=5) == Goodbye()
    with pytest.raises(PeerDisconnected, match="between frames"):
        chan.recv(timeout=5)


def test_malformed_and_unknown_frames_leave_channel_usable(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    bad_payload = b"\x01\xa1\x61x\x01"  # Hello type with wrong fields
    pair[0].sendall(
        struct.pack(">I", len(bad_payload)) + bad_payload
        + b"\x00\x00\x00\x02\xee\xa0"
        + b"\x00\x00\x00\x00"
        + encode_frame(Goodbye())
    )
    chan = FramedChannel(pair[1])
    with pytest.raises(MalformedFrame):
        chan.recv(timeout=5)
    with pytest.raises(UnknownMessageType):
        chan.recv(timeout=5)
    with pytest.raises(MalformedFrame, match="length is 0"):
        chan.recv(timeout=5)


def test_timeout_keeps_partial_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    chan = FramedChannel(pair[1])
    with pytest.raises(TransportTimeout):
        chan.recv(timeout=0.01)
    frame = encode_frame(DatasetData(b"z" * 100))
    pair[0].sendall(frame[:2])
    with pytest.raises(TransportTimeout):
        chan.recv(timeout=0.01)
    pair[0].sendall(frame[2:50])
    with pytest.raises(TransportTimeout):
        chan.recv(timeout=0.01)
    pair[0].sendall(frame[50:])
    assert chan.recv(timeout=5) == DatasetData(b"z" * 100)


def test_peer_disconnect_mid_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    sender = FramedChannel(pair[0])
    receiver = FramedChannel(pair[1])
    chunk = b"q" * 100_000

    def produce() -> None:
        for _ in range(5):
            sender.send(DatasetData(chunk))
        # Die halfway through the sixth frame.
        pair[0].sendall(encode_frame(DatasetData(chunk))[:5000])
        pair[0].shutdown(socket.SHUT_RDWR)

    t = threading.Thread(target=produce)
    t.start()
    for _ in range(5):
        assert receiver.recv(timeout=10) == DatasetData(chunk)
    with pytest.raises(TruncatedFrame, match="after 5000 bytes"):
        receiver.recv(timeout=10)
    t.join()


def test_send_to_gone_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    chan = FramedChannel(pair[0])
    pair[1].close()
    with pytest.raises(PeerDisconnected):
        chan.send(Hello("parent", 1))
    with pytest.raises(ChannelClosed):
        chan.send(Hello("parent", 1))


def test_send_timeout_when_peer_stops_reading(pair: tuple[socket.socket, socket.socket]) -> None:
    chan = FramedChannel(pair[0], send_timeout=0.05)
    with pytest.raises(TransportTimeout):
        for _ in range(64):  # far more than the socket buffers hold
            chan.send(DatasetData(bytes(1024 * 1024)))
    with pytest.raises(ChannelClosed, match="unusable"):
        chan.send(Goodbye())


def test_close_unblocks_a_waiting_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    chan = FramedChannel(pair[1])
    errors: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            chan.recv()
        except TransportError as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    started.wait()
    chan.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (ChannelClosed, PeerDisconnected))
    with pytest.raises(ChannelClosed):
        chan.recv(timeout=1)


def test_zero_timeout_takes_what_is_there(pair: tuple[socket.socket, socket.socket]) -> None:
    chan = FramedChannel(pair[1])
    with pytest.raises(TransportTimeout):
        chan.recv(timeout=0)
    pair[0].sendall(encode_frame(Goodbye()))
    # Wait for the bytes to be readable without consuming them, then poll with timeout 0.
    assert select.select([pair[1]], [], [], 10)[0]
    assert chan.recv(timeout=0) == Goodbye()
