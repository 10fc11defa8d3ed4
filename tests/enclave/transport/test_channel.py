"""The Channel protocol's two implementations: framed sockets and the in-memory test pair."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given

from enclave.transport.address import UnixAddress
from enclave.transport.errors import (
    ChannelClosed,
    FrameTooLarge,
    InvalidMessage,
    PeerDisconnected,
    TransportTimeout,
)
from enclave.transport.framing import DEFAULT_MAX_FRAME, FramedChannel, FramedListener, max_data_chunk
from enclave.transport.messages import DatasetData, Goodbye, Hello, Message
from enclave.transport.sockets import connect, listen
from tests.support.channels import MemoryListener, channel_pair, drain
from tests.support.message_strategies import MESSAGES


@given(MESSAGES)
def test_memory_pair_delivers_a_decoded_copy(msg: Message) -> None:
    a, b = channel_pair()
    a.send(msg)
    assert b.recv(timeout=0) == msg


def test_memory_pair_refuses_what_a_socket_would() -> None:
    a, b = channel_pair()
    with pytest.raises(FrameTooLarge):
        a.send(DatasetData(b"x" * (max_data_chunk(DEFAULT_MAX_FRAME) + 1)))

    @dataclass(frozen=True)
    class Unregistered(Message):
        pass

    with pytest.raises(InvalidMessage):
        a.send(Unregistered())
    with pytest.raises(TransportTimeout):
        b.recv(timeout=0)  # nothing was queued by the refused sends


def test_memory_pair_half_close_and_close() -> None:
    a, b = channel_pair()
    a.send(Goodbye())
    a.shutdown_write()
    with pytest.raises(ChannelClosed):
        a.send(Goodbye())
    assert drain(b) == [Goodbye()]
    with pytest.raises(PeerDisconnected):
        b.recv(timeout=0)
    b.send(Hello("enclave", 1))  # the other direction still works
    assert a.recv(timeout=0) == Hello("enclave", 1)
    a.close()
    with pytest.raises(PeerDisconnected):
        b.send(Goodbye())
    with pytest.raises(ChannelClosed):
        a.recv(timeout=0)


def test_drain_insists_on_a_close() -> None:
    a, b = channel_pair()
    a.send(Goodbye())
    with pytest.raises(TransportTimeout):
        drain(b)


def test_memory_listener_hands_out_connections_in_order() -> None:
    listener = MemoryListener()
    first, second = listener.connect(), listener.connect()
    first.send(Hello("parent", 1))
    second.send(Goodbye())
    assert listener.accept(timeout=0).recv(timeout=0) == Hello("parent", 1)
    assert listener.accept(timeout=0).recv(timeout=0) == Goodbye()
    with pytest.raises(TransportTimeout):
        listener.accept(timeout=0)


def test_framed_listener_accepts_framed_channels(tmp_path: Path) -> None:
    listener = FramedListener(listen(UnixAddress(str(tmp_path / "ctl.sock"))))
    got: list[Message] = []

    def serve() -> None:
        with listener.accept(timeout=10) as channel:
            got.append(channel.recv(timeout=10))
            channel.send(Goodbye())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with FramedChannel(connect(listener.address)) as parent:
            parent.send(Hello("parent", 1))
            assert parent.recv(timeout=10) == Goodbye()
    finally:
        thread.join(timeout=10)
        listener.close()
    assert got == [Hello("parent", 1)]
    idle = FramedListener(listen(UnixAddress(str(tmp_path / "idle.sock"))))
    with pytest.raises(TransportTimeout):
        idle.accept(timeout=0.01)
    idle.close()
