"""The enclave's job loop: one parent session at a time.

Session (parent -> enclave unless noted):
  Hello <-> Hello, Credentials, JobStart, TrainingJob, then per stream in JobStart
  order DatasetBegin / DatasetData... / DatasetEnd; the enclave answers through the
  egress gate with AuditEvents and the training loop's releases, then JobResult and
  Goodbye, or Error (a code from enclave.errors) on any failure. Once a data key has
  come back from KMS, every failure is the one constant Error OPENED_FAILURE, and the
  log gets the exception's class only: any reason could quote private data.

Budget ledger: the sealed dataset's context names its ledger and the ledger key's
public half. Before KMS is asked for the data key, the ledger is read and verified
and this job's whole plan composed with every valid entry must fit the cap
(`_check_ledger`); once the key is released the ledger key is derived from it and
must match the context; after the last stream and before any training step, this
session's steps are reserved in the ledger (`_reserve_budget`). See enclave.ledger.

Initial weights: a spec whose inline model names `weights_sha256` starts from that
public safetensors file, streamed as WEIGHTS_STREAM before every sealed dataset (JobStart
must list it then, and only then). Its hash must match, it is read by the enclave's own
reader (enclave.training.modelfmt.weights), and it must hold exactly the model's
tensors, checked with the job against the headers: all before any KMS request.

Checkpoints: once every dataset's data key is in, a checkpoint authenticator is derived
from them, in the spec's order (enclave.training.checkpoint); the trainer tags every
checkpoint with it, and a checkpoint to resume from, which must follow the datasets'
streams, is refused unless its KMS key is one every dataset's context allows
(model_owner_keys) and its tag verifies.

Several data owners: a job whose spec lists several sealed datasets trains on their
union. No key may be asked for before every dataset's header and ledger passed, and
the headers arrive one stream after the other, so every sealed stream but the last is
held in memory as it came (ciphertext, bounded by `max_sealed_bytes`); the last one's
header completes the set, the whole job is checked against all of them, and only then
are the keys asked for (the last stream's, as it streams on, then the held ones').
Each ledger is then charged the same steps, one reservation after the other; if a
later one fails, the earlier ones stay spent (the safe direction: budget is lost,
never over-spent).

Credentials refresh: after the first Credentials the parent may send Credentials
again at any point, between set-up messages, between the frames of a dataset stream
or while training runs (a thread reads the control channel then). Each one replaces
the client the job's AttestedKms uses for later calls; it must be for the session's
region and KMS endpoint. A parent's Goodbye means it sends nothing more: a message
after it, a refresh included, is a protocol error, and so is any message other than a
refresh, Goodbye or Error while training runs.

The runtime opens no socket, builds no KMS client and reads no clock of its own:
it is given a listener of Channels, a factory turning the parent's Credentials
into a KMS client, a clock and the training loop. enclave.wiring builds the
production ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from enclave.audit_log import NONCE_BYTES as AUDIT_NONCE_BYTES
from enclave.datasets import OpenedDataset, open_sealed_dataset, read_ipc_table
from enclave.egress import EgressGate
from enclave.errors import INTERNAL, ConfigError, HermeticError, RuntimeFailure
from enclave.hazmat.checkpoint_key import CheckpointAuthKey
from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.kms.attested import AttestedKms
from enclave.ledger.entry import NONCE_BYTES
from enclave.ledger.location import NO_LEDGERS, LedgerBackends
from enclave.ledger.reserve import check_header_budget, dataset_budget, ledger_signing_key, reserve
from enclave.ledger.store import LedgerStore
from enclave.nsm.interface import Nsm
from enclave.privacy.ledger import Segment
from enclave.sealed.errors import EncryptionContextMismatch
from enclave.sealed.format import SealedHeader
from enclave.sealed.stream import read_header
from enclave.training.checkpoint import (
    CheckpointAuthenticator,
    CheckpointBinding,
    CheckpointKeyNotAllowed,
    CheckpointState,
    dataset_context_sha256,
    open_checkpoint,
    read_checkpoint_header,
)
from enclave.training.jobmodel import job_model
from enclave.training.modelfmt.limits import MAX_WEIGHTS_BYTES
from enclave.training.modelfmt.weights import Weights, check_weights, open_weights
from enclave.training.plan import PlannedRun, plan_run
from enclave.training.spec import JobSpec
from enclave.training.trainer import PublicTable, TrainingDataset, TrainingInputs
from enclave.training.tuning import job_trainer
from enclave.transport.address import Address
from enclave.transport.channel import Channel, ChannelListener
from enclave.transport.errors import (
    ChannelClosed,
    PeerDisconnected,
    ProtocolError,
    RemoteError,
    TransportTimeout,
)
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    PUBLIC_PREFIX,
    RESUME_STREAM,
    WEIGHTS_STREAM,
    Credentials,
    DatasetBegin,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
    TrainingJob,
)
from enclave.transport.stream import DatasetStreamReader

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

INTERNAL_FAILURE = "the enclave failed unexpectedly; the reason is in its log"
# Once a data key is in the enclave, every failure is this one Error: a reason could
# be a function of the private data (a value, a column, where it broke).
OPENED_FAILURE_CODE = "runtime"
OPENED_FAILURE = "the job failed inside the enclave after the data was opened"

KmsClientFactory = Callable[[Credentials], Any]
Clock = Callable[[], datetime]


class TrainingLoop(Protocol):
    def run(self) -> str:
        """Train and release through the gate; the JobResult detail."""
        ...


TrainingLoopFactory = Callable[[TrainingInputs, EgressGate], TrainingLoop]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RuntimeLimits:
    recv_timeout_s: float = 300.0
    # A bounded accept so stop() is seen: closing a socket from another thread
    # does not wake a blocked accept() on Linux.
    accept_poll_s: float = 0.5
    # A public evaluation set or a checkpoint is held in memory whole; bound it.
    max_public_bytes: int = 1 << 30
    max_checkpoint_bytes: int = 1 << 30
    max_weights_bytes: int = MAX_WEIGHTS_BYTES
    # Every sealed stream of a job on several datasets but the last is held until all headers are in;
    # this bounds them together.
    max_sealed_bytes: int = 1 << 32
    # While training runs, the control channel is read in turns of this length, so
    # the reader sees the end of training promptly.
    control_poll_s: float = 0.1


@dataclass
class _Exposure:
    """Whether this session has obtained a data key (and so may hold private plaintext)."""

    opened: bool = False


class _MarkingKms:
    """The job's KMS for a data key's Decrypt: marks the session opened once a key came back."""

    def __init__(self, kms: AttestedKms, exposure: _Exposure) -> None:
        self._kms, self._exposure = kms, exposure

    def decrypt(self, ciphertext_blob: bytes, encryption_context: dict[str, str], key_id: str | None = None) -> bytes:
        key = self._kms.decrypt(ciphertext_blob, encryption_context, key_id=key_id)
        self._exposure.opened = True
        return key


@dataclass
class _Sealed:
    """One sealed dataset of the job, from its header to its reservation."""

    header: SealedHeader
    held: bytes | None = None  # the whole stream, while other headers are awaited
    sealed_sha256: str = ""
    opened: OpenedDataset | None = None
    ledger: LedgerStore | None = None
    ledger_key: LedgerSigningKey | None = None
    # Kept from the data key's arrival until every dataset's is in to derive the checkpoint key.
    data_key: bytes = b""
    # The dataset's cumulative epsilon: what the ledger held before the key, then with this job's entry.
    dataset_epsilon: float = 0.0


@dataclass
class _Job:
    """What one session has received so far."""

    job_id: str
    spec: JobSpec
    kms: AttestedKms
    train_ids: tuple[str, ...]
    sealed: dict[str, _Sealed] = field(default_factory=dict)
    plan: PlannedRun | None = None
    public: dict[str, PublicTable] = field(default_factory=dict)
    resume: CheckpointState | None = None
    resume_sealed_sha256: str = ""
    weights: Weights | None = None
    # Tags this job's checkpoints and checks the one resumed from; set once the data key is in.
    checkpoint_auth: CheckpointAuthenticator | None = None
    exposure: _Exposure = field(default_factory=_Exposure)


class EnclaveRuntime:
    def __init__(
        self,
        nsm: Nsm,
        listener: ChannelListener,
        kms_clients: KmsClientFactory,
        *,
        clock: Clock = utc_now,
        training_loop: TrainingLoopFactory = job_trainer,
        limits: RuntimeLimits = RuntimeLimits(),
        ledgers: LedgerBackends = NO_LEDGERS,
    ) -> None:
        self._nsm = nsm
        self._ledgers = ledgers
        self._listener = listener
        self._kms_clients = kms_clients
        self._clock = clock
        self._training_loop = training_loop
        self._limits = limits
        self._stop = threading.Event()

    @property
    def control_address(self) -> Address:
        return self._listener.address

    def serve(self, sessions: int | None = None) -> None:
        """Serve parent sessions one after the other (all of them when `sessions` is None)."""
        try:
            served = 0
            while not self._stop.is_set() and (sessions is None or served < sessions):
                try:
                    channel = self._listener.accept(timeout=self._limits.accept_poll_s)
                except TransportTimeout:
                    continue
                served += 1
                with channel:
                    self._session(channel)
        finally:
            self._listener.close()

    def stop(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- session

    def _session(self, channel: Channel) -> None:
        control = _Control(channel, self._kms_clients)
        gate = EgressGate(control)
        exposure = _Exposure()
        try:
            self._run_job(control, gate, exposure)
        except Exception as err:
            if exposure.opened:
                # The log is the parent's to read too (the Nitro console): the class
                # and a fixed text only, never str(err) or a traceback.
                log.error("job failed after the data was opened (%s)", type(err).__name__)
                _report(gate, Error(code=OPENED_FAILURE_CODE, message=OPENED_FAILURE))
            elif isinstance(err, HermeticError):
                # Before any data key: a one-line message about a check on public
                # inputs (spec, public header, parent messages, KMS's answer).
                log.warning("job failed (%s): %s", err.code, err)
                _report(gate, Error(code=err.code, message=str(err)))
            else:
                # An exception we did not raise on purpose: the parent learns only
                # that something failed, the log gets the rest.
                log.exception("job failed unexpectedly")
                _report(gate, Error(code=INTERNAL, message=INTERNAL_FAILURE))

    def _run_job(self, channel: _Control, gate: EgressGate, exposure: _Exposure) -> None:
        hello = self._expect(channel, Hello)
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"parent speaks protocol {hello.protocol_version}, enclave {PROTOCOL_VERSION}")
        gate.send(Hello(role="enclave", protocol_version=PROTOCOL_VERSION))
        creds = self._expect(channel, Credentials)
        kms = AttestedKms(self._kms_clients(creds), self._nsm)
        channel.accept_refreshes(creds, kms)
        start = self._expect(channel, JobStart)
        # The chain starts once the job is named; a fresh nonce keeps two sessions' chains apart.
        gate.begin_audit(start.job_id, self._nsm.get_random(AUDIT_NONCE_BYTES), self._clock)
        kms.observe(gate.record)
        spec = JobSpec.from_toml(self._expect(channel, TrainingJob).spec_toml)
        job = _Job(start.job_id, spec, kms, train_ids=_train_ids(spec, start.datasets), exposure=exposure)
        _check_weights_stream(spec, start.datasets)
        if spec.tuning is not None and RESUME_STREAM in start.datasets:
            # A search's trials and their draws are not checkpointed: a resumed search could not be
            # accounted as one repeat-and-select run. Refused before any key is used.
            raise ConfigError("a tuning job cannot be resumed: run the search again as a new job")
        for index, stream_id in enumerate(start.datasets):
            begin = self._expect(channel, DatasetBegin)
            reader = DatasetStreamReader(
                channel, begin, expected_index=index, expected_id=stream_id, timeout=self._limits.recv_timeout_s
            )
            if stream_id.startswith(PUBLIC_PREFIX):
                self._receive_public(reader, stream_id[len(PUBLIC_PREFIX):], job, gate)
            elif stream_id == RESUME_STREAM:
                self._receive_resume(reader, job, gate)
            elif stream_id == WEIGHTS_STREAM:
                self._receive_weights(reader, job, gate)
            else:
                self._receive_sealed(reader, job, gate)
        self._reserve_budget(job, gate)
        with channel.watched(self._limits.control_poll_s):
            detail = self._train(job, gate)
        gate.send(JobResult(status="ok", detail=detail))
        gate.send(Goodbye())

    def _receive_sealed(self, reader: DatasetStreamReader, job: _Job, gate: EgressGate) -> None:
        dataset_id = reader.dataset_id
        if len(job.sealed) + 1 < len(job.train_ids):
            self._hold_sealed(reader, job)
            return

        def budget(header: SealedHeader) -> None:
            job.sealed[dataset_id] = _Sealed(header)
            self._check_job(job, gate)

        opened = open_sealed_dataset(
            reader, expected_dataset_id=dataset_id, kms=_MarkingKms(job.kms, job.exposure), check_header=budget,
            on_data_key=self._derive_keys(job, dataset_id),
        )
        if not reader.finished:
            raise RuntimeFailure(f"dataset {dataset_id!r} stream did not end with its digest")
        self._opened(job, job.sealed[dataset_id], opened, reader.sha256_hex, gate)
        for held_id, held in job.sealed.items():
            if held.held is not None:
                self._open_held(job, held_id, held, gate)
        job.checkpoint_auth = self._checkpoint_authenticator(job)
        assert job.plan is not None  # open_sealed_dataset checks the header first
        plan = job.plan
        gate.audit(
            "training_planned",
            sampling_rate=plan.sampling_rate,
            noise_multiplier=plan.noise_multiplier,
            steps=plan.steps,
            delta=plan.delta,
            planned_epsilon=plan.planned_epsilon,
            max_epsilon=plan.max_epsilon,
        )

    def _hold_sealed(self, reader: DatasetStreamReader, job: _Job) -> None:
        """Keep a sealed stream, unopened, until the job's last sealed header is in."""
        # One bound for all of them together: memory, not any one stream, is what runs out.
        held = sum(len(h.held) for h in job.sealed.values() if h.held is not None)
        data = _read_bounded(reader, self._limits.max_sealed_bytes - held,
                             f"sealed dataset {reader.dataset_id!r} (with those held before it)")
        stream = io.BytesIO(data)
        header = read_header(stream)
        if header.dataset_id != reader.dataset_id:
            raise EncryptionContextMismatch(
                f"sealed file is dataset {header.dataset_id!r}, the job asked for {reader.dataset_id!r}")
        job.sealed[reader.dataset_id] = _Sealed(header, held=data, sealed_sha256=reader.sha256_hex)

    def _open_held(self, job: _Job, dataset_id: str, held: _Sealed, gate: EgressGate) -> None:
        assert held.held is not None

        stream = io.BytesIO(held.held)
        held.held = None
        opened = open_sealed_dataset(stream, expected_dataset_id=dataset_id,
                                     kms=_MarkingKms(job.kms, job.exposure),
                                     on_data_key=self._derive_keys(job, dataset_id))
        if stream.read(1):
            raise RuntimeFailure(f"dataset {dataset_id!r} has bytes after its last chunk")
        self._opened(job, held, opened, held.sealed_sha256, gate)

    @staticmethod
    def _derive_keys(job: _Job, dataset_id: str) -> Callable[[SealedHeader, bytes], None]:
        def derive(header: SealedHeader, data_key: bytes) -> None:
            sealed = job.sealed[dataset_id]
            sealed.ledger_key = ledger_signing_key(header, data_key)
            sealed.data_key = data_key
        return derive

    def _checkpoint_authenticator(self, job: _Job) -> CheckpointAuthenticator:
        """From every dataset's data key, in the spec's order; the data keys are dropped after."""
        datasets = [job.sealed[dataset_id] for dataset_id in job.train_ids]
        key = CheckpointAuthKey([(s.header.dataset_id, s.data_key) for s in datasets])
        for sealed in datasets:
            sealed.data_key = b""
        binding = CheckpointBinding(
            pcr0=self._nsm.describe_pcr(0).value.hex(),
            datasets=tuple((s.header.dataset_id, dataset_context_sha256(s.header)) for s in datasets),
        )
        return CheckpointAuthenticator(key, binding)

    def _opened(self, job: _Job, sealed: _Sealed, opened: OpenedDataset, sha256_hex: str, gate: EgressGate) -> None:
        sealed.opened, sealed.sealed_sha256 = opened, sha256_hex
        gate.audit(
            "dataset_opened",
            dataset_id=opened.dataset_id,
            records=opened.records,
            schema_sha256=opened.header.schema_sha256,
            sealed_sha256=sha256_hex,
        )

    # ---------------------------------------------------------------- budget ledger

    def _check_job(self, job: _Job, gate: EgressGate) -> None:
        """Before any key: the job against every header, and every ledger with this job's whole plan."""
        headers = [job.sealed[dataset_id].header for dataset_id in job.train_ids]
        job.plan = plan_run(job.spec, headers)
        if job.spec.model.weights_sha256 is not None:
            if job.weights is None:
                # _check_weights_stream put the stream first; this guards the key, whatever the order.
                raise ProtocolError("the initial weights must be streamed before the sealed datasets")
            # The job check passed on every header and they share one schema: the first gives the layout.
            check_weights(job_model(job.spec, headers[0]).parameter_shapes(), job.weights)
        for dataset_id in job.train_ids:
            self._check_ledger(job, job.sealed[dataset_id], gate)

    def _check_ledger(self, job: _Job, sealed: _Sealed, gate: EgressGate) -> None:
        """Every valid entry plus this job's whole plan must fit the dataset's cap."""
        assert job.plan is not None
        header = sealed.header
        sealed.ledger = self._ledgers.open_store(header.ledger_location, header.dataset_id)
        plan = job.plan
        segments, searches = plan.charge()
        check = check_header_budget(sealed.ledger, header, segments, plan.accountant,
                                    accept_unprotected=self._ledgers.accept_unprotected, searches=searches)
        sealed.dataset_epsilon = check.spent
        gate.record("ledger_read", dataset_id=header.dataset_id, spent_epsilon=check.spent)

    def _reserve_budget(self, job: _Job, gate: EgressGate) -> None:
        """Before any step on private data: the steps this session will run, written to every dataset's ledger."""
        assert job.plan is not None
        plan = job.plan
        start = job.resume.step if job.resume is not None else 0
        steps = min(plan.steps, plan.max_steps_within_budget) - start
        if steps <= 0:
            return  # nothing left to run (the trainer refuses a checkpoint beyond the plan)
        # A search is reserved whole, in place of the session's steps (one "search" entry).
        segments = [] if plan.search is not None else [Segment(plan.sampling_rate, plan.noise_multiplier, steps)]
        for dataset_id in job.train_ids:
            sealed = job.sealed[dataset_id]
            assert sealed.ledger is not None and sealed.ledger_key is not None  # set on the way to the data key
            header = sealed.header
            reservation = reserve(
                sealed.ledger, sealed.ledger_key, budget=dataset_budget(header), job_id=job.job_id,
                accountant=plan.accountant, job_delta=plan.delta, segments=segments,
                nonce=self._nsm.get_random(NONCE_BYTES), now=lambda: int(self._clock().timestamp()),
                accept_unprotected=self._ledgers.accept_unprotected, search=plan.search,
            )
            check = reservation.check
            sealed.dataset_epsilon = check.total
            gate.audit("budget_reserved", dataset_id=header.dataset_id, slot=reservation.entry.seq, steps=steps,
                       job_epsilon=check.job, dataset_epsilon=check.total, max_epsilon=check.max_epsilon,
                       entry_sha256=reservation.sha256, prev_sha256=reservation.entry.prev)

    def _receive_public(self, reader: DatasetStreamReader, name: str, job: _Job, gate: EgressGate) -> None:
        data = _read_bounded(reader, self._limits.max_public_bytes, f"public dataset {name!r}")
        table = read_ipc_table(data, f"public dataset {name!r}")
        public = PublicTable(name=name, table=table, sha256=hashlib.sha256(data).hexdigest())
        job.public[name] = public
        gate.audit("public_dataset", name=name, records=table.num_rows, sha256=public.sha256)

    def _receive_weights(self, reader: DatasetStreamReader, job: _Job, gate: EgressGate) -> None:
        expected = job.spec.model.weights_sha256
        assert expected is not None  # _check_weights_stream: the stream is sent only then
        job.weights = open_weights(_read_bounded(reader, self._limits.max_weights_bytes, "initial weights"), expected)
        gate.audit("initial_weights", sha256=job.weights.sha256, tensors=len(job.weights.tensors),
                   parameters=sum(int(t.numel()) for t in job.weights.tensors.values()))

    def _receive_resume(self, reader: DatasetStreamReader, job: _Job, gate: EgressGate) -> None:
        data = _read_bounded(reader, self._limits.max_checkpoint_bytes, "checkpoint")
        if job.checkpoint_auth is None:
            # The dataset streams come first: only their data keys can check the checkpoint's tag.
            raise ProtocolError("the checkpoint to resume from must follow the sealed datasets' streams")
        key_id = read_checkpoint_header(data).key_id
        if any(key_id not in sealed.header.model_owner_keys for sealed in job.sealed.values()):
            raise CheckpointKeyNotAllowed("checkpoint is sealed under a KMS key a data owner did not allow")
        job.resume = open_checkpoint(
            data, decrypt=_MarkingKms(job.kms, job.exposure).decrypt, expected_job_id=job.job_id,
            expected_spec_sha256=job.spec.sha256, authenticator=job.checkpoint_auth,
        )
        job.resume_sealed_sha256 = hashlib.sha256(data).hexdigest()
        gate.record("checkpoint_resumed", sealed_sha256=job.resume_sealed_sha256, step=job.resume.step)

    def _train(self, job: _Job, gate: EgressGate) -> str:
        # _train_ids made every sealed dataset one of the streams, so each was opened.
        assert job.plan is not None and job.checkpoint_auth is not None
        train = []
        for dataset_id in job.train_ids:
            sealed = job.sealed[dataset_id]
            assert sealed.opened is not None
            train.append(TrainingDataset(sealed.opened, sealed.sealed_sha256, dataset_epsilon=sealed.dataset_epsilon))
        inputs = TrainingInputs(
            job_id=job.job_id,
            spec=job.spec,
            plan=job.plan,
            train=tuple(train),
            public=dict(job.public),
            resume=job.resume,
            nsm=self._nsm,
            checkpoint_auth=job.checkpoint_auth,
            generate_data_key=job.kms.generate_data_key,
            clock=self._clock,
            resume_sealed_sha256=job.resume_sealed_sha256,
            weights=job.weights,
        )
        return self._training_loop(inputs, gate).run()

    def _expect(self, channel: _Control, kind: type[M]) -> M:
        msg = channel.recv(timeout=self._limits.recv_timeout_s)
        if isinstance(msg, Error):
            raise RemoteError(msg.code, msg.message)
        if not isinstance(msg, kind):
            raise ProtocolError(f"expected {kind.__name__}, got {type(msg).__name__}")
        return msg


