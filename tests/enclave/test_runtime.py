"""The runtime's protocol through an in-memory channel: what the parent receives, exactly.

Every session is driven from this thread: the parent's messages are queued and its
side half-closed before `serve` runs, then everything the enclave sent is drained.
KMS is a stub that answers like KMS with Recipient, for one data key.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from enclave.attestation.document import parse_attestation
from enclave.egress import EgressGate
from enclave.runtime import INTERNAL_FAILURE, OPENED_FAILURE, OPENED_FAILURE_CODE, EnclaveRuntime, RuntimeLimits
from enclave.training.modelfmt.presets import preset_format
from enclave.training.trainer import Trainer, TrainingInputs
from enclave.transport.messages import (
    PROTOCOL_VERSION,
    PUBLIC_PREFIX,
    RESUME_STREAM,
    AuditEvent,
    CertificateIssued,
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
    TrainingJob,
)
from parent.local.kms.cms_builder import build_recipient_ciphertext
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.seal import seal_dataset
from parent.verify.certificate import verify_certificate
from tests.support.certificates import PINNED
from tests.support.channels import MemoryListener, drain
from tests.support.ledgers import MEMORY_LOCATION, MemoryLedgers
from tests.support.specs import mlp_spec

QUICK_LIMITS = RuntimeLimits(recv_timeout_s=5)

KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/test"
DATA_KEY = bytes(range(32))
TRAIN = "train-v1"
ENCLAVE_HELLO = Hello("enclave", PROTOCOL_VERSION)
HELLO = Hello("parent", PROTOCOL_VERSION)
CREDS = Credentials("ASIATEST", "secret", None, "us-east-1", "http://127.0.0.1:1", None)
JOB = JobStart("job-1", [TRAIN])
FIXED_NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def spec_toml(*, steps: int = 2, noise: float = 1.0, train: str | None = None) -> str:
    return mlp_spec(key_id=KEY_ARN, steps=steps, noise=noise, train=train)


SPEC = TrainingJob(spec_toml())


class StubKms:
    """One data key: handed out in plaintext to the sealer, and as CMS to an attested enclave."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[str] = []

    def _for_recipient(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(op)
        if self.error is not None:
            raise self.error
        document = parse_attestation(params["Recipient"]["AttestationDocument"])
        assert document.public_key is not None
        public_key = load_der_public_key(document.public_key)
        assert isinstance(public_key, rsa.RSAPublicKey)
        return {"CiphertextForRecipient": build_recipient_ciphertext(DATA_KEY, public_key), "KeyId": KEY_ARN}

    def decrypt(self, **params: Any) -> dict[str, Any]:
        return self._for_recipient("Decrypt", params)

    def encrypt(self, **params: Any) -> dict[str, Any]:
        # The data owner sealing, outside any enclave: the one data key this stub releases.
        assert params["Plaintext"] is not None
        return {"CiphertextBlob": b"wrapped-key", "KeyId": KEY_ARN}

    def generate_data_key(self, **params: Any) -> dict[str, Any]:
        return {**self._for_recipient("GenerateDataKey", params), "CiphertextBlob": b"wrapped-key"}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("sealed")
    rng = np.random.default_rng(5)
    np.savez(folder / "train.npz", image=rng.integers(0, 256, (200, 784), dtype=np.uint8),
             label=rng.integers(0, 10, 200, dtype=np.uint8))
    with mock.patch("parent.seal.secrets.token_bytes", return_value=DATA_KEY):
        seal_dataset(folder / "train.npz", folder / "train.sealed", key_id=KEY_ARN, kms_client=StubKms(),
                     max_epsilon=3.0, delta=1e-5, owner="owner", dataset_id=TRAIN, ledger=MEMORY_LOCATION, model_owner_keys=[KEY_ARN])
    return (folder / "train.sealed").read_bytes()


def stream(index: int, dataset_id: str, data: bytes, *, digest: bytes | None = None) -> list[Message]:
    return [
        DatasetBegin(index, dataset_id, len(data)),
        DatasetData(data),
        DatasetEnd(index, digest or hashlib.sha256(data).digest()),
    ]


def run_session(
    nsm: MockNsm,
    messages: Sequence[Message],
    *,
    kms: StubKms | None = None,
    kms_clients: Callable[[Credentials], Any] | None = None,
    training_loop: Callable[[TrainingInputs, EgressGate], Any] = Trainer,
    limits: RuntimeLimits = QUICK_LIMITS,
    ledgers: MemoryLedgers | None = None,
) -> list[Message]:
    listener = MemoryListener()
    parent = listener.connect()
    for msg in messages:
        parent.send(msg)
    parent.shutdown_write()
    stub = kms or StubKms()
    runtime = EnclaveRuntime(
        nsm, listener, kms_clients or (lambda creds: stub), clock=lambda: FIXED_NOW,
        training_loop=training_loop, limits=limits, ledgers=(ledgers or MemoryLedgers()).backends(),
    )
    runtime.serve(sessions=1)
    assert listener.closed
    return drain(parent)


def assert_refused(replies: list[Message], code: str, reason: str, before: Sequence[Message] = (ENCLAVE_HELLO,)) -> Error:
    """The enclave said only `before`, then one Error with `code`: no JobResult, no Goodbye."""
    *said, last = replies
    assert isinstance(last, Error), replies
    assert (last.code, said) == (code, list(before)), replies
    assert reason in last.message
    return last


class RecordingLoop:
    def __init__(self) -> None:
        self.inputs: list[TrainingInputs] = []

    def __call__(self, inputs: TrainingInputs, gate: EgressGate) -> RecordingLoop:
        self.inputs.append(inputs)
        return self

    def run(self) -> str:
        return "recorded"


# ------------------------------------------------------------ protocol errors before any data

SETUP = [HELLO, CREDS, JOB, SPEC]
PUBLIC_JOB = JobStart("job-1", [PUBLIC_PREFIX + "holdout", TRAIN])


@pytest.mark.parametrize(
    ("messages", "code", "reason", "before"),
    [
        pytest.param([Hello("parent", PROTOCOL_VERSION + 1)], "protocol", f"protocol {PROTOCOL_VERSION + 1}", [],
                     id="wrong-protocol-version"),
        pytest.param([CREDS], "protocol", "expected Hello, got Credentials", [], id="first-message-not-hello"),
        pytest.param([HELLO, JOB], "protocol", "expected Credentials, got JobStart", [ENCLAVE_HELLO],
                     id="missing-credentials"),
        pytest.param([HELLO, CREDS, SPEC], "protocol", "expected JobStart, got TrainingJob", [ENCLAVE_HELLO],
                     id="missing-jobstart"),
        pytest.param([HELLO, CREDS, JOB, *stream(0, TRAIN, b"x")], "protocol",
                     "expected TrainingJob, got DatasetBegin", [ENCLAVE_HELLO], id="job-without-spec"),
        pytest.param([HELLO, CREDS, JOB, TrainingJob("[job")], "config", "not valid TOML", [ENCLAVE_HELLO],
                     id="spec-not-toml"),
        pytest.param([HELLO, CREDS, JobStart("job-1", [TRAIN, "other-v1"]), SPEC], "protocol",
                     "JobStart sends 'train-v1', 'other-v1'", [ENCLAVE_HELLO], id="two-sealed-datasets"),
        pytest.param([HELLO, CREDS, JobStart("job-1", []), SPEC], "protocol",
                     "exactly one sealed dataset; JobStart sends none", [ENCLAVE_HELLO], id="no-sealed-dataset"),
        pytest.param([HELLO, CREDS, JOB, TrainingJob(spec_toml(train="other-v1"))], "protocol",
                     "the spec names 'other-v1', JobStart sends 'train-v1'", [ENCLAVE_HELLO],
                     id="spec-names-another-dataset"),
        pytest.param([HELLO, CREDS], "transport", "peer closed the connection", [ENCLAVE_HELLO],
                     id="parent-hangs-up"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(0, TRAIN, b"x")], "protocol",
                     "is 'train-v1', expected 'public:holdout'", [ENCLAVE_HELLO], id="stream-for-wrong-id"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(1, PUBLIC_PREFIX + "holdout", b"x")], "protocol",
                     "has index 1, expected 0", [ENCLAVE_HELLO], id="stream-with-wrong-index"),
        pytest.param([*SETUP, Error("dataset-open", "no such file")], "aborted",
                     "dataset-open: no such file", [ENCLAVE_HELLO], id="parent-error-between-streams"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, DatasetBegin(0, PUBLIC_PREFIX + "holdout", None),
                      DatasetData(b"abc"), Error("dataset-read", "s3 went away")], "aborted",
                     "dataset-read: s3 went away", [ENCLAVE_HELLO], id="parent-error-inside-stream"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(0, PUBLIC_PREFIX + "holdout", b"x" * 9)],
                     "runtime", "public dataset 'holdout' exceeds 8 bytes", [ENCLAVE_HELLO],
                     id="public-dataset-over-bound"),
        pytest.param([HELLO, CREDS, JobStart("job-1", [RESUME_STREAM, TRAIN]), SPEC,
                      *stream(0, RESUME_STREAM, b"x" * 9)],
                     "runtime", "checkpoint exceeds 8 bytes", [ENCLAVE_HELLO], id="checkpoint-over-bound"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC,
                      *stream(0, PUBLIC_PREFIX + "holdout", b"abc", digest=hashlib.sha256(b"abd").digest())],
                     "protocol", "does not match DatasetEnd", [ENCLAVE_HELLO], id="stream-with-wrong-digest"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(0, PUBLIC_PREFIX + "holdout", b"abc")[:2], Goodbye()],
                     "protocol", "unexpected Goodbye inside dataset stream", [ENCLAVE_HELLO],
                     id="stream-not-ending-with-its-digest"),
        pytest.param([HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(0, PUBLIC_PREFIX + "holdout", b"no ipc")],
                     "dataset", "not a valid Arrow IPC stream", [ENCLAVE_HELLO], id="public-dataset-not-arrow"),
    ],
)
def test_protocol_errors(
    nsm: MockNsm, messages: list[Message], code: str, reason: str, before: list[Message]
) -> None:
    kms = StubKms()
    replies = run_session(nsm, messages, kms=kms, limits=RuntimeLimits(max_public_bytes=8, max_checkpoint_bytes=8))
    assert_refused(replies, code, reason, before)
    assert kms.calls == []


