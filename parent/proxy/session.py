"""The parent's side of one job on the enclave's control channel.

Protocol (parent P, enclave E), all messages framed on one connection:

    P -> E  Hello(role="parent", protocol_version)
    E -> P  Hello(role="enclave", protocol_version)      (same version)
    P -> E  Credentials, JobStart(job_id, dataset ids), TrainingJob(spec) (`extra`)
    P -> E  for each dataset i in JobStart order:
                DatasetBegin(i, id, size), DatasetData..., DatasetEnd(i, sha256)
    P -> E  Credentials again, at any point until the parent's Goodbye, when a
            CredentialsRefresher replaces ones about to expire (between frames,
            never inside one: the channel's send lock)
    E -> P  AuditEvent* , then JobResult or Error, then Goodbye  (at any time
            after the Hellos: the parent reads on its own thread while streaming);
            Error.code is one of the codes listed in enclave.errors
    P -> E  Goodbye (best effort), then close

When the enclave sends Error it should close the connection (or at least stop
reading); the parent also stops streaming at once. Everything else the
enclave sends is kept in order in `SessionOutcome.messages`, so a new result
message type needs no change here.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from enclave.errors import DatasetError, RuntimeFailure, TransportError
from enclave.transport.address import Address
from enclave.transport.errors import ChannelClosed, PeerDisconnected, ProtocolError
from enclave.transport.framing import DEFAULT_MAX_FRAME, FramedChannel, Tap
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    AuditEvent,
    Credentials,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
)
from enclave.transport.sockets import DEFAULT_CONNECT_TIMEOUT, connect
from parent.proxy.credentials import Clock, CredentialsRefresher, check_not_expired
from parent.proxy.streamer import DEFAULT_FRAME_SIZE, StreamSummary, stream_dataset
from parent.sources import SealedSource, open_source

log = logging.getLogger(__name__)

PARENT_ROLE = "parent"
ENCLAVE_ROLE = "enclave"

DatasetInput = str | SealedSource


class EnclaveError(RuntimeFailure):
    """The enclave reported an Error message for this job.

    `remote_code` is the enclave's wire code (see enclave.errors), shown in the message.
    """

    def __init__(self, remote_code: str, message: str, audit_events: tuple[AuditEvent, ...] = ()) -> None:
        super().__init__(f"enclave error {remote_code}: {message}")
        self.remote_code = remote_code
        self.remote_message = message
        self.audit_events = audit_events


@dataclass(frozen=True)
class SessionOutcome:
    job_id: str
    status: str
    detail: str
    enclave_hello: Hello
    datasets: tuple[StreamSummary, ...]
    audit_events: tuple[AuditEvent, ...]
    messages: tuple[Message, ...]


class _Collector:
    """Reads everything the enclave sends after the handshake, on its own thread."""

    def __init__(
        self,
        channel: FramedChannel,
        timeout: float | None,
        on_message: Callable[[Message], None] | None,
    ) -> None:
        self._channel = channel
        self._timeout = timeout
        self._on_message = on_message
        self.audit: list[AuditEvent] = []
        self.others: list[Message] = []
        self.result: JobResult | None = None
        self.error: Error | None = None
        self.goodbye = False
        self.failure: TransportError | None = None
        self._thread = threading.Thread(target=self._run, name="parent-session-recv", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                msg = self._channel.recv(timeout=self._timeout)
                if isinstance(msg, Goodbye):
                    self.goodbye = True
                    return
                if isinstance(msg, AuditEvent):
                    self.audit.append(msg)
                elif isinstance(msg, JobResult):
                    if self.result is not None:
                        raise ProtocolError("enclave sent a second JobResult")
                    self.result = msg
                elif isinstance(msg, Error):
                    if self.error is None:
                        self.error = msg
                        # Unblocks a send in progress: no point streaming to a failed job.
                        self._channel.shutdown_write()
                else:
                    self.others.append(msg)
                if self._on_message is not None:
                    self._on_message(msg)
        except TransportError as exc:
            self.failure = exc
        except Exception as exc:
            log.exception("message handler failed")
            self.failure = TransportError(f"message handler failed: {exc}")


class ParentSession:
    """Run one job on the enclave listening at `control`."""

    def __init__(
        self,
        control: Address,
        credentials: Credentials,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        handshake_timeout: float | None = 30.0,
        recv_timeout: float | None = None,
        send_timeout: float | None = 600.0,
        frame_size: int = DEFAULT_FRAME_SIZE,
        max_frame: int = DEFAULT_MAX_FRAME,
        tap: Tap | None = None,
        s3_client: object | None = None,
        progress: Callable[[str, int], None] | None = None,
        on_message: Callable[[Message], None] | None = None,
        refresher: CredentialsRefresher | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.control = control
        self._credentials = credentials
        self._refresher = refresher
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._recv_timeout = recv_timeout
        self._send_timeout = send_timeout
        self._frame_size = frame_size
        self._max_frame = max_frame
        self._tap = tap
        self._s3_client = s3_client
        self._progress = progress
        self._on_message = on_message

    def run(
        self,
        job_id: str,
        datasets: Sequence[tuple[str, DatasetInput]],
        extra: Sequence[Message] = (),
    ) -> SessionOutcome:
        """Send the job, any `extra` set-up messages (e.g. the training spec) and the
        datasets; return the outcome or raise a one-line error.

        Credentials already past their expiration are refused before anything is
        sent (ExpiredCredentials); with a refresher, newer ones follow while the job runs.
        """
        check_not_expired(self._credentials, self._clock())
        job = JobStart(job_id=job_id, datasets=tuple(dataset_id for dataset_id, _ in datasets))
        sock = connect(self.control, timeout=self._connect_timeout)
        channel = FramedChannel(
            sock, self._max_frame, self._tap, send_timeout=self._send_timeout
        )
        with channel:
            hello = self._handshake(channel)
            collector = _Collector(channel, self._recv_timeout, self._on_message)
            collector.start()
            summaries: list[StreamSummary] = []
            try:
                try:
                    channel.send(self._credentials)
                    if self._refresher is not None:
                        self._refresher.start(self._credentials, channel.send)
                    channel.send(job)
                    for message in extra:
                        channel.send(message)
                    for index, (dataset_id, where) in enumerate(datasets):
                        summaries.append(self._stream_one(channel, index, dataset_id, where))
                except (PeerDisconnected, ChannelClosed) as exc:
                    # The enclave hung up on us; its Error (if any) explains why.
                    collector.join()
                    self._raise_for(collector)
                    raise PeerDisconnected(f"enclave disconnected during job set-up: {exc}") from None
                except BaseException:
                    # Our own failure (bad source, timeout, interrupt): stop the reader too.
                    channel.close()
                    collector.join()
                    raise
                # Training runs until the enclave's Goodbye; refreshes go on meanwhile.
                collector.join()
            finally:
                if self._refresher is not None:
                    self._refresher.stop()
            self._raise_for(collector)
            if collector.failure is not None:
                if isinstance(collector.failure, PeerDisconnected):
                    raise PeerDisconnected(
                        f"enclave disconnected before Goodbye: {collector.failure}"
                    )
                raise collector.failure
            if collector.result is None:
                raise ProtocolError("enclave said Goodbye without a JobResult")
            try:
                channel.send(Goodbye())
            except TransportError:
                log.debug("enclave closed before our Goodbye")
        result = collector.result
        log.info("job %s finished: %s", job_id, result.status)
        return SessionOutcome(
            job_id=job_id,
            status=result.status,
            detail=result.detail,
            enclave_hello=hello,
            datasets=tuple(summaries),
            audit_events=tuple(collector.audit),
            messages=tuple(collector.others),
        )

    def _handshake(self, channel: FramedChannel) -> Hello:
        channel.send(Hello(role=PARENT_ROLE, protocol_version=PROTOCOL_VERSION))
        try:
            reply = channel.recv(timeout=self._handshake_timeout)
        except PeerDisconnected:
            raise PeerDisconnected("enclave closed the connection during the handshake") from None
        if isinstance(reply, Error):
            raise EnclaveError(reply.code, reply.message)
        if not isinstance(reply, Hello):
            raise ProtocolError(f"enclave answered Hello with {type(reply).__name__}")
        if reply.role != ENCLAVE_ROLE:
            raise ProtocolError(f"peer at {self.control} says it is {reply.role!r}, not an enclave")
        if reply.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"enclave speaks protocol {reply.protocol_version}, this parent {PROTOCOL_VERSION}"
            )
        return reply

    def _stream_one(
        self, channel: FramedChannel, index: int, dataset_id: str, where: DatasetInput
    ) -> StreamSummary:
        report = self._progress
        progress: Callable[[int], None] | None = None
        if report is not None:
            progress = functools.partial(report, dataset_id)

        if isinstance(where, str):
            try:
                source = open_source(where, self._s3_client)
            except DatasetError as exc:
                _try_send(channel, Error(code="dataset-open", message=str(exc)))
                raise
        else:
            source = where
        with source:
            return stream_dataset(channel, index, dataset_id, source, self._frame_size, progress)

    @staticmethod
    def _raise_for(collector: _Collector) -> None:
        if collector.error is not None:
            raise EnclaveError(
                collector.error.code, collector.error.message, tuple(collector.audit)
            )


def _try_send(channel: FramedChannel, msg: Message) -> None:
    try:
        channel.send(msg)
    except TransportError:
        log.debug("could not send %s", type(msg).__name__)
