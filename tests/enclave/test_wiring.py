"""enclave.wiring's S3 clients: built from the session's credentials, reaching S3 only through the forwarder."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from enclave.errors import ConfigError
from enclave.ledger.s3 import S3LedgerStore, S3Location
from enclave.transport.address import TcpAddress
from enclave.transport.errors import TransportError
from enclave.transport.messages import Credentials
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.local.mock_nsm import MockNsm
from tests.support.s3_server import S3Server, s3_server
from tests.support.servers import free_port

CREDS = Credentials(access_key_id="testing", secret_access_key="testing", session_token=None, region="us-east-1",
                    kms_endpoint="http://127.0.0.1:1", expiration_ms=None)


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@contextmanager
def _serving(enclave: SocketEnclave) -> Iterator[None]:
    thread = threading.Thread(target=enclave.serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        enclave.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def _s3_client_once_forwarding(enclave: SocketEnclave) -> Any:
    # serve() starts the forwarders on its own thread: poll until the S3 one is bound.
    ready = threading.Event()
    for _ in range(2000):
        try:
            return enclave.s3_client(CREDS)
        except TransportError:
            ready.wait(0.005)
    raise AssertionError("the S3 forwarder never started")


def test_s3_clients_go_through_the_forwarder(server: S3Server, nsm: MockNsm) -> None:
    target = urlsplit(server.endpoint)
    assert target.hostname and target.port
    config = RuntimeConfig(control=TcpAddress("127.0.0.1", 0), kms_relay=TcpAddress("127.0.0.1", free_port()),
                           s3_relay=TcpAddress(target.hostname, target.port))
    enclave = SocketEnclave(config, nsm)
    with _serving(enclave):
        client = _s3_client_once_forwarding(enclave)
        endpoint = urlsplit(client.meta.endpoint_url)
        assert endpoint.hostname == "127.0.0.1" and endpoint.port != target.port  # the forwarder, not S3
        assert client.meta.config.s3["addressing_style"] == "path"
        bucket = server.unique_bucket("wired")
        server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        store = S3LedgerStore(S3Location(bucket, "ledger", server.account_id), client)
        assert store.create(0, b"through the forwarder")
        assert [s.data for s in store.read_all()] == [b"through the forwarder"]


def test_no_s3_relay_means_no_s3_clients(nsm: MockNsm) -> None:
    config = RuntimeConfig(control=TcpAddress("127.0.0.1", 0), kms_relay=TcpAddress("127.0.0.1", free_port()))
    enclave = SocketEnclave(config, nsm)
    with _serving(enclave), pytest.raises(ConfigError, match="no S3 relay"):
        enclave.s3_client(CREDS)
