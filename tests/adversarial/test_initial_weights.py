"""Initial weights as an attack surface: every wrong file, stream or order is refused before any KMS request.

A parent (or a careless model owner) may send weights of another hash, of the wrong
tensors or shapes, a malformed file, a stream the spec does not name, or the weights
after the sealed data. Each is refused with one line before the enclave asks KMS for a
data key (the stub's calls stay empty); the right file reaches the trainer, and the
certificate's model hash binds it.
"""
from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save

from enclave.runtime import RuntimeLimits
from enclave.training.spec import JobSpec
from enclave.transport.messages import (
    WEIGHTS_STREAM,
    AuditEvent,
    CertificateIssued,
    JobResult,
    JobStart,
    Message,
    TrainingJob,
)
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.certificate import verify_certificate
from tests.enclave.test_runtime import (
    CREDS,
    ENCLAVE_HELLO,
    HELLO,
    KEY_ARN,
    TRAIN,
    RecordingLoop,
    StubKms,
    assert_refused,
    run_session,
    stream,
)
from tests.enclave.test_runtime import sealed as sealed  # the module-scoped sealed dataset
from tests.support.certificates import PINNED
from tests.support.specs import mlp_spec

LAYERS = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear", out = 8 }, { type = "tanh" }, { type = "linear" }]'
# The model above on 784 pixels and 10 classes, as the trainer builds it.
SHAPES = {"1.weight": (8, 784), "1.bias": (8,), "3.weight": (10, 8), "3.bias": (10,)}
WEIGHTS_JOB = JobStart("job-1", [WEIGHTS_STREAM, TRAIN])


def weights_file(shapes: dict[str, tuple[int, ...]] = SHAPES, seed: int = 0) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return save({name: torch.randn(shape, generator=generator) for name, shape in shapes.items()})


def spec_naming(data: bytes | None) -> TrainingJob:
    model = LAYERS if data is None else f'{LAYERS}\nweights_sha256 = "{hashlib.sha256(data).hexdigest()}"'
    return TrainingJob(mlp_spec(key_id=KEY_ARN, model=model))


def session(start: JobStart, spec: TrainingJob, streams: list[tuple[str, bytes]]) -> list[Message]:
    messages: list[Message] = [HELLO, CREDS, start, spec]
    for index, (stream_id, data) in enumerate(streams):
        messages += stream(index, stream_id, data)
    return messages


def weights_audit(data: bytes, shapes: dict[str, tuple[int, ...]] = SHAPES) -> AuditEvent:
    parameters = sum(int(torch.Size(s).numel()) for s in shapes.values())
    return AuditEvent("initial_weights", {"sha256": hashlib.sha256(data).hexdigest(), "tensors": len(shapes),
                                          "parameters": parameters})


def test_the_named_weights_reach_the_trainer(nsm: MockNsm, sealed: bytes) -> None:
    data, kms, loop = weights_file(), StubKms(), RecordingLoop()
    replies = run_session(nsm, session(WEIGHTS_JOB, spec_naming(data), [(WEIGHTS_STREAM, data), (TRAIN, sealed)]),
                          kms=kms, training_loop=loop)
    assert replies[1] == weights_audit(data) and replies[-2] == JobResult("ok", "recorded")
    [inputs] = loop.inputs
    assert inputs.weights is not None and inputs.weights.sha256 == hashlib.sha256(data).hexdigest()
    assert inputs.weights.shapes() == SHAPES
    assert kms.calls == ["Decrypt"]


def test_a_job_on_initial_weights_certifies_the_model_hash_that_binds_them(
    nsm: MockNsm, ca: LocalCa, sealed: bytes
) -> None:
    data = weights_file()
    spec = spec_naming(data)
    replies = run_session(nsm, session(WEIGHTS_JOB, spec, [(WEIGHTS_STREAM, data), (TRAIN, sealed)]))
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    job = JobSpec.from_toml(spec.spec_toml)
    assert body.model_spec_sha256 == job.model_sha256 and body.spec_sha256 == job.sha256
    assert job.model_sha256 != JobSpec.from_toml(spec_naming(None).spec_toml).model_sha256


