from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import HermeticError, TransportError
from enclave.transport.address import UnixAddress
from enclave.transport.errors import ConnectFailed, PeerDisconnected, ProtocolError, TruncatedFrame
from enclave.transport.framing import FramedChannel
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    AuditEvent,
    Credentials,
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
)
from enclave.transport.sockets import listen
from enclave.transport.stream import DatasetStreamReader
from parent.proxy.credentials import CredentialsRefresher
from parent.proxy.session import EnclaveError, ParentSession
from parent.sources import SourceNotFound
from tests.parent.proxy.moto_s3 import s3_client  # noqa: F401 - fixture
from tests.support.frames import FrameDecoder

CREDS = Credentials("AKIATEST", "secret-key", "token", "us-east-1", "http://127.0.0.1:4000", None)

Script = Callable[[FramedChannel, dict], None]


class Enclave:
    """A scripted enclave endpoint on a Unix socket, run on a thread."""

    def __init__(self, path: Path, script: Script) -> None:
        self.listener = listen(UnixAddress(str(path)))
        self.address = self.listener.address
        self.state: dict[str, Any] = {}
        self._script = script
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            sock, _ = self.listener.accept(timeout=10)
            with FramedChannel(sock) as chan:
                self._script(chan, self.state)
        except Exception as exc:  # noqa: BLE001 - checked by the test
            self.state["error"] = exc

    def join(self) -> dict[str, Any]:
        self._thread.join()
        self.listener.close()
        return self.state


@pytest.fixture
def enclave(tmp_path: Path) -> Iterator[Callable[[Script], Enclave]]:
    made: list[Enclave] = []

    def make(script: Script) -> Enclave:
        e = Enclave(tmp_path / "enclave.sock", script)
        made.append(e)
        return e

    yield make
    for e in made:
        e.listener.close()


def handshake(chan: FramedChannel, state: dict, reply: Message | None = None) -> None:
    state["hello"] = chan.recv(timeout=10)
    chan.send(reply or Hello("enclave", PROTOCOL_VERSION))


def read_job(chan: FramedChannel, state: dict) -> JobStart:
    state["creds"] = chan.recv(timeout=10)
    job = chan.recv(timeout=10)
    assert isinstance(job, JobStart)
    state["job"] = job
    return job


def good_enclave(chan: FramedChannel, state: dict) -> None:
    handshake(chan, state)
    job = read_job(chan, state)
    digests = []
    for index, dataset_id in enumerate(job.datasets):
        reader = DatasetStreamReader(chan, expected_index=index, expected_id=dataset_id, timeout=10)
        data = reader.read()
        digests.append(hashlib.sha256(data).hexdigest())
        chan.send(AuditEvent("dataset-loaded", {"dataset": dataset_id, "bytes": len(data)}))
    state["digests"] = digests
    chan.send(Hello("progress-like", 1))  # stands for a message type the session doesn't know
    chan.send(JobResult("ok", "trained 1 epoch"))
    chan.send(Goodbye())
    state["bye"] = chan.recv(timeout=10)