def _is_sealed(stream_id: str) -> bool:
    return not stream_id.startswith(PUBLIC_PREFIX) and stream_id not in (RESUME_STREAM, WEIGHTS_STREAM)


def _train_ids(spec: JobSpec, streams: Sequence[str]) -> tuple[str, ...]:
    """The sealed datasets a training job streams: the ones its spec lists, or the only one sent."""
    sealed = [s for s in streams if _is_sealed(s)]
    sent = ", ".join(repr(s) for s in sealed) or "none"
    if spec.data.train:
        if sealed != list(spec.data.train):
            named = ", ".join(repr(s) for s in spec.data.train)
            raise ProtocolError(
                f"a training job streams the sealed datasets its spec names, in its order: "
                f"the spec names {named}, JobStart sends {sent}"
            )
    elif len(sealed) != 1:
        raise ProtocolError(f"a training job whose spec lists none streams exactly one sealed dataset; "
                            f"JobStart sends {sent}")
    return tuple(sealed)


def _check_weights_stream(spec: JobSpec, streams: Sequence[str]) -> None:
    """The weights stream is sent when the spec names initial weights, and only then: once, before any sealed one."""
    sent = [index for index, stream_id in enumerate(streams) if stream_id == WEIGHTS_STREAM]
    if spec.model.weights_sha256 is None:
        if sent:
            raise ProtocolError("JobStart sends initial weights; the spec names none (model.weights_sha256)")
        return
    if len(sent) != 1:
        count = "none" if not sent else f"{len(sent)} weights streams"
        raise ProtocolError(f"the spec names initial weights (model.weights_sha256); JobStart sends {count}")
    # Before any sealed stream: the last sealed header triggers the KMS request, and the
    # weights must be checked against the model before it.
    if any(_is_sealed(stream_id) for stream_id in streams[: sent[0]]):
        raise ProtocolError("the initial weights must be streamed before the sealed datasets")


