from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.errors import ConfigError, TransportError
from enclave.transport.address import (
    PARENT_CID,
    VMADDR_CID_ANY,
    TcpAddress,
    UnixAddress,
    VsockAddress,
    is_loopback_host,
    parse_address,
)
from enclave.transport.errors import AddressError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vsock://3:8000", VsockAddress(3, 8000)),
        ("vsock://16:5000", VsockAddress(16, 5000)),
        ("vsock://any:5000", VsockAddress(VMADDR_CID_ANY, 5000)),
        ("tcp://127.0.0.1:0", TcpAddress("127.0.0.1", 0)),
        ("tcp://localhost:443", TcpAddress("localhost", 443)),
        ("tcp://kms.us-east-1.amazonaws.com:443", TcpAddress("kms.us-east-1.amazonaws.com", 443)),
        ("tcp://[::1]:65535", TcpAddress("::1", 65535)),
        ("unix:///tmp/hermetic.sock", UnixAddress("/tmp/hermetic.sock")),
        ("unix://rel/ctl.sock", UnixAddress("rel/ctl.sock")),
    ],
)
def test_parse_known_addresses(text: str, expected: object) -> None:
    addr = parse_address(text)
    assert addr == expected
    assert str(addr) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1:80",
        "http://x:1",
        "vsock://2:5000",  # host CID is reserved
        "vsock://0:5000",
        "vsock://3:4294967295",  # VMADDR_PORT_ANY
        "vsock://3",
        "vsock://x:1",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:+80",
        "tcp://127.0.0.1:8_0",
        "tcp://127.0.0.1",
        "tcp://:80",
        "tcp://::1:80",
        "tcp://[127.0.0.1]:80",
        "tcp://[::1]80",
        "tcp://bad_host:80",
        "tcp://-bad.example:80",
        "tcp://300.1.1.1:80",
        "unix://",
        "unix://a\x00b",
        "unix:///" + "x" * 200,
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_address_error_is_both_config_and_transport_error() -> None:
    with pytest.raises(ConfigError):
        parse_address("tcp://nope")
    with pytest.raises(TransportError):
        parse_address("tcp://nope")


def test_vsock_roles() -> None:
    assert VsockAddress(PARENT_CID, 1).is_parent
    assert not VsockAddress(PARENT_CID, 1).is_enclave
    assert VsockAddress(4, 1).is_enclave
    assert VsockAddress(VMADDR_CID_ANY, 1).is_any
    assert not VsockAddress(VMADDR_CID_ANY, 1).is_enclave


def test_constructors_validate_types() -> None:
    with pytest.raises(AddressError):
        TcpAddress("127.0.0.1", True)  # type: ignore[arg-type]
    with pytest.raises(AddressError):
        VsockAddress("3", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("example.com", False), ("::", False)],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
_hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join).filter(
    lambda h: not h.replace(".", "").isdigit()
)
_hosts = st.one_of(
    _hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a))),
)
_addresses = st.one_of(
    st.builds(
        VsockAddress,
        st.one_of(st.integers(3, 0xFFFFFFFE), st.just(VMADDR_CID_ANY)),
        st.integers(0, 0xFFFFFFFE),
    ),
    st.builds(TcpAddress, _hosts, st.integers(0, 65535)),
    st.builds(
        UnixAddress,
        st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=40),
    ),
)


@given(_addresses)
def test_round_trip(addr: object) -> None:
    assert parse_address(str(addr)) == addr


@given(st.text(max_size=60))
def test_parser_raises_only_address_errors(text: str) -> None:
    try:
        parse_address(text)
    except AddressError:
        pass