def test_weights_of_another_hash_are_refused_before_kms(nsm: MockNsm, sealed: bytes) -> None:
    named, sent = weights_file(seed=0), weights_file(seed=1)
    kms = StubKms()
    replies = run_session(nsm, session(WEIGHTS_JOB, spec_naming(named), [(WEIGHTS_STREAM, sent), (TRAIN, sealed)]),
                          kms=kms)
    error = assert_refused(replies, "config", "")
    assert error.message == "the weights file does not hash to the spec's model.weights_sha256"
    assert kms.calls == []


@pytest.mark.parametrize(
    ("shapes", "reason"),
    [
        ({**SHAPES, "1.weight": (784, 8)}, "tensor '1.weight' is [784, 8] in the weights file, the model's is [8, 784]"),
        ({k: v for k, v in SHAPES.items() if k != "3.bias"}, "the weights file lacks tensor '3.bias' (the model's is [10])"),
        ({**SHAPES, "5.weight": (2, 2)}, "the weights file holds tensor '5.weight', which the model does not have"),
        ({f"net.{k}": v for k, v in SHAPES.items()}, "the weights file lacks tensor '1.weight'"),
    ],
)
def test_weights_that_do_not_fit_the_model_are_refused_before_kms(
    nsm: MockNsm, sealed: bytes, shapes: dict[str, tuple[int, ...]], reason: str
) -> None:
    data, kms = weights_file(shapes), StubKms()
    replies = run_session(nsm, session(WEIGHTS_JOB, spec_naming(data), [(WEIGHTS_STREAM, data), (TRAIN, sealed)]),
                          kms=kms)
    error = assert_refused(replies, "config", reason, before=[ENCLAVE_HELLO, weights_audit(data, shapes)])
    assert "\n" not in error.message
    assert kms.calls == []


def test_a_malformed_file_of_the_named_hash_is_refused_before_kms(nsm: MockNsm, sealed: bytes) -> None:
    data = weights_file()[:-1]  # the buffer one byte short
    kms = StubKms()
    replies = run_session(nsm, session(WEIGHTS_JOB, spec_naming(data), [(WEIGHTS_STREAM, data), (TRAIN, sealed)]),
                          kms=kms)
    assert_refused(replies, "config", "its tensors cover")
    assert kms.calls == []


def test_weights_beyond_the_bound_are_refused(nsm: MockNsm, sealed: bytes) -> None:
    data, kms = weights_file(), StubKms()
    replies = run_session(nsm, session(WEIGHTS_JOB, spec_naming(data), [(WEIGHTS_STREAM, data), (TRAIN, sealed)]),
                          kms=kms, limits=RuntimeLimits(recv_timeout_s=5, max_weights_bytes=1024))
    assert_refused(replies, "runtime", "initial weights exceeds 1024 bytes")
    assert kms.calls == []


@pytest.mark.parametrize(
    ("streams", "names", "reason"),
    [
        # After the sealed dataset: its header would ask KMS before the weights were checked.
        ([TRAIN, WEIGHTS_STREAM], True, "the initial weights must be streamed before the sealed datasets"),
        ([TRAIN], True, "the spec names initial weights (model.weights_sha256); JobStart sends none"),
        ([WEIGHTS_STREAM, WEIGHTS_STREAM, TRAIN], True, "JobStart sends 2 weights streams"),
        ([WEIGHTS_STREAM, TRAIN], False, "JobStart sends initial weights; the spec names none"),
    ],
)
def test_a_weights_stream_out_of_place_is_refused_before_kms(
    nsm: MockNsm, sealed: bytes, streams: list[str], names: bool, reason: str
) -> None:
    data, kms = weights_file(), StubKms()
    sent = [(s, data if s == WEIGHTS_STREAM else sealed) for s in streams]
    replies = run_session(nsm, session(JobStart("job-1", streams), spec_naming(data if names else None), sent),
                          kms=kms)
    assert_refused(replies, "protocol", reason)
    assert kms.calls == []
