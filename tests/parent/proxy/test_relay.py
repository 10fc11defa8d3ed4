from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from enclave.transport.address import Address, TcpAddress, UnixAddress
from enclave.transport.errors import AddressError
from enclave.transport.forwarder import TcpForwarder
from parent.proxy.relay import KmsRelay, TargetNotAllowed, is_allowed
from tests.support.servers import echo_server, free_port, http_server, recv_all


def _relay_listen(kind: str, tmp_path: Path) -> Address:
    # The Unix socket plays the vsock hop between enclave and parent.
    return UnixAddress(str(tmp_path / "kms.sock")) if kind == "unix" else TcpAddress("127.0.0.1", 0)


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_chain_moves_bytes_both_ways_and_tap_sees_them(kind: str, tmp_path: Path) -> None:
    taps: list[tuple[str, bytes]] = []
    blob = os.urandom(700_000)
    with echo_server() as (host, port):
        relay = KmsRelay(
            _relay_listen(kind, tmp_path), host, port, [(host, port)],
            tap=lambda d, b: taps.append((d, b)),
        )
        relay_addr = relay.start()
        fwd = TcpForwarder(relay_addr)
        fwd_addr = fwd.start()
        try:
            with socket.create_connection((fwd_addr.host, fwd_addr.port), timeout=10) as c:
                sender = threading.Thread(
                    target=lambda: (c.sendall(blob), c.shutdown(socket.SHUT_WR))
                )
                sender.start()
                echoed = recv_all(c)  # EOF only arrives if half-close crossed every hop
                sender.join()
        finally:
            fwd.stop()
            relay.stop()
    assert echoed == blob
    assert b"".join(b for d, b in taps if d == "recv") == blob
    assert b"".join(b for d, b in taps if d == "sent") == blob
    assert _threads("kms-relay") == [] and _threads("kms-forwarder") == []
    if kind == "unix":
        assert not (tmp_path / "kms.sock").exists()


def test_chain_carries_http_requests(tmp_path: Path) -> None:
    with http_server() as (host, port):
        with KmsRelay(UnixAddress(str(tmp_path / "k.sock")), host, port, [(host, port)]) as relay, \
                TcpForwarder(relay.address) as fwd:
            for i in range(3):
                conn = http.client.HTTPConnection("127.0.0.1", fwd.address.port, timeout=10)
                body = json.dumps({"KeyId": f"alias/k{i}", "Plaintext": "x" * 1000}).encode()
                conn.request("POST", "/", body=body,
                             headers={"X-Amz-Target": "TrentService.Decrypt"})
                resp = conn.getresponse()
                assert resp.status == 200
                assert resp.read() == body[::-1]
                conn.close()


def test_refuses_target_outside_allow_list(tmp_path: Path) -> None:
    allow = [("kms.us-east-1.amazonaws.com", 443)]
    for host, port in [("kms.us-east-1.amazonaws.com", 80), ("evil.example", 443),
                       ("kms.us-east-1.amazonaws.com.evil.example", 443)]:
        with pytest.raises(TargetNotAllowed, match="not on the allow-list"):
            KmsRelay(UnixAddress(str(tmp_path / "r.sock")), host, port, allow)
    with pytest.raises(TargetNotAllowed):
        KmsRelay(UnixAddress(str(tmp_path / "r.sock")), "127.0.0.1", 443, [])
    # Nothing was bound by a refused relay.
    assert not (tmp_path / "r.sock").exists()
    assert issubclass(TargetNotAllowed, ConfigError)


def test_allow_list_matching() -> None:
    allow = [("KMS.us-east-1.amazonaws.com", 443)]
    assert is_allowed("kms.us-east-1.amazonaws.com", 443, allow)
    assert is_allowed("kms.us-east-1.amazonaws.com.", 443, allow)
    assert not is_allowed("kms.us-east-1.amazonaws.com", 444, allow)
    assert not is_allowed("x.kms.us-east-1.amazonaws.com", 443, allow)


def test_relay_listens_on_loopback_only() -> None:
    relay = KmsRelay(TcpAddress("0.0.0.0", 0), "127.0.0.1", 1, [("127.0.0.1", 1)])
    with pytest.raises(AddressError, match="non-loopback"):
        relay.start()


def test_unreachable_target_drops_the_connection(tmp_path: Path) -> None:
    port = free_port()
    with KmsRelay(UnixAddress(str(tmp_path / "k.sock")), "127.0.0.1", port, [("127.0.0.1", port)],
                  connect_timeout=5) as relay:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(tmp_path / "k.sock"))
        assert recv_all(s) == b""
        s.close()
        assert relay.address == UnixAddress(str(tmp_path / "k.sock"))