def test_credentials_reach_the_kms_client_factory_only(nsm: MockNsm) -> None:
    given: list[Credentials] = []

    def factory(creds: Credentials) -> StubKms:
        given.append(creds)
        return StubKms()

    run_session(nsm, [HELLO, CREDS], kms_clients=factory)
    assert given == [CREDS]


# ------------------------------------------------------------ with a sealed dataset


def test_a_job_runs_to_a_certificate_in_memory(nsm: MockNsm, ca: LocalCa, sealed: bytes) -> None:
    kms = StubKms()
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], kms=kms)
    assert replies[0] == ENCLAVE_HELLO and replies[-1] == Goodbye()
    audits = [m for m in replies if isinstance(m, AuditEvent)]
    assert [a.kind for a in audits] == ["dataset_opened", "training_planned", "budget_reserved"]
    assert audits[0].fields["sealed_sha256"] == hashlib.sha256(sealed).hexdigest()
    assert audits[2].fields["slot"] == 0 and audits[2].fields["steps"] == 2
    [result] = [m for m in replies if isinstance(m, JobResult)]
    assert result.status == "ok" and result.detail.startswith("2 steps")
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    # The clock the runtime was given is the one the certificate reads.
    assert body.started_at == body.finished_at == "2024-05-01T12:00:00.000Z"
    # The preset's model format hash: what a verifier recomputes from the spec.
    assert body.model_spec_sha256 == preset_format("mlp").sha256
    assert kms.calls == ["Decrypt", "GenerateDataKey"]  # the data key, then the checkpoint's


