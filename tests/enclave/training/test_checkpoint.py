from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
from collections.abc import Callable
from typing import Any
from unittest import mock

import cbor2
import numpy as np
import pytest
import torch

from enclave.hazmat.checkpoint_key import CheckpointAuthKey
from enclave.kms.errors import KmsInvalidCiphertext, KmsResponseError
from enclave.sealed.errors import (
    BadMagic,
    ChunkAuthenticationFailed,
    EncryptionContextMismatch,
    InvalidDataKey,
    MalformedHeader,
    TrailingData,
    TruncatedSealedFile,
)
from enclave.sealed.format import (
    CHECKPOINT_PAYLOAD,
    PREFIX_SIZE,
    SealedHeader,
    build_checkpoint_context,
    build_encryption_context,
)
from enclave.sealed.stream import read_header, seal_stream
from enclave.training.checkpoint import (
    CHECKPOINT_FORMAT,
    STATE_KEYS,
    CheckpointAuthenticator,
    CheckpointBinding,
    CheckpointError,
    CheckpointMismatch,
    CheckpointNotAuthentic,
    CheckpointState,
    MalformedCheckpoint,
    NotACheckpoint,
    SamplerState,
    decode_checkpoint,
    encode_checkpoint,
    model_sha256,
    open_checkpoint,
    seal_checkpoint,
)
from tests.support.checkpoints import TAG, TEST_AUTH

SPEC = "5e" * 32
KEY_ID = "arn:aws:kms:us-east-1:111122223333:key/model-owner"


class FakeKms:
    """Stands in for AWS KMS: random data keys, opaque blobs, context and key binding."""

    def __init__(self) -> None:
        self._keys: dict[bytes, tuple[bytes, dict[str, str], str]] = {}
        self.generate_calls = 0
        self.decrypt_calls = 0

    def generate_data_key(self, key_id: str, context: dict[str, str]) -> tuple[bytes, bytes]:
        self.generate_calls += 1
        key, blob = os.urandom(32), os.urandom(64)
        self._keys[blob] = (key, dict(context), key_id)
        return key, blob

    def decrypt(self, blob: bytes, context: dict[str, str], key_id: str) -> bytes:
        self.decrypt_calls += 1
        entry = self._keys.get(bytes(blob))
        if entry is None or entry[1] != dict(context) or entry[2] != key_id:
            raise KmsInvalidCiphertext("KMS Decrypt failed: InvalidCiphertextException")
        return entry[0]


def trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 1, 4, 4)).sum().backward()
        optimizer.step()
    return model, optimizer


def make_state(step: int = 7, job_id: str = "job-1", **overrides: Any) -> CheckpointState:
    model, optimizer = trained()
    fields: dict[str, Any] = dict(
        job_id=job_id,
        spec_sha256=SPEC,
        step=step,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        ledger={"delta": 1e-5, "accountant": "prv", "segments": [{"q": 0.03, "sigma": 1.1, "steps": step}]},
        sampler=SamplerState(steps=step, q=0.03),
        metrics=({"step": 5, "public_accuracy": 0.5},),
    )
    fields.update(overrides)
    return CheckpointState(**fields)