class _Control:
    """One session's control channel, as the runtime and its egress gate see it.

    Until `accept_refreshes` it only passes messages through. After it, `recv` applies
    every further Credentials (the parent refreshing them) and returns the next other
    message, so a refresh is taken wherever it arrives: between set-up messages or
    inside a dataset stream. While training runs nobody else reads, so `watched` reads
    on a thread of its own; what it cannot accept there is kept and raised by the
    next `send` that is not an Error, which ends the job where the training loop
    next releases something.
    """

    def __init__(self, channel: Channel, kms_clients: KmsClientFactory) -> None:
        self._channel = channel
        self._kms_clients = kms_clients
        self._session_creds: Credentials | None = None
        self._kms: AttestedKms | None = None
        self._goodbye = False
        self._failure: BaseException | None = None

    def accept_refreshes(self, first: Credentials, kms: AttestedKms) -> None:
        self._session_creds, self._kms = first, kms

    # ---------------------------------------------------------- Channel

    def send(self, msg: Message) -> None:
        failure = self._failure
        if failure is not None and not isinstance(msg, Error):
            self._failure = None  # raised once; the Error that reports it still goes out
            raise failure
        self._channel.send(msg)

    def recv(self, timeout: float | None = None) -> Message:
        while True:
            msg = self._channel.recv(timeout=timeout)
            if self._goodbye:
                raise ProtocolError(f"{type(msg).__name__} arrived after the parent's Goodbye")
            if isinstance(msg, Goodbye):
                self._goodbye = True
            elif isinstance(msg, Credentials) and self._kms is not None:
                self._refresh(msg)
                continue
            return msg

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> _Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- refreshes

    def _refresh(self, creds: Credentials) -> None:
        session, kms = self._session_creds, self._kms
        assert session is not None and kms is not None  # set together by accept_refreshes
        if creds.region != session.region:
            raise ProtocolError(
                f"refreshed Credentials are for region {creds.region!r}, this session's for {session.region!r}"
            )
        if creds.kms_endpoint != session.kms_endpoint:
            raise ProtocolError(
                f"refreshed Credentials name KMS endpoint {creds.kms_endpoint!r}, "
                f"this session's {session.kms_endpoint!r}"
            )
        kms.replace_client(self._kms_clients(creds))
        # The access key id and the secrets stay out of the log.
        log.info("KMS credentials refreshed; the new ones expire %s", _expiry(creds))

    @contextlib.contextmanager
    def watched(self, poll_s: float) -> Iterator[None]:
        """A thread reads the control channel for as long as the context lasts (training)."""
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read_while_training, args=(stop, poll_s), name="enclave-control", daemon=True
        )
        reader.start()
        try:
            yield
        finally:
            stop.set()
            reader.join()

    def _read_while_training(self, stop: threading.Event, poll_s: float) -> None:
        try:
            while True:
                # Once training has ended, what already arrived is still read, then no more.
                ending = stop.is_set()
                try:
                    msg = self.recv(timeout=0 if ending else poll_s)
                except TransportTimeout:
                    if ending:
                        return
                    continue
                if isinstance(msg, Error):
                    raise RemoteError(msg.code, msg.message)
                if not isinstance(msg, Goodbye):
                    raise ProtocolError(f"unexpected {type(msg).__name__} while training runs")
        except (PeerDisconnected, ChannelClosed):
            # The parent sends nothing more; if it is gone, the next send says so.
            log.debug("the parent closed its side of the control channel")
        except HermeticError as err:
            self._failure = err
        except Exception as err:
            # Reported to the parent as internal, with a fixed message, by the next send.
            log.exception("reading the control channel while training failed")
            self._failure = err


def _expiry(creds: Credentials) -> str:
    if creds.expiration_ms is None:
        return "never (no expiration given)"
    try:
        return "at " + datetime.fromtimestamp(creds.expiration_ms / 1000, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"at {creds.expiration_ms} ms after the epoch"


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
