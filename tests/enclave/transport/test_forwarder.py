from __future__ import annotations

import os
import socket
import threading

import pytest

from enclave.transport.address import TcpAddress
from enclave.transport.errors import AddressError
from enclave.transport.forwarder import TcpForwarder
from tests.support.servers import echo_server, free_port, recv_all

BLOB = os.urandom(1024 * 1024 + 123)


def _echo_through(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        # Send from a thread so a full pipe in the other direction cannot deadlock us.
        t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
        t.start()
        got = recv_all(c)
        t.join()
    return got


def _forwarder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kms-forwarder")]


def test_forwards_both_ways_with_half_close() -> None:
    taps: list[tuple[str, bytes]] = []
    with echo_server() as (host, port):
        fwd = TcpForwarder(TcpAddress(host, port), tap=lambda d, b: taps.append((d, b)))
        bound = fwd.start()
        try:
            assert bound.host == "127.0.0.1" and bound.port != 0
            assert _echo_through(bound.port, BLOB) == BLOB
        finally:
            fwd.stop()
    assert b"".join(b for d, b in taps if d == "recv") == BLOB
    assert b"".join(b for d, b in taps if d == "sent") == BLOB
    assert _forwarder_threads() == []


def test_concurrent_connections() -> None:
    with echo_server() as (host, port), TcpForwarder(TcpAddress(host, port)) as fwd:
        results: dict[int, bytes] = {}
        payloads = {i: os.urandom(50_000 + i) for i in range(6)}

        def one(i: int) -> None:
            results[i] = _echo_through(fwd.address.port, payloads[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == payloads
    assert _forwarder_threads() == []


def test_connection_limit() -> None:
    with echo_server() as (host, port), TcpForwarder(TcpAddress(host, port), max_connections=1) as fwd:
        first = socket.create_connection(("127.0.0.1", fwd.address.port), timeout=10)
        first.sendall(b"ping")
        assert first.recv(4) == b"ping"  # now certainly counted as active
        assert fwd.active_connections == 1
        with socket.create_connection(("127.0.0.1", fwd.address.port), timeout=10) as second:
            assert recv_all(second) == b""  # refused: closed at once
        first.sendall(b"still")
        assert first.recv(5) == b"still"
        first.close()


def test_stop_closes_open_connections() -> None:
    with echo_server() as (host, port):
        fwd = TcpForwarder(TcpAddress(host, port))
        bound = fwd.start()
        client = socket.create_connection(("127.0.0.1", bound.port), timeout=10)
        client.sendall(b"hello")
        assert client.recv(5) == b"hello"
        fwd.stop()
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
        client.close()
        assert _forwarder_threads() == []
        assert fwd.active_connections == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", bound.port), timeout=5)


def test_unreachable_target_closes_client() -> None:
    with TcpForwarder(TcpAddress("127.0.0.1", free_port()), connect_timeout=5) as fwd:
        with socket.create_connection(("127.0.0.1", fwd.address.port), timeout=10) as c:
            assert recv_all(c) == b""


def test_listens_on_loopback_only() -> None:
    with pytest.raises(AddressError):
        TcpForwarder(TcpAddress("127.0.0.1", 1), host="0.0.0.0")