def assert_same_tensors(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_tensors(x, y)
    else:
        assert a == b


# -- plaintext encoding ------------------------------------------------------------------
def test_encode_decode_round_trip_restores_model_and_optimizer() -> None:
    model, optimizer = trained()
    state = make_state(model_state=model.state_dict(), optimizer_state=optimizer.state_dict())
    back = decode_checkpoint(encode_checkpoint(state))
    assert (back.job_id, back.spec_sha256, back.step) == ("job-1", SPEC, 7)
    assert back.sampler == SamplerState(7, 0.03)
    assert back.ledger == state.ledger and back.metrics == state.metrics
    assert_same_tensors(dict(model.state_dict()), dict(back.model_state))
    assert_same_tensors(optimizer.state_dict(), back.optimizer_state)

    # The decoded state loads into fresh objects and training continues identically.
    model2, optimizer2 = trained()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    model2.load_state_dict(back.model_state)
    optimizer2.load_state_dict(back.optimizer_state)
    batch = torch.randn(4, 1, 4, 4)
    for m, o in ((model, optimizer), (model2, optimizer2)):
        o.zero_grad()
        m(batch).sum().backward()
        o.step()
    assert_same_tensors(dict(model.state_dict()), dict(model2.state_dict()))


def test_adam_state_round_trips() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = make_state(model_state=model.state_dict(), optimizer_state=optimizer.state_dict())
    back = decode_checkpoint(encode_checkpoint(state))
    assert_same_tensors(optimizer.state_dict(), back.optimizer_state)
    assert back.optimizer_state["param_groups"][0]["betas"] == (0.9, 0.999)


def test_no_csprng_key_anywhere() -> None:
    # The state type has no place for a key, and the stored dict holds exactly these keys.
    assert {f.name for f in dataclasses.fields(CheckpointState)} == {
        "job_id", "spec_sha256", "step", "model_state", "optimizer_state", "ledger", "sampler", "metrics"
    }
    assert {f.name for f in dataclasses.fields(SamplerState)} == {"steps", "q"}
    raw = torch.load(io.BytesIO(encode_checkpoint(make_state())), weights_only=True)
    assert set(raw) == STATE_KEYS == {
        "format", "job_id", "spec_sha256", "step", "model_state", "optimizer_state", "ledger", "sampler", "metrics"
    }
    assert set(raw["sampler"]) == {"steps", "q"}
    assert raw["format"] == CHECKPOINT_FORMAT


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _plain(**changes: Any) -> dict[str, Any]:
    plain = make_state().to_plain()
    for key, value in changes.items():
        if value is None:
            del plain[key]
        else:
            plain[key] = value
    return plain


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a torch file",
        os.urandom(256),
        _torch_bytes(_plain())[:-40],  # truncated zip
        _torch_bytes([1, 2, 3]),
        _torch_bytes(_plain(format="hermetic-checkpoint-v0")),
        _torch_bytes(_plain(sampler=None)),
        _torch_bytes({**_plain(), "rng_key": b"\x00" * 32}),
        _torch_bytes(_plain(sampler={"steps": 7, "q": 0.03, "key": "00"})),
        _torch_bytes(_plain(sampler={"steps": 7, "q": 1.5})),
        _torch_bytes(_plain(step=-1)),
        _torch_bytes(_plain(step="7")),
        _torch_bytes(_plain(job_id="")),
        _torch_bytes(_plain(spec_sha256="XY" * 32)),
        _torch_bytes(_plain(model_state={})),
        _torch_bytes(_plain(model_state={"w": [1.0, 2.0]})),
        _torch_bytes(_plain(optimizer_state={"state": {}})),
        _torch_bytes(_plain(ledger=[1, 2])),
        _torch_bytes(_plain(ledger={"t": torch.zeros(2)})),
        _torch_bytes(_plain(metrics={"step": 1})),
        _torch_bytes(_plain(metrics=[1.0])),
    ],
    ids=lambda d: f"{len(d)}B",
)
def test_garbage_plaintext_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedCheckpoint):
        decode_checkpoint(data)


class _Evil:
    ran = False

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (exec, ("import tests.enclave.training.test_checkpoint as m; m._Evil.ran = True",))


def test_pickled_code_is_never_run() -> None:
    data = _torch_bytes({**_plain(), "ledger": {"x": _Evil()}})
    with pytest.raises(MalformedCheckpoint, match="not a torch file"):
        decode_checkpoint(data)
    assert _Evil.ran is False


