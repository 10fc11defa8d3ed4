"""enclave.wiring's S3 clients: built from the session's credentials, reaching S3 only through the forwarder."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest

from enclave.errors import ConfigError
from enclave.ledger.local import local_backends
from enclave.ledger.location import NO_LEDGERS
from enclave.ledger.s3 import S3LedgerStore, S3Location
from enclave.ledger.store import LedgerUnavailable
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


def _s3_config(server: S3Server) -> RuntimeConfig:
    target = urlsplit(server.endpoint)
    assert target.hostname and target.port
    return RuntimeConfig(control=TcpAddress("127.0.0.1", 0), kms_relay=TcpAddress("127.0.0.1", free_port()),
                         s3_relay=TcpAddress(target.hostname, target.port))


def test_s3_ledgers_use_the_sessions_current_credentials(server: S3Server, nsm: MockNsm) -> None:
    enclave = SocketEnclave(_s3_config(server), nsm, s3_ledgers=True)
    backends = enclave.runtime._ledgers
    assert backends.accept_unprotected is False  # S3 slots count only under Object Lock
    bucket = server.unique_bucket("session")
    server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    location = f"s3://{bucket}/ledgers?owner={server.account_id}"
    with _serving(enclave):
        _s3_client_once_forwarding(enclave)
        enclave._kms_client(CREDS)  # what the runtime does with a session's first Credentials
        store = backends.open_store(location, "ds-1")
        assert isinstance(store, S3LedgerStore) and store.location == location
        del server.access_keys[:]
        assert store.create(0, b"first credentials")
        assert set(server.access_keys) == {"testing"}
        # A refresh mid-job: the store opened before it signs its next requests with the new keys.
        enclave._kms_client(replace(CREDS, access_key_id="refreshed"))
        del server.access_keys[:]
        assert [s.data for s in store.read_all()] == [b"first credentials"]
        assert server.access_keys and set(server.access_keys) == {"refreshed"}
    keys = [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["ledgers/ds-1/0000000000"]


def test_s3_ledgers_without_an_s3_relay_or_session_are_refused(nsm: MockNsm, tmp_path: Any) -> None:
    config = RuntimeConfig(control=TcpAddress("127.0.0.1", 0), kms_relay=TcpAddress("127.0.0.1", free_port()))
    backends = SocketEnclave(config, nsm, s3_ledgers=True).runtime._ledgers
    with pytest.raises(LedgerUnavailable, match=r"no S3 relay \(--s3-relay\)"):
        backends.open_store("s3://ledger/p?owner=123456789012", "ds-1")
    with pytest.raises(LedgerUnavailable, match="S3 ledgers only"):
        backends.open_store(f"local:{tmp_path}", "ds-1")
    with pytest.raises(ConfigError, match="either"):
        SocketEnclave(config, nsm, ledgers=local_backends(tmp_path), s3_ledgers=True)
    assert SocketEnclave(config, nsm).runtime._ledgers is NO_LEDGERS


def test_an_s3_ledger_before_any_credentials_is_unavailable(server: S3Server, nsm: MockNsm) -> None:
    enclave = SocketEnclave(_s3_config(server), nsm, s3_ledgers=True)
    store = enclave.runtime._ledgers.open_store("s3://ledger/p?owner=123456789012", "ds-1")
    with pytest.raises(LedgerUnavailable, match="no session credentials"):
        store.read_all()