def test_over_budget_job_is_refused_before_kms(nsm: MockNsm, sealed: bytes) -> None:
    kms = StubKms()
    replies = run_session(nsm, [HELLO, CREDS, JOB, TrainingJob(spec_toml(noise=0.5, steps=500)),
                                *stream(0, TRAIN, sealed)], kms=kms)
    assert_refused(replies, "budget", "exceeds the dataset's budget 3")
    assert kms.calls == []


def test_sealed_file_of_another_dataset_is_refused_before_kms(nsm: MockNsm, sealed: bytes) -> None:
    kms = StubKms()
    replies = run_session(nsm, [HELLO, CREDS, JobStart("job-1", ["other-v1"]), SPEC,
                                *stream(0, "other-v1", sealed)], kms=kms)
    assert_refused(replies, "sealed-data", "the job asked for 'other-v1'")
    assert kms.calls == []


INLINE = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear", out = 32 }, { type = "tanh" }, { type = "linear" }]'


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        # Built for 32x32 images; the column holds 784 values.
        ('[{ type = "reshape", shape = [1, 32, 32] }, { type = "flatten" }, { type = "linear" }]',
         "model: model.layers[0] (reshape): "),
        # Five logits; the label column declares 10 classes.
        ('[{ type = "flatten" }, { type = "linear", out = 5 }]',
         "model: model.layers[1] (linear): out is 5 but the model must give one logit per class, 10"),
        # Beyond the format's parameter limit.
        ('[{ type = "linear", out = 65536 }, { type = "linear" }]', "more than the limit of 50,000,000"),
    ],
)
def test_an_inline_model_that_does_not_fit_the_data_is_refused_before_kms(
    nsm: MockNsm, sealed: bytes, layers: str, reason: str
) -> None:
    kms = StubKms()
    spec = mlp_spec(key_id=KEY_ARN, model=f"format = 1\nlayers = {layers}")
    replies = run_session(nsm, [HELLO, CREDS, JOB, TrainingJob(spec), *stream(0, TRAIN, sealed)], kms=kms)
    assert_refused(replies, "config", reason)
    assert kms.calls == []


