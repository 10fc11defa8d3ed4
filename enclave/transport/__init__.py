"""Abstract transport between the parent and the enclave.

`vsock://CID:PORT` on Nitro hosts, `tcp://127.0.0.1:PORT` or `unix://PATH`
locally; typed, length-prefixed CBOR messages on top (FramedChannel); a raw
byte relay for KMS traffic (TcpForwarder in the enclave, KmsRelay in the
parent); and DatasetStreamReader to consume a relayed sealed file.
"""
from __future__ import annotations

from enclave.transport.address import (
    PARENT_CID,
    VMADDR_CID_ANY,
    Address,
    TcpAddress,
    UnixAddress,
    VsockAddress,
    is_loopback_host,
    parse_address,
)
from enclave.transport.errors import (
    AddressError,
    ChannelClosed,
    ConnectFailed,
    DatasetStreamError,
    FrameError,
    FrameTooLarge,
    InvalidMessage,
    MalformedFrame,
    PeerDisconnected,
    ProtocolError,
    RemoteError,
    StreamDigestMismatch,
    TransportTimeout,
    TruncatedFrame,
    UnknownMessageType,
)
from enclave.transport.forwarder import TcpForwarder
from enclave.transport.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FramedChannel,
    decode_frames,
    encode_frame,
    max_data_chunk,
)
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    REGISTRY,
    AuditEvent,
    Credentials,
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
    MessageRegistry,
    register,
)
from enclave.transport.pipe import ByteRelayServer
from enclave.transport.sockets import Listener, connect, listen, socket_family, socket_target
from enclave.transport.stream import DatasetStreamReader

__all__ = [
    "PARENT_CID", "VMADDR_CID_ANY", "Address", "TcpAddress", "UnixAddress", "VsockAddress",
    "is_loopback_host", "parse_address",
    "AddressError", "ChannelClosed", "ConnectFailed", "DatasetStreamError", "FrameError",
    "FrameTooLarge", "InvalidMessage", "MalformedFrame", "PeerDisconnected", "ProtocolError",
    "RemoteError", "StreamDigestMismatch", "TransportTimeout", "TruncatedFrame",
    "UnknownMessageType",
    "TcpForwarder", "ByteRelayServer",
    "DEFAULT_MAX_FRAME", "FrameDecoder", "FramedChannel", "decode_frames", "encode_frame",
    "max_data_chunk",
    "PROTOCOL_VERSION", "REGISTRY", "AuditEvent", "Credentials", "DatasetBegin", "DatasetData",
    "DatasetEnd", "Error", "Goodbye", "Hello", "JobResult", "JobStart", "Message",
    "MessageRegistry", "register",
    "Listener", "connect", "listen", "socket_family", "socket_target",
    "DatasetStreamReader",
]
