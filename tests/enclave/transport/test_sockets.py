from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from enclave.transport.address import TcpAddress, UnixAddress, VsockAddress, parse_address
from enclave.transport.errors import AddressError, ConnectFailed, TransportTimeout
from enclave.transport.sockets import AF_VSOCK, connect, listen, socket_family, socket_target

# No AF_VSOCK socket is ever created here: dev and CI machines have no vsock.


def test_vsock_address_selects_af_vsock() -> None:
    addr = VsockAddress(16, 5000)
    assert socket_family(addr) == AF_VSOCK
    assert AF_VSOCK == getattr(socket, "AF_VSOCK", 40)
    assert socket_target(addr) == (16, 5000)


def test_tcp_and_unix_families() -> None:
    assert socket_family(TcpAddress("127.0.0.1", 1)) == socket.AF_INET
    assert socket_family(TcpAddress("::1", 1)) == socket.AF_INET6
    assert socket_family(UnixAddress("/tmp/x")) == socket.AF_UNIX
    assert socket_target(UnixAddress("/tmp/x")) == "/tmp/x"
    with pytest.raises(AddressError):
        socket_family("tcp://127.0.0.1:1")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_refuses_to_listen_on_non_loopback(host: str) -> None:
    with pytest.raises(AddressError, match="non-loopback"):
        listen(TcpAddress(host, 0))


def _roundtrip(listen_addr: object) -> None:
    with listen(listen_addr) as listener:  # type: ignore[arg-type]
        bound = listener.address
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept(timeout=10)
            with conn:
                got.append(conn.recv(5))
                conn.sendall(b"pong!")

        t = threading.Thread(target=serve)
        t.start()
        with connect(bound, timeout=10) as s:
            assert s.gettimeout() is None  # the connect timeout must not linger
            s.sendall(b"ping!")
            assert s.recv(5) == b"pong!"
        t.join()
        assert got == [b"ping!"]


def test_tcp_port_zero_reports_real_port() -> None:
    with listen(TcpAddress("127.0.0.1", 0)) as listener:
        assert isinstance(listener.address, TcpAddress)
        assert listener.address.port != 0
        assert parse_address(str(listener.address)) == listener.address
    _roundtrip(TcpAddress("127.0.0.1", 0))


def test_unix_listen_connect_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    _roundtrip(UnixAddress(str(path)))
    assert not path.exists()


def test_unix_stale_socket_replaced_but_regular_file_refused(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert stale.exists()
    with listen(UnixAddress(str(stale))) as listener:
        assert listener.address == UnixAddress(str(stale))
    regular = tmp_path / "file"
    regular.write_bytes(b"keep me")
    with pytest.raises(AddressError, match="not a socket"):
        listen(UnixAddress(str(regular)))
    assert regular.read_bytes() == b"keep me"


def test_connect_refused_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectFailed, match="cannot connect to unix://"):
        connect(UnixAddress(str(tmp_path / "nobody.sock")), timeout=5)
    # A port that was just free: bind then close so nothing listens there.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectFailed):
        connect(TcpAddress("127.0.0.1", port), timeout=5)


def test_connect_port_zero_refused() -> None:
    with pytest.raises(AddressError):
        connect(TcpAddress("127.0.0.1", 0))


def test_accept_timeout() -> None:
    with listen(TcpAddress("127.0.0.1", 0)) as listener:
        with pytest.raises(TransportTimeout):
            listener.accept(timeout=0.01)


def test_listener_close_is_idempotent(tmp_path: Path) -> None:
    listener = listen(UnixAddress(str(tmp_path / "x.sock")))
    listener.close()
    listener.close()
    assert not os.path.exists(tmp_path / "x.sock")