def test_an_inline_model_trains_to_a_certificate_naming_its_hash(nsm: MockNsm, ca: LocalCa, sealed: bytes) -> None:
    from enclave.training.spec import JobSpec

    kms = StubKms()
    spec = mlp_spec(key_id=KEY_ARN, model=INLINE)
    replies = run_session(nsm, [HELLO, CREDS, JOB, TrainingJob(spec), *stream(0, TRAIN, sealed)], kms=kms)
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    job = JobSpec.from_toml(spec)
    assert body.spec_sha256 == job.sha256
    assert body.model_spec_sha256 == job.model_sha256 == job.model_format.sha256
    assert body.model_spec_sha256 != JobSpec.from_toml(spec_toml()).model_sha256
    assert kms.calls == ["Decrypt", "GenerateDataKey"]


def test_kms_refusal_is_reported_as_kms(nsm: MockNsm, sealed: bytes) -> None:
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "PCR0 mismatch"}}, "Decrypt")
    loop = RecordingLoop()
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], kms=StubKms(error=denied), training_loop=loop)
    assert_refused(replies, "kms", "AccessDeniedException")
    assert not loop.inputs


def test_unexpected_exception_is_internal_with_a_fixed_message(
    nsm: MockNsm, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_factory(creds: Credentials) -> Any:
        raise ValueError("key material 0xdeadbeef")

    caplog.set_level(logging.ERROR, logger="enclave.runtime")
    replies = run_session(nsm, [*SETUP], kms_clients=broken_factory)
    error = assert_refused(replies, "internal", INTERNAL_FAILURE)
    assert error.message == INTERNAL_FAILURE
    # The enclave's own log keeps the reason; the parent never sees it.
    assert any(r.exc_info and "0xdeadbeef" in str(r.exc_info[1]) for r in caplog.records)


def test_unexpected_exception_in_training_releases_nothing_more(
    nsm: MockNsm, sealed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_loop(inputs: TrainingInputs, gate: EgressGate) -> Any:
        raise ZeroDivisionError(f"loss {float(inputs.train[0].opened.table.num_rows) / 0.0001}")

    caplog.set_level(logging.DEBUG, logger="enclave")
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], training_loop=failing_loop)
    opened, planned, reserved = replies[1:4]
    assert isinstance(opened, AuditEvent) and isinstance(planned, AuditEvent) and isinstance(reserved, AuditEvent)
    # After a data key was used, one constant Error; the log has the class, not the text.
    error = assert_refused(replies, OPENED_FAILURE_CODE, OPENED_FAILURE,
                           before=[ENCLAVE_HELLO, opened, planned, reserved])
    assert "loss" not in error.message
    assert any("(ZeroDivisionError)" in r.getMessage() for r in caplog.records)
    assert not any("loss" in r.getMessage() or r.exc_info for r in caplog.records if r.name == "enclave.runtime")


