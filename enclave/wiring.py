"""The enclave runtime on real sockets: the one place its production collaborators are built.

`SocketEnclave` gives `EnclaveRuntime` a listener of framed socket connections on
the control address, and KMS clients made with boto3, unchanged, that reach KMS
through the in-enclave forwarder: it tunnels TCP over the transport to the
parent's KMS relay, and TLS (on Nitro) ends here. S3 clients (the budget ledger,
enclave.ledger.s3) reach S3 the same way, through a second forwarder to the parent's
S3 relay, when one is configured. Budget ledgers are reached through `ledgers`
(enclave.ledger.location.LedgerBackends); its default opens none, and it never accepts
slots its store does not protect: only the local mock enclave's wiring
(`parent.local.mock_enclave`) passes the local-directory backend, which does.
`s3_ledgers=True` (what `python -m enclave` uses) opens `s3://` ledgers through the S3
forwarder with the session's current credentials, protected slots only.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from enclave.errors import ConfigError
from enclave.ledger.location import NO_LEDGERS, S3_SCHEME, LedgerBackends
from enclave.ledger.s3 import S3LedgerStore
from enclave.ledger.store import LedgerStore, LedgerUnavailable
from enclave.nsm.interface import Nsm
from enclave.runtime import Clock, EnclaveRuntime, TrainingLoopFactory, utc_now
from enclave.training.tuning import job_trainer
from enclave.transport.address import Address
from enclave.transport.forwarder import TcpForwarder
from enclave.transport.framing import FramedListener
from enclave.transport.messages import Credentials
from enclave.transport.sockets import listen


@dataclass(frozen=True)
class RuntimeConfig:
    """Where the enclave listens and how it reaches KMS.

    `kms_url` is the endpoint boto3 uses inside the enclave; "{port}" is replaced
    with the forwarder's port (local mode: "http://127.0.0.1:{port}"; on Nitro the
    forwarder listens on 443 and /etc/hosts maps the regional KMS name to it).
    """

    control: Address
    kms_relay: Address
    kms_url: str = "http://127.0.0.1:{port}"
    kms_forward_port: int = 0
    kms_ca_bundle: str | None = None
    # The same for S3 (no relay: no S3 clients). On Nitro the S3 forwarder needs its own
    # loopback address (e.g. 127.0.0.2:443) for the regional S3 name in /etc/hosts.
    s3_relay: Address | None = None
    s3_url: str = "http://127.0.0.1:{port}"
    s3_forward_host: str = "127.0.0.1"
    s3_forward_port: int = 0
    s3_ca_bundle: str | None = None


class SocketEnclave:
    """The runtime listening on `config.control`, with the forwarder running while it serves."""

    def __init__(
        self,
        config: RuntimeConfig,
        nsm: Nsm,
        *,
        clock: Clock = utc_now,
        training_loop: TrainingLoopFactory = job_trainer,
        ledgers: LedgerBackends = NO_LEDGERS,
        s3_ledgers: bool = False,
    ) -> None:
        if s3_ledgers and ledgers is not NO_LEDGERS:
            raise ConfigError("pass either ledgers or s3_ledgers, not both")
        self._config = config
        self._creds = _SessionCredentials()
        self._forwarder = TcpForwarder(config.kms_relay, port=config.kms_forward_port)
        self._s3_forwarder = (
            None if config.s3_relay is None
            else TcpForwarder(config.s3_relay, port=config.s3_forward_port, host=config.s3_forward_host)
        )
        if s3_ledgers:
            ledgers = LedgerBackends(open_store=self._open_s3_ledger, accept_unprotected=False)
        self.runtime = EnclaveRuntime(
            nsm, FramedListener(listen(config.control)), self._kms_client, clock=clock, training_loop=training_loop,
            ledgers=ledgers,
        )

    @property
    def control_address(self) -> Address:
        return self.runtime.control_address

    def serve(self, sessions: int | None = None) -> None:
        self._forwarder.start()
        try:
            if self._s3_forwarder is not None:
                self._s3_forwarder.start()
            self.runtime.serve(sessions)
        finally:
            if self._s3_forwarder is not None:
                self._s3_forwarder.stop()
            self._forwarder.stop()

    def stop(self) -> None:
        self.runtime.stop()

    def _kms_client(self, creds: Credentials) -> Any:
        """A client for `creds`: the first of a session, or a refresh (then built on the
        thread that reads the control channel during training, hence its own boto3 session:
        the default one is not safe to share between threads)."""
        url = self._config.kms_url.replace("{port}", str(self._forwarder.address.port))
        client = _client("kms", url, self._config.kms_ca_bundle, creds, Config())
        # The runtime calls this with a session's first credentials and with every refresh it
        # accepted: exactly the credentials the session's S3 ledger requests must use.
        self._creds.set(creds)
        return client

    def s3_client(self, creds: Credentials) -> Any:
        """An S3 client for `creds` through the S3 forwarder (the ledger's store), built
        like the KMS clients, so a credentials refresh can replace it the same way."""
        if self._s3_forwarder is None:
            raise ConfigError("no S3 relay is configured: the enclave cannot reach S3")
        url = self._config.s3_url.replace("{port}", str(self._s3_forwarder.address.port))
        # Path-style: the forwarder answers for one name (the regional endpoint), so
        # per-bucket virtual host names would not reach it.
        return _client("s3", url, self._config.s3_ca_bundle, creds, Config(s3={"addressing_style": "path"}))


    def _open_s3_ledger(self, location: str, dataset_id: str) -> LedgerStore:
        """Dataset `dataset_id`'s ledger at `location`, reached with the session's current credentials.

        The location comes from the sealed header, read before KMS authenticates its context:
        a forged header can point this at any bucket the parent's relay reaches. That only
        fails: reads are bounded (slot count, listed keys, slot size), entries must verify
        under the header's ledger key, nothing is written before KMS released the data key
        for that very context, and the ledger key derived from it must match the context's.
        """
        if not location.startswith(S3_SCHEME):
            raise LedgerUnavailable(f"this enclave reaches S3 ledgers only, not {location[:80]!r}")
        if self._s3_forwarder is None:
            raise LedgerUnavailable(f"this enclave has no S3 relay (--s3-relay): it cannot reach ledger {location!r}")
        return S3LedgerStore.for_dataset(location, dataset_id, _CurrentS3Client(self.s3_client, self._creds))


class _SessionCredentials:
    """The credentials the serving session last handed over (set on the control thread or the
    refresh-reading thread, read by the ledger's calls: hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._creds: Credentials | None = None

    def set(self, creds: Credentials) -> None:
        with self._lock:
            self._creds = creds

    def get(self) -> Credentials:
        with self._lock:
            creds = self._creds
        if creds is None:
            raise LedgerUnavailable("no session credentials yet: the ledger cannot be reached")
        return creds


class _CurrentS3Client:
    """The S3 calls a ledger store makes, each with a client for the current credentials (rebuilt
    once after a refresh), so a store opened before a refresh never signs with expired keys."""

    def __init__(self, build: Callable[[Credentials], Any], creds: _SessionCredentials) -> None:
        self._build = build
        self._creds = creds
        self._lock = threading.Lock()
        self._built_for: Credentials | None = None
        self._client: Any = None

    def _current(self) -> Any:
        creds = self._creds.get()
        with self._lock:
            if self._built_for is not creds:
                self._client, self._built_for = self._build(creds), creds
            return self._client

    def put_object(self, **request: Any) -> Any:
        return self._current().put_object(**request)

    def list_objects_v2(self, **request: Any) -> Any:
        return self._current().list_objects_v2(**request)

    def get_object(self, **request: Any) -> Any:
        return self._current().get_object(**request)


def _client(service: str, url: str, ca_bundle: str | None, creds: Credentials, extra: Config) -> Any:
    # Its own boto3 session: the default one is not safe to share between threads.
    return boto3.session.Session().client(
        service,
        region_name=creds.region,
        endpoint_url=url,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        verify=ca_bundle if url.startswith("https") else None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10,
                      read_timeout=30).merge(extra),
    )
