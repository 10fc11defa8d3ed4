"""One job from the parent's side: run the KMS relay, then the enclave session.

The relay (the vsock-proxy role) carries the enclave's TLS to KMS as opaque
bytes; the session streams sealed datasets and collects what the enclave's
egress gate lets out. Credentials handed to the enclave are the parent's own
temporary ones: the key policy only lets them decrypt with an attestation. With a
CredentialsRefresher (`hermetic parent run` always has one) newer ones follow
before they expire, so a job may outlive them.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import boto3

from enclave.errors import ConfigError
from enclave.transport.address import Address
from enclave.transport.framing import Tap
from enclave.transport.messages import Credentials, Message
from parent.proxy.credentials import CredentialsRefresher, check_not_expired
from parent.proxy.relay import KmsRelay
from parent.proxy.session import DatasetInput, ParentSession, SessionOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayTarget:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> RelayTarget:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def credentials_from_environment(region: str, kms_endpoint: str) -> Credentials:
    """The parent's current AWS credentials (env, profile or instance role) as a message.

    Each call resolves the chain afresh, so it is also the source a CredentialsRefresher
    asks for newer ones (`environment_refresher`).
    """
    creds = boto3.Session(region_name=region).get_credentials()
    if creds is None:
        raise ConfigError("no AWS credentials found for the parent (env, profile or instance role)")
    frozen = creds.get_frozen_credentials()
    expiry = getattr(creds, "_expiry_time", None)
    return Credentials(
        access_key_id=frozen.access_key,
        secret_access_key=frozen.secret_key,
        session_token=frozen.token,
        region=region,
        kms_endpoint=kms_endpoint,
        expiration_ms=int(expiry.timestamp() * 1000) if expiry is not None else None,
    )


def environment_refresher(region: str, kms_endpoint: str) -> CredentialsRefresher:
    """Refreshes from the parent's environment, as `credentials_from_environment` reads it."""
    return CredentialsRefresher(functools.partial(credentials_from_environment, region, kms_endpoint))


def run_job(
    *,
    enclave: Address,
    relay_listen: Address,
    kms_target: RelayTarget,
    allow_list: Sequence[RelayTarget],
    credentials: Credentials,
    job_id: str,
    datasets: Sequence[tuple[str, DatasetInput]],
    tap: Tap | None = None,
    s3_client: object | None = None,
    progress: Callable[[str, int], None] | None = None,
    connect_timeout: float = 30.0,
    extra: Sequence[Message] = (),
    on_message: Callable[[Message], None] | None = None,
    refresher: CredentialsRefresher | None = None,
) -> SessionOutcome:
    """Run one job; with `refresher`, the enclave's credentials are replaced before they
    expire (see parent.proxy.credentials). Expired `credentials` are refused first."""
    check_not_expired(credentials, time.time())
    relay = KmsRelay(
        relay_listen,
        kms_target.host,
        kms_target.port,
        [(t.host, t.port) for t in allow_list],
        tap=tap,
    )
    relay.start()
    log.info("KMS relay %s -> %s", relay.address, kms_target)
    try:
        session = ParentSession(
            enclave,
            credentials,
            connect_timeout=connect_timeout,
            tap=tap,
            s3_client=s3_client,
            progress=progress,
            on_message=on_message,
            refresher=refresher,
        )
        started = time.monotonic()
        outcome = session.run(job_id, datasets, extra)
        log.info("job %s done in %.1fs", job_id, time.monotonic() - started)
        return outcome
    finally:
        relay.stop()