def test_egress_refusal_inside_training_is_reported_and_nothing_leaves(nsm: MockNsm, sealed: bytes) -> None:
    class LeakyLoop:
        def __init__(self, inputs: TrainingInputs, gate: EgressGate) -> None:
            self.gate = gate

        def run(self) -> str:
            self.gate.audit("train_loss", value=0.25)
            return "done"

    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed)], training_loop=LeakyLoop)
    assert_refused(replies, OPENED_FAILURE_CODE, OPENED_FAILURE, before=replies[:4])
    assert not [m for m in replies if isinstance(m, AuditEvent) and m.kind == "train_loss"]


def test_the_training_loop_gets_the_opened_data_and_public_sets(nsm: MockNsm, sealed: bytes, tmp_path: Path) -> None:
    from parent.public_data import load_public_dataset

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "p.npz", image=rng.integers(0, 256, (10, 784), dtype=np.uint8),
             label=rng.integers(0, 10, 10, dtype=np.uint8))
    public = load_public_dataset("holdout", tmp_path / "p.npz").ipc
    loop = RecordingLoop()
    replies = run_session(nsm, [HELLO, CREDS, PUBLIC_JOB, SPEC, *stream(0, PUBLIC_PREFIX + "holdout", public),
                                *stream(1, TRAIN, sealed)], training_loop=loop)
    assert replies[-2:] == [JobResult("ok", "recorded"), Goodbye()]
    [inputs] = loop.inputs
    [train] = inputs.train
    assert train.opened.records == 200 and train.sealed_sha256 == hashlib.sha256(sealed).hexdigest()
    assert inputs.public["holdout"].table.num_rows == 10 and inputs.clock() == FIXED_NOW
    assert inputs.resume is None and inputs.job_id == "job-1"


# ------------------------------------------------------------ refreshed credentials

REFRESHED = Credentials("ASIANEXT", "next-secret", "next-token", "us-east-1", "http://127.0.0.1:1", 1_714_570_000_000)


class ClientPerCredentials:
    """A KMS client factory: one StubKms per Credentials it is given, in order."""

    def __init__(self) -> None:
        self.given: list[Credentials] = []
        self.clients: list[StubKms] = []
        self.refreshed = threading.Event()

    def __call__(self, creds: Credentials) -> StubKms:
        self.given.append(creds)
        self.clients.append(StubKms())
        if len(self.given) > 1:
            self.refreshed.set()
        return self.clients[-1]

    def calls(self) -> list[list[str]]:
        return [client.calls for client in self.clients]


def unchecked_credentials(**fields: Any) -> Credentials:
    """A Credentials that skips its own checks, so its frame is one a receiver must refuse."""
    creds = object.__new__(Credentials)
    for name, value in {**vars(REFRESHED), **fields}.items():
        object.__setattr__(creds, name, value)
    return creds


def test_a_refresh_inside_a_dataset_stream_switches_the_client_for_the_next_call(nsm: MockNsm, sealed: bytes) -> None:
    factory = ClientPerCredentials()
    begin, data, end = stream(0, TRAIN, sealed)
    replies = run_session(nsm, [*SETUP, begin, data, REFRESHED, end], kms_clients=factory)
    assert replies[-2:] == [replies[-2], Goodbye()] and isinstance(replies[-2], JobResult), replies
    assert factory.given == [CREDS, REFRESHED]
    # The data key was fetched with the first credentials (the header came before the
    # refresh); the checkpoint's key with the refreshed ones.
    assert factory.calls() == [["Decrypt"], ["GenerateDataKey"]]


