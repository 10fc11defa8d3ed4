"""The in-enclave TCP-to-transport forwarder.

An enclave has no network: boto3 inside it talks HTTPS to
`https://kms.<region>.amazonaws.com` resolved to 127.0.0.1:PORT, and this
forwarder carries each such TCP connection over the transport (vsock on
Nitro) to the parent's KMS relay, which dials KMS. TLS is end-to-end between
the enclave and KMS: neither the forwarder nor the relay can read it.
"""
from __future__ import annotations

import socket

from enclave.transport.address import Address, TcpAddress
from enclave.transport.errors import AddressError
from enclave.transport.framing import Tap
from enclave.transport.pipe import DEFAULT_MAX_CONNECTIONS, ByteRelayServer
from enclave.transport.sockets import DEFAULT_CONNECT_TIMEOUT, connect


class TcpForwarder:
    """Listen on loopback TCP and forward every connection to `target`.

    `start()` returns the bound TcpAddress (the real port if `port` is 0);
    `stop()` closes the listener and every open connection and joins threads.
    """

    def __init__(
        self,
        target: Address,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        tap: Tap | None = None,
    ) -> None:
        listen_addr = TcpAddress(host, port)
        if not listen_addr.is_loopback:
            raise AddressError(f"the forwarder listens on loopback only, not {host!r}")
        self.target = target
        self._connect_timeout = connect_timeout
        self._server = ByteRelayServer(
            listen_addr,
            self._dial,
            name="kms-forwarder",
            max_connections=max_connections,
            tap=tap,
        )

    def _dial(self) -> socket.socket:
        return connect(self.target, timeout=self._connect_timeout)

    @property
    def address(self) -> TcpAddress:
        addr = self._server.address
        assert isinstance(addr, TcpAddress)
        return addr

    @property
    def active_connections(self) -> int:
        return self._server.active_connections

    def start(self) -> TcpAddress:
        self._server.start()
        return self.address

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> TcpForwarder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