def test_successful_job(tmp_path: Path, enclave, s3_client: Any) -> None:  # noqa: F811
    local = os.urandom(600_000)
    remote = os.urandom(300_001)
    path = tmp_path / "a.sealed"
    path.write_bytes(local)
    s3_client.put_object(Bucket="sealed", Key="b.sealed", Body=remote)
    e = enclave(good_enclave)
    seen: list[Message] = []
    progress: dict[str, int] = {}
    tapped: list[tuple[str, bytes]] = []
    session = ParentSession(
        e.address, CREDS, s3_client=s3_client, frame_size=64 * 1024,
        on_message=seen.append,
        progress=lambda ds, n: progress.__setitem__(ds, progress.get(ds, 0) + n),
        tap=lambda d, b: tapped.append((d, b)),
    )
    outcome = session.run("job-1", [("ds-a", str(path)), ("ds-b", "s3://sealed/b.sealed")])
    state = e.join()
    assert "error" not in state, state.get("error")
    assert state["hello"] == Hello("parent", PROTOCOL_VERSION)
    assert state["creds"] == CREDS
    assert state["job"] == JobStart("job-1", ("ds-a", "ds-b"))
    assert state["digests"] == [hashlib.sha256(local).hexdigest(), hashlib.sha256(remote).hexdigest()]
    assert state["bye"] == Goodbye()
    assert (outcome.status, outcome.detail) == ("ok", "trained 1 epoch")
    assert outcome.enclave_hello == Hello("enclave", PROTOCOL_VERSION)
    assert [ev.fields["dataset"] for ev in outcome.audit_events] == ["ds-a", "ds-b"]
    assert outcome.messages == (Hello("progress-like", 1),)
    assert [s.size for s in outcome.datasets] == [len(local), len(remote)]
    assert progress == {"ds-a": len(local), "ds-b": len(remote)}
    assert [type(m) for m in seen] == [AuditEvent, AuditEvent, Hello, JobResult]
    # The tap saw the whole conversation, both ways.
    for direction, count in (("sent", 3 + 2 * 2 + 1), ("recv", 1 + 2 + 1 + 1 + 1)):
        decoder = FrameDecoder()
        msgs = []
        for d, b in tapped:
            if d == direction:
                msgs += decoder.feed(b)
        decoder.finish()
        data = [m for m in msgs if isinstance(m, DatasetData)]
        assert len(msgs) - len(data) == count
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.status = "forged"  # type: ignore[misc]


def test_enclave_error_mid_stream_stops_streaming(tmp_path: Path, enclave) -> None:
    path = tmp_path / "big.sealed"
    path.write_bytes(os.urandom(8 * 1024 * 1024))

    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        assert isinstance(chan.recv(timeout=10), DatasetBegin)
        chan.recv(timeout=10)
        chan.send(AuditEvent("key-release", {"ok": False}))
        chan.send(Error("kms-denied", "KMS refused the attestation document"))
        # Keep the connection, but read on: the parent must stop sending (half-close).
        drained = 0
        while True:
            try:
                msg = chan.recv(timeout=10)
            except (PeerDisconnected, TruncatedFrame):
                break  # the parent's half-close may well cut a frame it was sending
            if isinstance(msg, DatasetData):
                drained += len(msg.data)
        state["drained"] = drained
        chan.send(Goodbye())

    e = enclave(script)
    with pytest.raises(EnclaveError, match="^enclave error kms-denied: KMS refused the attestation document$") as info:
        ParentSession(e.address, CREDS).run("job", [("big", str(path))])
    state = e.join()
    assert "error" not in state, state.get("error")
    assert state["drained"] < 8 * 1024 * 1024 - 256 * 1024
    assert info.value.remote_code == "kms-denied"
    assert [ev.kind for ev in info.value.audit_events] == ["key-release"]


def test_enclave_error_then_close(tmp_path: Path, enclave) -> None:
    path = tmp_path / "big.sealed"
    path.write_bytes(os.urandom(4 * 1024 * 1024))

    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        chan.send(Error("bad-job", "model not registered"))
        chan.send(Goodbye())

    e = enclave(script)
    with pytest.raises(EnclaveError, match="bad-job: model not registered"):
        ParentSession(e.address, CREDS).run("job", [("big", str(path))])
    assert "error" not in e.join()