# -- sealing ------------------------------------------------------------------------------
def test_seal_open_round_trip() -> None:
    kms = FakeKms()
    state = make_state(step=1172)
    sealed = seal_checkpoint(state, key_id=KEY_ID, generate_data_key=kms.generate_data_key, authenticator=TEST_AUTH, chunk_size=1024)
    header = read_header(io.BytesIO(sealed))
    assert header.payload == CHECKPOINT_PAYLOAD == "hermetic-checkpoint-v1"
    assert header.key_id == KEY_ID and header.chunk_size == 1024
    tag = header.encryption_context["auth_tag"]
    assert dict(header.encryption_context) == {
        "hermetic:format": "checkpoint-v1", "job_id": "job-1", "spec_sha256": SPEC, "step": "1172", "auth_tag": tag
    }
    # Nothing of the plaintext shows: the model's raw float bytes are not in the file.
    weight = state.model_state["3.weight"].numpy().tobytes()
    assert weight[:32] not in sealed

    back = open_checkpoint(sealed, decrypt=kms.decrypt, expected_job_id="job-1", expected_spec_sha256=SPEC,
                           authenticator=TEST_AUTH)
    assert back.step == 1172 and back.sampler == SamplerState(1172, 0.03)
    assert_same_tensors(dict(state.model_state), dict(back.model_state))
    assert (kms.generate_calls, kms.decrypt_calls) == (1, 1)


def _other_auth(*, data_key: bytes = bytes(32), dataset: str = "test-dataset", pcr0: str = "00" * 48,
                context: str = "11" * 32) -> CheckpointAuthenticator:
    return CheckpointAuthenticator(CheckpointAuthKey([(dataset, data_key)]),
                                   CheckpointBinding(pcr0=pcr0, datasets=((dataset, context),)))


def test_the_test_authenticator_is_rebuilt_the_same() -> None:
    kms = FakeKms()
    sealed = seal_checkpoint(make_state(), key_id=KEY_ID, generate_data_key=kms.generate_data_key,
                             authenticator=TEST_AUTH)
    assert open_checkpoint(sealed, decrypt=kms.decrypt, authenticator=_other_auth()).step == make_state().step


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(dict(data_key=b"\x01" * 32), id="another-data-key"),
        pytest.param(dict(dataset="another-dataset"), id="another-dataset-id"),
        pytest.param(dict(pcr0="01" * 48), id="another-enclave-image"),
        pytest.param(dict(context="22" * 32), id="another-dataset-context"),
    ],
)
def test_a_checkpoint_tagged_for_other_keys_images_or_datasets_is_not_authentic(other: dict[str, Any]) -> None:
    kms = FakeKms()
    sealed = seal_checkpoint(make_state(), key_id=KEY_ID, generate_data_key=kms.generate_data_key,
                             authenticator=TEST_AUTH)
    with pytest.raises(CheckpointNotAuthentic):
        open_checkpoint(sealed, decrypt=kms.decrypt, authenticator=_other_auth(**other))


def test_a_checkpoint_with_changed_contents_and_the_old_tag_is_not_authentic_and_never_decoded() -> None:
    key = os.urandom(32)
    honest = make_state(step=7)
    tag = TEST_AUTH.tag(job_id="job-1", spec_sha256=SPEC, step=7, plaintext=encode_checkpoint(honest))
    forged = encode_checkpoint(make_state(step=7, metrics=({"name": "invented", "value": 1.0},)))
    sealed = _seal_raw(forged, build_checkpoint_context(job_id="job-1", spec_sha256=SPEC, step=7, auth_tag=tag), key)
    with mock.patch("enclave.training.checkpoint.decode_checkpoint") as decode, pytest.raises(CheckpointNotAuthentic):
        open_checkpoint(sealed, decrypt=lambda blob, ctx, key_id: key, authenticator=TEST_AUTH)
    decode.assert_not_called()
    # The honest plaintext under the same tag opens.
    sealed = _seal_raw(encode_checkpoint(honest),
                       build_checkpoint_context(job_id="job-1", spec_sha256=SPEC, step=7, auth_tag=tag), key)
    assert open_checkpoint(sealed, decrypt=lambda blob, ctx, key_id: key, authenticator=TEST_AUTH).step == 7


