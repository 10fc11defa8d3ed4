"""Opening stream sockets for transport addresses.

AF_VSOCK is used only for VsockAddress (the Nitro path); development and CI
machines have no usable vsock, so tests exercise the family choice through
the pure `socket_family` / `socket_target` functions and run real traffic over
loopback TCP and Unix sockets only.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from typing import Any

from enclave.errors import TransportError
from enclave.transport.address import (
    Address,
    TcpAddress,
    UnixAddress,
    VsockAddress,
)
from enclave.transport.errors import AddressError, ConnectFailed, TransportTimeout

log = logging.getLogger(__name__)

# Linux's value; the constant is missing from `socket` on platforms without vsock.
AF_VSOCK: int = getattr(socket, "AF_VSOCK", 40)
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_BACKLOG = 16


def socket_family(addr: Address) -> int:
    """The address family a socket for `addr` needs."""
    if isinstance(addr, VsockAddress):
        return AF_VSOCK
    if isinstance(addr, TcpAddress):
        return socket.AF_INET6 if addr.is_ipv6 else socket.AF_INET
    if isinstance(addr, UnixAddress):
        return socket.AF_UNIX
    raise AddressError(f"not a transport address: {addr!r}")


def socket_target(addr: Address) -> Any:
    """The sockaddr value `bind`/`connect` take for `addr`."""
    if isinstance(addr, VsockAddress):
        return (addr.cid, addr.port)
    if isinstance(addr, TcpAddress):
        return (addr.host, addr.port)
    if isinstance(addr, UnixAddress):
        return addr.path
    raise AddressError(f"not a transport address: {addr!r}")


class Listener:
    """A listening stream socket; `address` is the bound address (real port if 0 was asked)."""

    def __init__(self, sock: socket.socket, address: Address, owns_path: bool) -> None:
        self._sock = sock
        self.address: Address = address
        self._owns_path = owns_path
        self._closed = False

    def accept(self, timeout: float | None = None) -> tuple[socket.socket, Any]:
        """Accept one connection and return it as a blocking socket."""
        self._sock.settimeout(timeout)
        try:
            conn, peer = self._sock.accept()
        except TimeoutError:
            raise TransportTimeout(f"no connection on {self.address} within {timeout}s") from None
        except OSError as exc:
            raise TransportError(f"accept on {self.address} failed: {exc.strerror or exc}") from None
        conn.settimeout(None)
        _tune(conn)
        return conn, peer

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        if self._owns_path and isinstance(self.address, UnixAddress):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen(addr: Address, backlog: int = DEFAULT_BACKLOG) -> Listener:
    """Bind and listen on `addr`; TCP only on loopback hosts."""
    if isinstance(addr, TcpAddress) and not addr.is_loopback:
        raise AddressError(f"refusing to listen on non-loopback TCP host {addr.host!r}")
    if isinstance(addr, UnixAddress):
        _remove_stale_socket(addr.path)
    sock = socket.socket(socket_family(addr), socket.SOCK_STREAM)
    try:
        if isinstance(addr, TcpAddress):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(socket_target(addr))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    bound: Address = addr
    if isinstance(addr, TcpAddress):
        bound = TcpAddress(addr.host, sock.getsockname()[1])
    elif isinstance(addr, VsockAddress):
        bound = VsockAddress(addr.cid, sock.getsockname()[1])
    log.debug("listening on %s", bound)
    return Listener(sock, bound, owns_path=isinstance(addr, UnixAddress))


def connect(addr: Address, timeout: float | None = DEFAULT_CONNECT_TIMEOUT) -> socket.socket:
    """Connect to `addr`; `timeout` bounds the connect only, the socket returned blocks."""
    if isinstance(addr, (TcpAddress, VsockAddress)) and addr.port == 0:
        raise AddressError(f"cannot connect to port 0 ({addr})")
    if isinstance(addr, VsockAddress) and addr.is_any:
        raise AddressError(f"cannot connect to vsock CID 'any' ({addr})")
    try:
        if isinstance(addr, TcpAddress):
            # create_connection resolves names and tries each address family.
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
        else:
            sock = socket.socket(socket_family(addr), socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(socket_target(addr))
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise TransportTimeout(f"connecting to {addr} timed out after {timeout}s") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {addr}: {exc.strerror or exc}") from None
    sock.settimeout(None)
    _tune(sock)
    return sock


def _tune(sock: socket.socket) -> None:
    # Frames and KMS requests are small and latency-bound: don't wait for Nagle.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TransportError(f"cannot inspect {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(mode):
        raise AddressError(f"refusing to replace {path}: it exists and is not a socket")
    # A socket file left by a previous run would make bind fail with EADDRINUSE.
    os.unlink(path)
