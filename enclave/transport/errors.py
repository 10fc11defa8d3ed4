"""Errors of the transport layer, all in the TransportError family.

Each distinct failure has its own type so callers (and tests) can tell a
peer that went away from one that sent garbage or one that is too slow.
"""
from __future__ import annotations

from enclave.errors import ConfigError, TransportError


class AddressError(TransportError, ConfigError):
    """A transport address is malformed or not allowed for this use.

    Addresses come from configuration and CLI flags, so this is also a
    ConfigError: callers may catch either family.
    """


class ConnectFailed(TransportError):
    """A connection to a transport address could not be established."""


class TransportTimeout(TransportError):
    """A send, receive or connect did not complete in time."""


class PeerDisconnected(TransportError):
    """The peer closed the connection cleanly between two frames."""


class FrameError(TransportError):
    """Base of the errors about the bytes of one frame."""


class FrameTooLarge(FrameError):
    """A frame's length prefix exceeds the channel's maximum frame size."""


class TruncatedFrame(FrameError):
    """The connection ended in the middle of a frame."""


class MalformedFrame(FrameError):
    """A frame's payload is not the canonical CBOR of a valid message."""


class UnknownMessageType(FrameError):
    """A frame carries a message type id nobody registered."""


class InvalidMessage(TransportError):
    """A message was built with fields of the wrong name or type."""


class ChannelClosed(TransportError):
    """The local side already closed this channel."""


class ProtocolError(TransportError):
    """The peer sent a valid message that is not allowed at this point."""

    code = "protocol"


class RemoteError(TransportError):
    """The peer reported a failure with an Error message."""

    code = "aborted"

    def __init__(self, remote_code: str, message: str) -> None:
        super().__init__(f"peer reported error {remote_code}: {message}")
        self.remote_code = remote_code
        self.remote_message = message


class DatasetStreamError(TransportError):
    """A relayed dataset stream broke the Begin/Data/End protocol."""

    code = "protocol"


class StreamDigestMismatch(DatasetStreamError):
    """The SHA-256 of the relayed bytes differs from the one in DatasetEnd."""