def test_a_checkpoint_sealed_before_tags_is_refused_by_name() -> None:
    context = build_checkpoint_context(job_id="j", spec_sha256=SPEC, step=0, auth_tag=TAG)
    del context["auth_tag"]
    with pytest.raises(MalformedHeader, match="no auth_tag"):
        SealedHeader(key_id=KEY_ID, encrypted_data_key=b"k", encryption_context=context, payload=CHECKPOINT_PAYLOAD)


def test_every_seal_uses_a_fresh_data_key() -> None:
    kms = FakeKms()
    state = make_state()
    a = seal_checkpoint(state, key_id=KEY_ID, generate_data_key=kms.generate_data_key, authenticator=TEST_AUTH)
    b = seal_checkpoint(state, key_id=KEY_ID, generate_data_key=kms.generate_data_key, authenticator=TEST_AUTH)
    assert a != b
    assert open_checkpoint(b, decrypt=kms.decrypt).step == open_checkpoint(a, decrypt=kms.decrypt).step


@pytest.fixture(scope="module")
def sealed_pair() -> tuple[FakeKms, bytes]:
    kms = FakeKms()
    return kms, seal_checkpoint(make_state(), key_id=KEY_ID, generate_data_key=kms.generate_data_key, authenticator=TEST_AUTH, chunk_size=512)


