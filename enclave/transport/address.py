"""Transport addresses: `vsock://CID:PORT`, `tcp://HOST:PORT`, `unix://PATH`.

On a Nitro host the parent (CID 3) and the enclave (CID 4 and up) talk over
vsock; on a development machine the same code runs over loopback TCP or a
Unix socket. Parsing is strict so a typo in a config fails at start-up with
one line instead of a confusing connect error later.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from enclave.transport.errors import AddressError

# Nitro reserves CIDs 0-2 (hypervisor, local, host); the parent instance is
# always CID 3 and enclaves get CIDs from 4 up.
PARENT_CID = 3
MIN_ENCLAVE_CID = 4
# VMADDR_CID_ANY: bind to whatever CID this VM has (listening side only).
VMADDR_CID_ANY = 0xFFFFFFFF
_MAX_VSOCK_PORT = 0xFFFFFFFE  # 0xFFFFFFFF is VMADDR_PORT_ANY
_MAX_TCP_PORT = 65535
# sun_path is 108 bytes including the terminating NUL on Linux.
_MAX_UNIX_PATH = 107

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class VsockAddress:
    """A vsock endpoint; `cid == VMADDR_CID_ANY` is written `any` and only listens."""

    cid: int
    port: int

    def __post_init__(self) -> None:
        if isinstance(self.cid, bool) or not isinstance(self.cid, int):
            raise AddressError(f"vsock CID must be an integer, got {self.cid!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise AddressError(f"vsock port must be an integer, got {self.port!r}")
        if self.cid != VMADDR_CID_ANY and not PARENT_CID <= self.cid < VMADDR_CID_ANY:
            raise AddressError(
                f"vsock CID {self.cid} is reserved: use {PARENT_CID} for the parent "
                f"or {MIN_ENCLAVE_CID} and up for an enclave"
            )
        if not 0 <= self.port <= _MAX_VSOCK_PORT:
            raise AddressError(f"vsock port {self.port} is out of range 0..{_MAX_VSOCK_PORT}")

    @property
    def is_parent(self) -> bool:
        return self.cid == PARENT_CID

    @property
    def is_enclave(self) -> bool:
        return MIN_ENCLAVE_CID <= self.cid < VMADDR_CID_ANY

    @property
    def is_any(self) -> bool:
        return self.cid == VMADDR_CID_ANY

    def __str__(self) -> str:
        cid = "any" if self.is_any else str(self.cid)
        return f"vsock://{cid}:{self.port}"


@dataclass(frozen=True)
class TcpAddress:
    """A TCP endpoint; listening is allowed only on loopback hosts (see sockets.listen)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise AddressError(f"TCP host must be a string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise AddressError(f"TCP port must be an integer, got {self.port!r}")
        _check_host(self.host)
        if not 0 <= self.port <= _MAX_TCP_PORT:
            raise AddressError(f"TCP port {self.port} is out of range 0..{_MAX_TCP_PORT}")

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    """A Unix-domain stream socket at a filesystem path."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise AddressError("unix socket path must be a non-empty string")
        if "\x00" in self.path:
            raise AddressError("unix socket path must not contain NUL")
        try:
            encoded = self.path.encode("utf-8")
        except UnicodeEncodeError:
            raise AddressError("unix socket path must be valid UTF-8") from None
        if len(encoded) > _MAX_UNIX_PATH:
            raise AddressError(
                f"unix socket path is {len(encoded)} bytes, longer than {_MAX_UNIX_PATH}"
            )

    def __str__(self) -> str:
        return f"unix://{self.path}"


Address = VsockAddress | TcpAddress | UnixAddress


def parse_address(text: str) -> Address:
    """Parse an address string; raise AddressError (one line) if it is invalid."""
    if not isinstance(text, str):
        raise AddressError(f"address must be a string, got {type(text).__name__}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(f"address {text!r} has no scheme (vsock://, tcp:// or unix://)")
    scheme = scheme.lower()
    if scheme == "unix":
        return UnixAddress(rest)
    if scheme == "vsock":
        cid_text, port = _split_host_port(text, rest)
        cid = VMADDR_CID_ANY if cid_text.lower() == "any" else _parse_int(text, cid_text)
        return VsockAddress(cid, port)
    if scheme == "tcp":
        host, port = _split_host_port(text, rest)
        return TcpAddress(host, port)
    raise AddressError(f"address {text!r} has unknown scheme {scheme!r}")


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and literal loopback IPs; names are never resolved here."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise AddressError(f"address {text!r} has a malformed [IPv6]:PORT part")
        if ":" not in host:
            raise AddressError(f"address {text!r} puts a non-IPv6 host in brackets")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise AddressError(f"address {text!r} has no port")
        if ":" in host:
            raise AddressError(f"address {text!r}: write IPv6 hosts as [ADDR]:PORT")
    if not host:
        raise AddressError(f"address {text!r} has no host")
    return host, _parse_int(text, port_text)


def _parse_int(text: str, digits: str) -> int:
    # int() would accept "+1", " 1" and "1_000"; addresses take plain digits only.
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise AddressError(f"address {text!r} has a malformed number {digits!r}")
    return int(digits)


def _check_host(host: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"TCP host {host!r} is not a valid IPv6 address") from None
        return
    if len(host) > 253 or not host:
        raise AddressError(f"TCP host {host!r} is not a valid host name")
    if not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise AddressError(f"TCP host {host!r} is not a valid host name or IPv4 address")
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise AddressError(f"TCP host {host!r} is not a valid IPv4 address") from None
