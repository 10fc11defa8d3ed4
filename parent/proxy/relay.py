"""The parent's KMS relay: the role AWS's vsock-proxy plays on a Nitro host.

The enclave's forwarder connects here over the transport; each connection is
spliced to a new TCP connection to one fixed, allow-listed target (the KMS
endpoint). Bytes are relayed untouched: TLS runs between the enclave and KMS,
so the parent sees only ciphertext. Like vsock-proxy's allowlist file, a
target not on the allow-list is refused before anything listens.
"""
from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

from enclave.errors import ConfigError
from enclave.transport.address import Address, TcpAddress
from enclave.transport.framing import Tap
from enclave.transport.pipe import DEFAULT_MAX_CONNECTIONS, ByteRelayServer
from enclave.transport.sockets import DEFAULT_CONNECT_TIMEOUT, connect


class TargetNotAllowed(ConfigError):
    """The relay target is not on the allow-list."""


def is_allowed(host: str, port: int, allow_list: Iterable[tuple[str, int]]) -> bool:
    """Exact host (case-insensitive) and port match, no wildcards."""
    host = host.lower().rstrip(".")
    return any(host == h.lower().rstrip(".") and port == p for h, p in allow_list)


class KmsRelay:
    """Relay each connection on `listen` to `target_host:target_port`.

    `start()` returns the bound address (the real port when port 0 was asked
    on loopback TCP); `stop()` closes everything and joins its threads. `tap`
    sees ("recv", bytes from the enclave) and ("sent", bytes to the enclave).
    """

    def __init__(
        self,
        listen: Address,
        target_host: str,
        target_port: int,
        allow_list: Sequence[tuple[str, int]],
        *,
        tap: Tap | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.target = TcpAddress(target_host, target_port)  # validates host and port
        if target_port == 0:
            raise ConfigError("relay target port must not be 0")
        if not is_allowed(target_host, target_port, allow_list):
            raise TargetNotAllowed(
                f"relay target {target_host}:{target_port} is not on the allow-list"
            )
        self._connect_timeout = connect_timeout
        self._server = ByteRelayServer(
            listen, self._dial, name="kms-relay", max_connections=max_connections, tap=tap
        )

    def _dial(self) -> socket.socket:
        return connect(self.target, timeout=self._connect_timeout)

    @property
    def address(self) -> Address:
        return self._server.address

    @property
    def active_connections(self) -> int:
        return self._server.active_connections

    def start(self) -> Address:
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> KmsRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
