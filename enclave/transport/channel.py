"""What the enclave runtime needs from a connection: typed messages in and out.

`FramedChannel` (framing.py) carries them over a socket and `FramedListener`
accepts such connections; the runtime and the egress gate depend only on these
protocols, so tests can hand them an in-memory pair instead of a socket.
"""
from __future__ import annotations

from typing import Protocol, Self

from enclave.transport.address import Address
from enclave.transport.messages import Message


class Channel(Protocol):
    """One connection to the peer; failures raise TransportError subclasses."""

    def send(self, msg: Message) -> None: ...

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; TransportTimeout if none arrives within `timeout` seconds."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class ChannelListener(Protocol):
    """Where peers connect; `accept` raises TransportTimeout when nobody came in time."""

    @property
    def address(self) -> Address: ...

    def accept(self, timeout: float | None = None) -> Channel: ...

    def close(self) -> None: ...
