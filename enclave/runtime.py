"""The enclave's job loop: one parent session at a time.

Session (parent -> enclave unless noted):
  Hello <-> Hello, Credentials, JobStart, then per dataset DatasetBegin /
  DatasetData... / DatasetEnd; the enclave answers through the egress gate with
  AuditEvents, then JobResult and Goodbye, or Error on any failure.

KMS is reached with boto3 unchanged through the in-enclave forwarder, which
tunnels TCP over the transport to the parent's KMS relay; TLS (on Nitro) ends here.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import boto3
from botocore.config import Config

from enclave.datasets import OpenedDataset, open_sealed_dataset, read_ipc_table
from enclave.sealed.format import SealedHeader
from enclave.training.checkpoint import CheckpointState, open_checkpoint
from enclave.training.plan import PlannedRun, plan_run
from enclave.training.spec import JobSpec
from enclave.training.trainer import PublicTable, TrainingInputs
from enclave.training.trainer import Trainer as TrainingLoop
from enclave.egress import EgressGate
from enclave.errors import INTERNAL, HermeticError, RuntimeFailure
from enclave.kms.attested import AttestedKms
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
    PUBLIC_PREFIX,
    RESUME_STREAM,
    Message,
    TrainingJob,
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
    sealed_sha256: dict[str, str] = field(default_factory=dict)
    public: dict[str, PublicTable] = field(default_factory=dict)
    spec: JobSpec | None = None
    plan: PlannedRun | None = None
    resume: CheckpointState | None = None
    kms: AttestedKms | None = None


Trainer = Callable[[JobState, EgressGate], str]

# A public evaluation set or a checkpoint is held in memory whole; bound it.
MAX_PUBLIC_BYTES = 1 << 30
MAX_CHECKPOINT_BYTES = 1 << 30
INTERNAL_FAILURE = "the enclave failed unexpectedly; the reason is in its log"


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
            log.warning("job failed (%s): %s", err.code, err)
            _report(gate, Error(code=err.code, message=str(err)))
        except Exception:
            # An exception we did not raise on purpose may quote data in its text:
            # the parent learns only that something failed, the log gets the rest.
            log.exception("job failed unexpectedly")
            _report(gate, Error(code=INTERNAL, message=INTERNAL_FAILURE))

    def _run_job(self, channel: FramedChannel, gate: EgressGate) -> None:
        hello = _expect(channel, Hello)
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"parent speaks protocol {hello.protocol_version}, enclave {PROTOCOL_VERSION}")
        gate.send(Hello(role="enclave", protocol_version=PROTOCOL_VERSION))
        creds = _expect(channel, Credentials)
        kms = AttestedKms(self._kms_client(creds), self._nsm)
        job = _expect(channel, JobStart)
        state = JobState(job_id=job.job_id, kms=kms)
        first = channel.recv(timeout=RECV_TIMEOUT_S)
        if isinstance(first, TrainingJob):
            state.spec = JobSpec.from_toml(first.spec_toml)
            first = None
        sealed_ids = [d for d in job.datasets if not d.startswith(PUBLIC_PREFIX) and d != RESUME_STREAM]
        if state.spec is not None:
            train_id = state.spec.data.train or (sealed_ids[0] if len(sealed_ids) == 1 else None)
            if train_id is None or sealed_ids != [train_id]:
                raise ProtocolError("a training job streams exactly one sealed dataset, the one its spec names")
        for index, stream_id in enumerate(job.datasets):
            begin = first if first is not None else channel.recv(timeout=RECV_TIMEOUT_S)
            first = None
            if isinstance(begin, Error):
                raise ProtocolError(f"parent reported {begin.code}: {begin.message}")
            if not isinstance(begin, DatasetBegin):
                raise ProtocolError(f"expected DatasetBegin, got {type(begin).__name__}")
            reader = DatasetStreamReader(
                channel, begin, expected_index=index, expected_id=stream_id, timeout=RECV_TIMEOUT_S
            )
            if stream_id.startswith(PUBLIC_PREFIX):
                self._receive_public(reader, stream_id[len(PUBLIC_PREFIX):], state, gate)
            elif stream_id == RESUME_STREAM:
                self._receive_resume(reader, state)
            else:
                self._receive_sealed(reader, stream_id, state, gate)
        if state.spec is not None:
            detail = self._train(state, gate)
        else:
            detail = self._trainer(state, gate) if self._trainer else "datasets opened"
        gate.send(JobResult(status="ok", detail=detail))
        gate.send(Goodbye())

    def _receive_sealed(
        self, reader: DatasetStreamReader, dataset_id: str, state: JobState, gate: EgressGate
    ) -> None:
        assert state.kms is not None

        def budget(header: SealedHeader) -> None:
            if state.spec is not None:
                state.plan = plan_run(state.spec, header)

        opened = open_sealed_dataset(reader, expected_dataset_id=dataset_id, kms=state.kms, check_header=budget)
        if not reader.finished:
            raise RuntimeFailure(f"dataset {dataset_id!r} stream did not end with its digest")
        state.datasets[dataset_id] = opened
        state.sealed_sha256[dataset_id] = reader.sha256_hex
        gate.audit(
            "dataset_opened",
            dataset_id=dataset_id,
            records=opened.records,
            schema_sha256=opened.header.schema_sha256,
            sealed_sha256=reader.sha256_hex,
            plaintext_sha256=opened.plaintext_sha256,
        )
        if state.plan is not None:
            plan = state.plan
            gate.audit(
                "training_planned",
                sampling_rate=plan.sampling_rate,
                noise_multiplier=plan.noise_multiplier,
                steps=plan.steps,
                delta=plan.delta,
                planned_epsilon=plan.planned_epsilon,
                max_epsilon=plan.max_epsilon,
            )

    def _receive_public(
        self, reader: DatasetStreamReader, name: str, state: JobState, gate: EgressGate
    ) -> None:
        data = _read_bounded(reader, MAX_PUBLIC_BYTES, f"public dataset {name!r}")
        table = read_ipc_table(data, f"public dataset {name!r}")
        public = PublicTable(name=name, table=table, sha256=hashlib.sha256(data).hexdigest())
        state.public[name] = public
        gate.audit("public_dataset", name=name, records=table.num_rows, sha256=public.sha256)

    def _receive_resume(self, reader: DatasetStreamReader, state: JobState) -> None:
        if state.spec is None or state.kms is None:
            raise ProtocolError("a checkpoint to resume from needs a training job")
        data = _read_bounded(reader, MAX_CHECKPOINT_BYTES, "checkpoint")
        state.resume = open_checkpoint(
            data,
            decrypt=state.kms.decrypt,
            expected_job_id=state.job_id,
            expected_spec_sha256=state.spec.sha256,
        )

    def _train(self, state: JobState, gate: EgressGate) -> str:
        assert state.spec is not None and state.kms is not None
        if state.plan is None or not state.datasets:
            raise ProtocolError("a training job needs its sealed dataset")
        [(dataset_id, opened)] = state.datasets.items()
        inputs = TrainingInputs(
            job_id=state.job_id,
            spec=state.spec,
            plan=state.plan,
            train=opened,
            train_sealed_sha256=state.sealed_sha256[dataset_id],
            public=dict(state.public),
            resume=state.resume,
            nsm=self._nsm,
            generate_data_key=state.kms.generate_data_key,
        )
        return TrainingLoop(inputs, gate).run()

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


def _report(gate: EgressGate, error: Error) -> None:
    try:
        gate.send(error)
    except HermeticError:
        log.warning("could not report the failure to the parent")


def _read_bounded(reader: DatasetStreamReader, limit: int, what: str) -> bytes:
    data = reader.read(limit + 1)
    if len(data) > limit:
        raise RuntimeFailure(f"{what} exceeds {limit} bytes")
    if not reader.finished:
        raise RuntimeFailure(f"{what} stream did not end with its digest")
    return data


def _expect(channel: FramedChannel, kind: type[M]) -> M:
    msg = channel.recv(timeout=RECV_TIMEOUT_S)
    if isinstance(msg, Error):
        raise ProtocolError(f"parent reported {msg.code}: {msg.message}")
    if not isinstance(msg, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(msg).__name__}")
    return msg