def test_enclave_vanishes_before_goodbye(tmp_path: Path, enclave) -> None:
    path = tmp_path / "d.sealed"
    path.write_bytes(b"x" * 1000)

    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        DatasetStreamReader(chan, timeout=10).read()
        chan.send(AuditEvent("started", {}))

    e = enclave(script)
    with pytest.raises(PeerDisconnected, match="before Goodbye") as info:
        ParentSession(e.address, CREDS).run("job", [("d", str(path))])
    assert "\n" not in str(info.value)
    assert "error" not in e.join()


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (Hello("parent", PROTOCOL_VERSION), ProtocolError, "not an enclave"),
        (Hello("enclave", PROTOCOL_VERSION + 1), ProtocolError, "protocol 2"),
        (Goodbye(), ProtocolError, "answered Hello with Goodbye"),
        (Error("busy", "another job is running"), EnclaveError, "busy: another job"),
    ],
)
def test_bad_handshakes(enclave, reply: Message, error: type, match: str) -> None:
    e = enclave(lambda chan, state: handshake(chan, state, reply))
    with pytest.raises(error, match=match):
        ParentSession(e.address, CREDS).run("job", [])
    e.join()


def test_goodbye_without_result(enclave) -> None:
    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        chan.send(Goodbye())

    e = enclave(script)
    with pytest.raises(ProtocolError, match="without a JobResult"):
        ParentSession(e.address, CREDS).run("job", [])
    e.join()


def test_missing_dataset_is_reported_to_the_enclave(tmp_path: Path, enclave) -> None:
    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        state["next"] = chan.recv(timeout=10)

    e = enclave(script)
    with pytest.raises(SourceNotFound, match="does not exist"):
        ParentSession(e.address, CREDS).run("job", [("d", str(tmp_path / "missing"))])
    state = e.join()
    assert isinstance(state["next"], Error) and state["next"].code == "dataset-open"


def test_no_enclave_listening(tmp_path: Path) -> None:
    with pytest.raises(ConnectFailed):
        ParentSession(UnixAddress(str(tmp_path / "none.sock")), CREDS, connect_timeout=2).run("j", [])


def test_errors_are_hermetic_one_liners() -> None:
    err = EnclaveError("c", "multi\nline   message")
    assert isinstance(err, HermeticError)
    assert str(err) == "enclave error c: multi line message"
    assert issubclass(PeerDisconnected, TransportError)


def test_a_refresh_goes_between_dataset_frames_and_never_after_goodbye(tmp_path: Path, enclave) -> None:
    path = tmp_path / "a.sealed"
    path.write_bytes(os.urandom(3 * 1024))
    expiring = dataclasses.replace(CREDS, expiration_ms=3_600_000)  # an hour after the epoch
    fresh = dataclasses.replace(CREDS, access_key_id="ASIAFRESH", expiration_ms=7_200_000)
    now = [0.0]
    refresher = CredentialsRefresher(lambda: fresh, clock=lambda: now[0])

    def script(chan: FramedChannel, state: dict) -> None:
        handshake(chan, state)
        read_job(chan, state)
        state["stream"] = stream = [chan.recv(timeout=10)]
        while not isinstance(stream[-1], DatasetEnd):
            stream.append(chan.recv(timeout=10))
        chan.send(JobResult("ok", "done"))
        chan.send(Goodbye())
        state["after"] = after = [chan.recv(timeout=10)]
        with pytest.raises(PeerDisconnected):
            after.append(chan.recv(timeout=10))

    def progress(dataset_id: str, n: int) -> None:
        if now[0] == 0.0:  # after the first chunk: the margin is reached, the refresh goes now
            now[0] = 3_300.0
            assert refresher.refresh_if_due()

    e = enclave(script)
    outcome = ParentSession(e.address, expiring, frame_size=1024, progress=progress, refresher=refresher,
                            clock=lambda: now[0]).run("job-1", [("ds-a", str(path))])
    state = e.join()
    assert "error" not in state, state.get("error")
    assert outcome.status == "ok" and state["creds"] == expiring
    assert [type(m).__name__ for m in state["stream"]] == [
        "DatasetBegin", "DatasetData", "Credentials", "DatasetData", "DatasetData", "DatasetEnd",
    ]
    assert state["stream"][2] == fresh
    assert state["after"] == [Goodbye()]
    # Stopped with the session: nothing more is sent, even once due again.
    now[0] = 7_000.0
    assert not refresher.refresh_if_due()