def test_a_refresh_between_set_up_messages_is_used_for_the_data_key(nsm: MockNsm, sealed: bytes) -> None:
    factory = ClientPerCredentials()
    loop = RecordingLoop()
    replies = run_session(nsm, [HELLO, CREDS, JOB, REFRESHED, SPEC, *stream(0, TRAIN, sealed)],
                          kms_clients=factory, training_loop=loop)
    assert replies[-2:] == [JobResult("ok", "recorded"), Goodbye()]
    assert factory.calls() == [[], ["Decrypt"]]


class KeyAfterRefreshLoop:
    """A training loop that waits for the parent's refresh, then seals as a checkpoint would."""

    def __init__(self, factory: ClientPerCredentials) -> None:
        self.factory = factory

    def __call__(self, inputs: TrainingInputs, gate: EgressGate) -> KeyAfterRefreshLoop:
        self.inputs, self.gate = inputs, gate
        return self

    def run(self) -> str:
        assert self.factory.refreshed.wait(timeout=10)
        self.inputs.generate_data_key(KEY_ARN, {"hermetic:format": "checkpoint"})
        return "sealed after the refresh"


def test_a_refresh_while_training_runs_switches_the_client(nsm: MockNsm, sealed: bytes) -> None:
    factory = ClientPerCredentials()
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed), REFRESHED],
                          kms_clients=factory, training_loop=KeyAfterRefreshLoop(factory))
    assert replies[-2:] == [JobResult("ok", "sealed after the refresh"), Goodbye()]
    assert factory.calls() == [["Decrypt"], ["GenerateDataKey"]]


def test_a_parents_goodbye_while_training_runs_lets_the_job_finish(nsm: MockNsm, sealed: bytes) -> None:
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed), Goodbye()], training_loop=RecordingLoop())
    assert replies[-2:] == [JobResult("ok", "recorded"), Goodbye()]


@pytest.mark.parametrize(
    ("after_datasets", "logged"),
    [
        pytest.param([Goodbye(), REFRESHED], "ProtocolError", id="refresh-after-goodbye"),
        pytest.param([Credentials("ASIANEXT", "s", None, "eu-west-1", "http://127.0.0.1:1", None)],
                     "ProtocolError", id="refresh-for-another-region"),
        pytest.param([Credentials("ASIANEXT", "s", None, "us-east-1", "https://kms.example", None)],
                     "ProtocolError", id="refresh-for-another-endpoint"),
        pytest.param([unchecked_credentials(access_key_id="")], "MalformedFrame", id="malformed-refresh"),
        pytest.param([JobStart("job-2", [TRAIN])], "ProtocolError", id="set-up-message-while-training"),
        pytest.param([Error("parent", "operator cancelled")], "RemoteError", id="parent-error-while-training"),
    ],
)
def test_refused_messages_while_training_end_the_job(
    nsm: MockNsm, sealed: bytes, after_datasets: list[Message], logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory = ClientPerCredentials()
    caplog.set_level(logging.ERROR, logger="enclave.runtime")
    replies = run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed), *after_datasets],
                          kms_clients=factory, training_loop=RecordingLoop())
    opened, planned, reserved = replies[1:4]
    # The data was opened: the reason stays in the enclave's log, by class only.
    assert_refused(replies, OPENED_FAILURE_CODE, OPENED_FAILURE, before=[ENCLAVE_HELLO, opened, planned, reserved])
    assert [r.getMessage() for r in caplog.records] == [f"job failed after the data was opened ({logged})"]
    assert factory.given == [CREDS]  # no refused refresh reached the factory


@pytest.mark.parametrize(
    ("messages", "code", "reason"),
    [
        pytest.param([HELLO, CREDS, Credentials("A", "s", None, "eu-west-1", "http://127.0.0.1:1", None)],
                     "protocol", "region 'eu-west-1'", id="refresh-for-another-region-during-set-up"),
        pytest.param([HELLO, CREDS, JOB, SPEC, DatasetBegin(0, TRAIN, None), unchecked_credentials(region="")],
                     "transport", "Credentials.region must not be empty", id="malformed-refresh-inside-a-stream"),
    ],
)
def test_refused_refreshes_during_set_up(nsm: MockNsm, messages: list[Message], code: str, reason: str) -> None:
    factory = ClientPerCredentials()
    assert_refused(run_session(nsm, messages, kms_clients=factory), code, reason)
    assert factory.given == [CREDS]