def test_flipped_ciphertext_byte_fails_authentication(sealed_pair: tuple[FakeKms, bytes]) -> None:
    kms, sealed = sealed_pair
    header = read_header(io.BytesIO(sealed))
    body = PREFIX_SIZE + len(header.header_bytes())
    for offset in (body + 10, len(sealed) // 2, len(sealed) - 1):
        data = bytearray(sealed)
        data[offset] ^= 0x01
        with pytest.raises(ChunkAuthenticationFailed):
            open_checkpoint(bytes(data), decrypt=kms.decrypt)


@pytest.mark.parametrize("cut", [1, 17, 600])
def test_truncated_checkpoint(sealed_pair: tuple[FakeKms, bytes], cut: int) -> None:
    kms, sealed = sealed_pair
    with pytest.raises((TruncatedSealedFile, ChunkAuthenticationFailed)):
        open_checkpoint(sealed[:-cut], decrypt=kms.decrypt)


def test_truncated_at_a_chunk_boundary(sealed_pair: tuple[FakeKms, bytes]) -> None:
    kms, sealed = sealed_pair
    header = read_header(io.BytesIO(sealed))
    first_chunk_end = PREFIX_SIZE + len(header.header_bytes()) + 4 + 512 + 16
    with pytest.raises(TruncatedSealedFile):
        open_checkpoint(sealed[:first_chunk_end], decrypt=kms.decrypt)


def test_trailing_bytes_and_bad_magic(sealed_pair: tuple[FakeKms, bytes]) -> None:
    kms, sealed = sealed_pair
    with pytest.raises((TrailingData, TruncatedSealedFile, ChunkAuthenticationFailed)):
        open_checkpoint(sealed + b"\x00\x00\x00\x20" + bytes(32), decrypt=kms.decrypt)
    with pytest.raises(BadMagic):
        open_checkpoint(b"PK\x03\x04" + sealed[4:], decrypt=kms.decrypt)
    with pytest.raises(TruncatedSealedFile):
        open_checkpoint(b"", decrypt=kms.decrypt)


def _with_context(sealed: bytes, **context: str) -> bytes:
    header = read_header(io.BytesIO(sealed))
    rest = sealed[PREFIX_SIZE + len(header.header_bytes()):]
    forged = SealedHeader(
        key_id=header.key_id, encrypted_data_key=header.encrypted_data_key,
        encryption_context={**header.encryption_context, **context}, chunk_size=header.chunk_size,
        payload=header.payload,
    )
    return forged.encode() + rest


def test_edited_header_context_is_refused(sealed_pair: tuple[FakeKms, bytes]) -> None:
    kms, sealed = sealed_pair
    forged = _with_context(sealed, step="99")
    # KMS binds the context to the data key ...
    with pytest.raises(KmsInvalidCiphertext):
        open_checkpoint(forged, decrypt=kms.decrypt)

    # ... and even a KMS that ignored it would not help: each chunk's AAD binds the header.
    def lenient(blob: bytes, context: dict[str, str], key_id: str) -> bytes:
        original = dict(read_header(io.BytesIO(sealed)).encryption_context)
        return kms.decrypt(blob, original, key_id)

    with pytest.raises(ChunkAuthenticationFailed):
        open_checkpoint(forged, decrypt=lenient)


def _seal_raw(plaintext: bytes, context: dict[str, str], key: bytes) -> bytes:
    header = SealedHeader(
        key_id=KEY_ID, encrypted_data_key=b"blob", encryption_context=context, payload=CHECKPOINT_PAYLOAD
    )
    out = io.BytesIO()
    seal_stream([plaintext], header, key, out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("context", "what"),
    [
        (dict(job_id="job-2", spec_sha256=SPEC, step=7), "job_id"),
        (dict(job_id="job-1", spec_sha256="ab" * 32, step=7), "spec_sha256"),
        (dict(job_id="job-1", spec_sha256=SPEC, step=8), "step"),
    ],
)
def test_context_and_contents_must_agree(context: dict[str, Any], what: str) -> None:
    key = os.urandom(32)
    sealed = _seal_raw(encode_checkpoint(make_state(step=7)), build_checkpoint_context(**context, auth_tag=TAG), key)
    with pytest.raises(CheckpointMismatch, match=what):
        open_checkpoint(sealed, decrypt=lambda blob, ctx, key_id: key)


def test_expectations_are_checked_before_kms(sealed_pair: tuple[FakeKms, bytes]) -> None:
    kms, sealed = sealed_pair
    before = kms.decrypt_calls
    with pytest.raises(CheckpointMismatch, match="job"):
        open_checkpoint(sealed, decrypt=kms.decrypt, expected_job_id="someone-else")
    with pytest.raises(CheckpointMismatch, match="spec"):
        open_checkpoint(sealed, decrypt=kms.decrypt, expected_spec_sha256="00" * 32)
    assert kms.decrypt_calls == before


def test_wrong_data_key_from_decrypt(sealed_pair: tuple[FakeKms, bytes]) -> None:
    _, sealed = sealed_pair
    with pytest.raises(ChunkAuthenticationFailed):
        open_checkpoint(sealed, decrypt=lambda blob, ctx, key_id: os.urandom(32))
    with pytest.raises(InvalidDataKey):
        open_checkpoint(sealed, decrypt=lambda blob, ctx, key_id: b"short")


def test_unusable_kms_blob_is_a_kms_error() -> None:
    with pytest.raises(KmsResponseError):
        seal_checkpoint(make_state(), key_id=KEY_ID, generate_data_key=lambda k, c: (os.urandom(32), b""),
                        authenticator=TEST_AUTH)


def test_dataset_files_are_not_checkpoints() -> None:
    ctx = build_encryption_context(
        dataset_id="ds", owner="o", max_epsilon=3.0, delta=1e-5, record_count=1,
        schema_sha256=hashlib.sha256(b"schema").hexdigest(),
        ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
        model_owner_keys=[KEY_ID],
    )
    header = SealedHeader(key_id=KEY_ID, encrypted_data_key=b"b", encryption_context=ctx, schema=b"schema")
    out = io.BytesIO()
    seal_stream([b"x"], header, bytes(32), out)
    calls: list[Any] = []
    with pytest.raises(NotACheckpoint):
        open_checkpoint(out.getvalue(), decrypt=lambda *a: calls.append(a) or bytes(32))
    assert calls == []
    assert issubclass(NotACheckpoint, CheckpointError)


def test_checkpoint_headers_are_not_datasets() -> None:
    header = SealedHeader(
        key_id=KEY_ID, encrypted_data_key=b"b", payload=CHECKPOINT_PAYLOAD,
        encryption_context=build_checkpoint_context(job_id="j", spec_sha256=SPEC, step=0, auth_tag=TAG),
    )
    with pytest.raises(EncryptionContextMismatch, match="not a dataset"):
        _ = header.dataset_id
    with pytest.raises(EncryptionContextMismatch):
        _ = header.record_count
    assert SealedHeader.decode(header.encode()) == header


# Known answer: the header of a checkpoint with fixed inputs (canonical CBOR, sorted keys).
HEADER_KAT = (
    "a763616c676b4145532d3235362d47434d666b65795f6964783261726e3a6177733a6b6d733a75732d656173742d31"
    "3a3131313132323232333333333a6b65792f6d6f64656c2d6f776e657266736368656d6140677061796c6f61647668"
    "65726d657469632d636865636b706f696e742d76316a6368756e6b5f73697a651a0010000072656e63727970746564"
    "5f646174615f6b6579440001020372656e6372797074696f6e5f636f6e74657874a564737465706431313732666a6f"
    "625f6964656a6f622d3168617574685f74616778406162616261626162616261626162616261626162616261626162"
    "61626162616261626162616261626162616261626162616261626162616261626162616261626b737065635f736861"
    "3235367840356535653565356535653565356535653565356535653565356535653565356535653565356535653565"
    "356535653565356535653565356535653565356535656f6865726d657469633a666f726d61746d636865636b706f69"
    "6e742d7631"
)
HEADER_FILE_SHA256 = "1411872d34db045e48cd0888c27e9269df53df5027dad97ee38bffd621618e1b"


def test_checkpoint_header_known_answer() -> None:
    header = SealedHeader(
        key_id=KEY_ID, encrypted_data_key=bytes(range(4)), payload=CHECKPOINT_PAYLOAD,
        encryption_context=build_checkpoint_context(job_id="job-1", spec_sha256=SPEC, step=1172, auth_tag=TAG),
    )
    assert header.header_bytes().hex() == HEADER_KAT
    # By hand: the context map now has 5 entries (0xa5), and "auth_tag" (text of 8, 0x68) sorts
    # after "job_id" and before "spec_sha256" (shorter keys first), its value text of 64 (0x78 0x40).
    assert "a5" + "64" + b"step".hex() + "64" + b"1172".hex() + "66" + b"job_id".hex() in HEADER_KAT
    assert "68" + b"auth_tag".hex() + "7840" + b"ab".hex() * 32 + "6b" + b"spec_sha256".hex() in HEADER_KAT
    assert cbor2.loads(bytes.fromhex(HEADER_KAT)) == {
        "alg": "AES-256-GCM",
        "key_id": KEY_ID,
        "payload": "hermetic-checkpoint-v1",
        "chunk_size": 1024 * 1024,
        "encrypted_data_key": b"\x00\x01\x02\x03",
        "encryption_context": {
            "step": "1172", "job_id": "job-1", "spec_sha256": SPEC, "hermetic:format": "checkpoint-v1",
            "auth_tag": "ab" * 32,
        },
        "schema": b"",
    }
    encoded = header.encode()
    assert encoded[:14] == b"HRMTSEAL" + struct.pack(">HI", 1, len(HEADER_KAT) // 2)
    assert hashlib.sha256(encoded).hexdigest() == HEADER_FILE_SHA256


@pytest.mark.parametrize(
    ("payload", "context"),
    [
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "sealed-v1", "job_id": "j", "spec_sha256": SPEC, "step": "1"}),
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": SPEC, "step": "01"}),
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": "AB" * 32, "step": "1"}),
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "checkpoint-v1", "job_id": "", "spec_sha256": SPEC, "step": "1"}),
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": SPEC}),
        (CHECKPOINT_PAYLOAD, {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": SPEC, "step": "1", "x": "y"}),
        ("arrow-ipc-stream", {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": SPEC, "step": "1"}),
        ("pickle", {"hermetic:format": "checkpoint-v1", "job_id": "j", "spec_sha256": SPEC, "step": "1"}),
    ],
)
def test_checkpoint_context_validation(payload: str, context: dict[str, str]) -> None:
    with pytest.raises(MalformedHeader):
        SealedHeader(key_id=KEY_ID, encrypted_data_key=b"b", encryption_context=context, payload=payload)


@pytest.mark.parametrize("step", [-1, True, 1.0])
def test_build_checkpoint_context_rejects_bad_steps(step: Any) -> None:
    with pytest.raises(MalformedHeader):
        build_checkpoint_context(job_id="j", spec_sha256=SPEC, step=step, auth_tag=TAG)


# -- model hash ---------------------------------------------------------------------------
def _reference_model_hash(entries: list[tuple[str, str, tuple[int, ...], bytes]]) -> str:
    """Straight from the documented layout, without torch."""
    h = hashlib.sha256(b"hermetic-model-sha256-v1\x00")
    h.update(struct.pack(">Q", len(entries)))
    for name, dtype, shape, data in sorted(entries):
        h.update(struct.pack(">I", len(name.encode())) + name.encode())
        h.update(struct.pack(">I", len(dtype)) + dtype.encode())
        h.update(struct.pack(">I", len(shape)) + b"".join(struct.pack(">Q", d) for d in shape))
        h.update(struct.pack(">Q", len(data)) + data)
    return h.hexdigest()


MODEL_KAT = "71febeaf67621fbc47592e34fed837aa83010ca96d2badda48408fd9e8a92a4c"


def test_model_sha256_known_answer() -> None:
    state = {
        "fc.weight": torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.25, -0.0]]),
        "fc.bias": torch.tensor([0.125, -1.0]),
        "steps": torch.tensor(3, dtype=torch.int64),
    }
    reference = _reference_model_hash([
        ("fc.weight", "float32", (2, 3), np.array([[1.0, -2.0, 0.5], [0.0, 3.25, -0.0]], "<f4").tobytes()),
        ("fc.bias", "float32", (2,), np.array([0.125, -1.0], "<f4").tobytes()),
        ("steps", "int64", (), np.array(3, "<i8").tobytes()),
    ])
    assert model_sha256(state) == reference == MODEL_KAT


def test_model_sha256_sensitivity() -> None:
    model, _ = trained()
    state = dict(model.state_dict())
    digest = model_sha256(state)
    assert model_sha256(dict(reversed(list(state.items())))) == digest  # order-independent
    assert model_sha256({k: v.clone().requires_grad_(v.is_floating_point()) for k, v in state.items()}) == digest
    name = "3.weight"
    bumped = dict(state)
    bumped[name] = state[name].clone()
    bumped[name].view(-1)[0] = torch.nextafter(bumped[name].view(-1)[0], torch.tensor(1e9))
    assert model_sha256(bumped) != digest
    assert model_sha256({**state, name: state[name].double()}) != digest
    assert model_sha256({**state, name: state[name].reshape(-1)}) != digest
    renamed = {("x" + k if k == name else k): v for k, v in state.items()}
    assert model_sha256(renamed) != digest
    # A transposed (non-contiguous) tensor hashes as its logical contents.
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    assert model_sha256({"t": t}) == model_sha256({"t": t.contiguous()})


def test_model_sha256_rejects_non_tensors() -> None:
    with pytest.raises(MalformedCheckpoint):
        model_sha256({"w": [1.0]})  # type: ignore[dict-item]
