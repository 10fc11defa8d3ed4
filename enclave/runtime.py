"""The enclave's job loop: one parent session at a time.

Session (parent -> enclave unless noted):
  Hello <-> Hello, Credentials, JobStart, then per dataset DatasetBegin /
  DatasetData... / DatasetEnd; the enclave answers through the egress gate with
  AuditEvents, then JobResult and Goodbye, or Error on any failure.

KMS is reached with boto3 unchanged through the in-enclave forwarder, which
tunnels TCP over the transport to the parent's KMS relay; TLS (on Nitro) ends here.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import boto3
from botocore.config import Config

from enclave.datasets import OpenedDataset, open_sealed_dataset
from enclave.egress import EgressGate
from enclave.errors import HermeticError, RuntimeFailure
from enclave.kms import AttestedKms
from enclave.nsm.interface import Nsm
from enclave.transport.address import Address
from enclave.transport.errors import ProtocolError, TransportTimeout
from enclave.transport.forwarder import TcpForwarder
from enclave.transport.framing import FramedChannel
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    Credentials,
    DatasetBegin,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
)
from enclave.transport.sockets import listen
from enclave.transport.stream import DatasetStreamReader

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

RECV_TIMEOUT_S = 300.0
ACCEPT_POLL_S = 0.5


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


@dataclass
class JobState:
    job_id: str = ""
    datasets: dict[str, OpenedDataset] = field(default_factory=dict)


Trainer = Callable[[JobState, EgressGate], str]


class EnclaveRuntime:
    def __init__(self, config: RuntimeConfig, nsm: Nsm, trainer: Trainer | None = None) -> None:
        self._config = config
        self._nsm = nsm
        self._trainer = trainer
        self._stop = threading.Event()
        self._listener = listen(config.control)
        self._forwarder = TcpForwarder(config.kms_relay, port=config.kms_forward_port)

    @property
    def control_address(self) -> Address:
        return self._listener.address

    def serve(self, sessions: int | None = None) -> None:
        """Serve parent sessions one after the other (all of them when `sessions` is None)."""
        self._forwarder.start()
        try:
            served = 0
            while not self._stop.is_set() and (sessions is None or served < sessions):
                try:
                    # A bounded wait so stop() is seen: closing a socket from another
                    # thread does not wake a blocked accept() on Linux.
                    sock, _ = self._listener.accept(timeout=ACCEPT_POLL_S)
                except TransportTimeout:
                    continue
                served += 1
                with FramedChannel(sock) as channel:
                    self._session(channel)
        finally:
            self._forwarder.stop()
            self._listener.close()

    def stop(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- session

    def _session(self, channel: FramedChannel) -> None:
        gate = EgressGate(channel)
        try:
            self._run_job(channel, gate)
        except HermeticError as err:
            # The reason is a one-line message about the failed check; it never
            # carries plaintext, keys or metrics.
            log.warning("job failed: %s", err)
            try:
                gate.send(Error(code=type(err).__name__, message=str(err)))
            except HermeticError:
                log.warning("could not report the failure to the parent")

    def _run_job(self, channel: FramedChannel, gate: EgressGate) -> None:
        hello = _expect(channel, Hello)
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"parent speaks protocol {hello.protocol_version}, enclave {PROTOCOL_VERSION}")
        gate.send(Hello(role="enclave", protocol_version=PROTOCOL_VERSION))
        creds = _expect(channel, Credentials)
        kms = AttestedKms(self._kms_client(creds), self._nsm)
        job = _expect(channel, JobStart)
        state = JobState(job_id=job.job_id)
        for index, dataset_id in enumerate(job.datasets):
            begin = _expect(channel, DatasetBegin)
            reader = DatasetStreamReader(
                channel, begin, expected_index=index, expected_id=dataset_id, timeout=RECV_TIMEOUT_S
            )
            opened = open_sealed_dataset(reader, expected_dataset_id=dataset_id, kms=kms)
            if not reader.finished:
                raise RuntimeFailure(f"dataset {dataset_id!r} stream did not end with its digest")
            state.datasets[dataset_id] = opened
            gate.audit(
                "dataset_opened",
                dataset_id=dataset_id,
                records=opened.records,
                schema_sha256=opened.header.schema_sha256,
                sealed_sha256=reader.sha256_hex,
                plaintext_sha256=opened.plaintext_sha256,
            )
        detail = self._trainer(state, gate) if self._trainer else "datasets opened"
        gate.send(JobResult(status="ok", detail=detail))
        gate.send(Goodbye())

    def _kms_client(self, creds: Credentials) -> object:
        url = self._config.kms_url.replace("{port}", str(self._forwarder.address.port))
        return boto3.client(
            "kms",
            region_name=creds.region,
            endpoint_url=url,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            verify=self._config.kms_ca_bundle if url.startswith("https") else None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30),
        )


def _expect(channel: FramedChannel, kind: type[M]) -> M:
    msg = channel.recv(timeout=RECV_TIMEOUT_S)
    if isinstance(msg, Error):
        raise ProtocolError(f"parent reported {msg.code}: {msg.message}")
    if not isinstance(msg, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(msg).__name__}")
    return msg