def test_a_refresh_never_logs_its_secrets(
    nsm: MockNsm, sealed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    factory = ClientPerCredentials()
    run_session(nsm, [*SETUP, *stream(0, TRAIN, sealed), REFRESHED], kms_clients=factory,
                training_loop=KeyAfterRefreshLoop(factory))
    assert any("credentials refreshed" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("next-secret", "next-token", "secret"):
        assert secret not in text
    assert "next-secret" not in repr(REFRESHED) and "next-token" not in repr(REFRESHED)


# -- tabular jobs -------------------------------------------------------------------------
TABULAR = "tabular-v1"


@pytest.fixture(scope="module")
def sealed_table(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A CSV of 200 patients sealed with a public schema: bounded age, unbounded income, a city, a string label."""
    from parent.datasets.schema import declaration_from_flags

    folder = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(6)
    rows = ["age,income,city,diagnosis"]
    for _ in range(200):
        rows.append(f"{rng.integers(0, 121)},{rng.uniform(0, 1e5):.2f},{rng.choice(['north', 'south', 'east'])},"
                    f"{rng.choice(['low', 'high'])}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                         label="diagnosis", classes="low,high")
    with mock.patch("parent.seal.secrets.token_bytes", return_value=DATA_KEY):
        seal_dataset(folder / "train.csv", folder / "train.sealed", key_id=KEY_ARN, kms_client=StubKms(),
                     max_epsilon=3.0, delta=1e-5, owner="owner", dataset_id=TABULAR, ledger=MEMORY_LOCATION,
                     model_owner_keys=[KEY_ARN], schema=declaration)
    return (folder / "train.sealed").read_bytes()


def tabular_spec(features: str, *, out: int = 2, layers: str | None = None, data: str = "") -> str:
    layers = layers or f'[{{ type = "linear", out = 8 }}, {{ type = "tanh" }}, {{ type = "linear", out = {out} }}]'
    return f"""
[job]
name = "tabular"
[model]
format = 1
layers = {layers}
[data]
features = {features}
label = "diagnosis"
{data}
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 20
steps = 2
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.0
[checkpoint]
key_id = "{KEY_ARN}"
"""


@pytest.mark.parametrize(("features", "out", "reason"), [
    ('["age", "income", "city"]', 2, "data.features: column 'income' is numeric double, unbounded"),
    ('["age", "zip"]', 2, "data.features: column 'zip' is not in the dataset"),
    ('["age", "city"]', 3, "model: model.layers[2] (linear): out is 3"),
])
def test_a_tabular_job_that_does_not_fit_the_schema_is_refused_before_kms(
    nsm: MockNsm, sealed_table: bytes, features: str, out: int, reason: str
) -> None:
    kms = StubKms()
    replies = run_session(nsm, [HELLO, CREDS, JobStart("job-1", [TABULAR]),
                                TrainingJob(tabular_spec(features, out=out)), *stream(0, TABULAR, sealed_table)],
                          kms=kms)
    assert_refused(replies, "config", reason)
    assert kms.calls == []


@pytest.mark.parametrize("spec", [
    tabular_spec('["age", "city"]'),
    # One id per column for an embedding: the city's three values.
    tabular_spec('["city"]', data='categorical = "ids"',
                 layers='[{ type = "embedding", vocab = 3, dim = 4 }, { type = "flatten" }, { type = "linear", out = 2 }]'),
])
def test_a_tabular_job_trains_to_a_certificate(nsm: MockNsm, ca: LocalCa, sealed_table: bytes, spec: str) -> None:
    kms = StubKms()
    replies = run_session(nsm, [HELLO, CREDS, JobStart("job-1", [TABULAR]), TrainingJob(spec),
                                *stream(0, TABULAR, sealed_table)], kms=kms)
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    assert body.steps == 2 and body.datasets[0].records == 200
    assert kms.calls == ["Decrypt", "GenerateDataKey"]
