from __future__ import annotations

from dataclasses import dataclass

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.transport.errors import InvalidMessage, MalformedFrame, UnknownMessageType
from enclave.transport.framing import decode_body
from enclave.transport.messages import (
    REGISTRY,
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
    MessageRegistry,
    decode_payload,
    encode_payload,
)
from tests.support.frames import FrameDecoder, encode_frame
from tests.support.message_strategies import MESSAGES

ALL_TYPES = [Hello, Goodbye, Error, Credentials, JobStart, DatasetBegin, DatasetData,
             DatasetEnd, AuditEvent, JobResult]


def test_every_type_is_registered_with_a_unique_id() -> None:
    table = REGISTRY.types()
    for cls in ALL_TYPES:
        assert table[cls.TYPE_ID] is cls
    assert len({cls.TYPE_ID for cls in ALL_TYPES}) == len(ALL_TYPES)


@given(MESSAGES)
def test_payload_round_trip(msg: Message) -> None:
    payload = encode_payload(msg)
    back = decode_payload(type(msg), payload)
    assert back == msg
    # One message, one encoding.
    assert encode_payload(back) == payload


def test_known_payload_bytes() -> None:
    # Canonical CBOR sorts keys shorter-first: "role" before "protocol_version".
    assert encode_payload(Hello("parent", 1)) == bytes.fromhex(
        "a2" "64726f6c65" "66706172656e74" "70" + b"protocol_version".hex() + "01"
    )
    assert encode_payload(Goodbye()) == b"\xa0"
    assert encode_payload(JobStart("j", ["a", "b"])) == bytes.fromhex(
        "a2" "666a6f625f6964" "616a" "686461746173657473" "82" "6161" "6162"
    )


def _raw(fields: dict) -> bytes:
    return cbor2.dumps(fields, canonical=True)


@pytest.mark.parametrize(
    ("cls", "payload"),
    [
        (Hello, _raw({"role": "parent"})),  # missing field
        (Hello, _raw({"role": "parent", "protocol_version": 1, "x": 1})),  # extra field
        (Hello, _raw({"rolE": "parent", "protocol_version": 1})),  # wrong name
        (Hello, _raw({"role": b"parent", "protocol_version": 1})),  # bytes for str
        (Hello, _raw({"role": "parent", "protocol_version": True})),  # bool for int
        (Hello, _raw({"role": "parent", "protocol_version": 1.0})),  # float for int
        (Hello, _raw({"role": "parent", "protocol_version": -1})),  # value check
        (Hello, _raw(["parent", 1])),  # not a map
        (Hello, _raw({"role": "parent", "protocol_version": 1}) + b"\x00"),  # trailing byte
        (Hello, b""),
        (Hello, b"\xff"),
        (DatasetData, _raw({"data": "text"})),  # str for bytes
        (DatasetEnd, _raw({"index": 0, "sealed_sha256": b"\x00" * 31})),  # wrong digest size
        (DatasetBegin, _raw({"index": 0, "dataset_id": "d", "size": -5})),
        (JobStart, _raw({"job_id": "j", "datasets": "abc"})),
        (JobStart, _raw({"job_id": "j", "datasets": [1]})),
        (AuditEvent, _raw({"kind": "k", "fields": {"a": [1]}})),  # nested value
        (AuditEvent, _raw({"kind": "k", "fields": {1: 1}})),  # non-text key
        (AuditEvent, _raw({"kind": "k", "fields": {"a": None}})),
        (Credentials, _raw({"access_key_id": "A", "secret_access_key": "s", "session_token": 5,
                            "region": "r", "kms_endpoint": "https://k", "expiration_ms": None})),
        (Credentials, _raw({"access_key_id": "A", "secret_access_key": "s", "session_token": None,
                            "region": "r", "kms_endpoint": "ftp://k", "expiration_ms": None})),
    ],
)
def test_strict_decoding(cls: type[Message], payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_payload(cls, payload)


@pytest.mark.parametrize(
    "payload_hex",
    [
        # {"data": h'01'} with the byte-string length in a needless extra byte.
        "a164646174615801" "01",
        # Indefinite-length map.
        "bf6464617461410 1ff".replace(" ", ""),
        # Tagged byte string (tag 24: embedded CBOR).
        "a1646461746 1d8184101".replace(" ", ""),
        # Duplicate key.
        "a2646461746141016464617461410 2".replace(" ", ""),
    ],
)
def test_non_canonical_payloads_refused(payload_hex: str) -> None:
    payload = bytes.fromhex(payload_hex)
    with pytest.raises(MalformedFrame):
        decode_payload(DatasetData, payload)


def test_unsorted_keys_refused() -> None:
    # Same content as Hello("p", 1) but keys in the wrong canonical order.
    payload = bytes.fromhex("a2" "70" + b"protocol_version".hex() + "01" "64726f6c65" "6170")
    assert cbor2.loads(payload) == {"role": "p", "protocol_version": 1}
    with pytest.raises(MalformedFrame, match="canonical"):
        decode_payload(Hello, payload)


def test_unknown_type_id() -> None:
    with pytest.raises(UnknownMessageType, match="0xee"):
        decode_body(b"\xee\xa0")


def test_construction_checks_and_normalises() -> None:
    js = JobStart("job", ["a", "b"])
    assert js.datasets == ("a", "b")
    assert hash(js) == hash(JobStart("job", ("a", "b")))
    assert DatasetData(bytearray(b"ab")).data == b"ab"
    ev = AuditEvent("k", {"n": 1, "f": 2.5, "b": False, "s": "x"})
    assert ev.fields == {"n": 1, "f": 2.5, "b": False, "s": "x"}
    assert type(ev.fields["n"]) is int and type(ev.fields["b"]) is bool
    with pytest.raises(TypeError):
        ev.fields["n"] = 2  # type: ignore[index]
    with pytest.raises(InvalidMessage):
        Hello("parent", "1")  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage):
        DatasetBegin(0, "d", 2**64)
    with pytest.raises(InvalidMessage):
        DatasetEnd(0, b"short")


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("AKIAEXAMPLE", "very-secret-key", "session-token-xyz", "us-east-1",
                        "https://kms.us-east-1.amazonaws.com", 1700000000000)
    text = repr(creds)
    assert "AKIAEXAMPLE" in text
    assert "very-secret-key" not in text and "session-token-xyz" not in text
    assert "bytes" in repr(DatasetData(b"secret-ish"))
    assert "secret-ish" not in repr(DatasetData(b"secret-ish"))


def test_registry_is_extensible_and_refuses_clashes() -> None:
    reg = MessageRegistry()

    @reg.register(0xE0)
    @dataclass(frozen=True)
    class TrainingStep(Message):
        step: int
        loss_bound: float
        tags: tuple[str, ...]

    msg = TrainingStep(3, 1, ["a"])
    assert msg.loss_bound == 1.0 and isinstance(msg.loss_bound, float)
    frame = encode_frame(msg, reg)
    decoder = FrameDecoder(registry=reg)
    assert decoder.feed(frame) == [msg]
    # Not known to the default registry.
    with pytest.raises(UnknownMessageType):
        FrameDecoder().feed(frame)

    with pytest.raises(ValueError, match="taken"):
        @reg.register(0xE0)
        @dataclass(frozen=True)
        class Other(Message):
            x: int

    with pytest.raises(TypeError, match="unsupported"):
        @reg.register(0x41)
        @dataclass(frozen=True)
        class BadField(Message):
            x: list[int]

    with pytest.raises(TypeError, match="frozen"):
        @reg.register(0x42)
        @dataclass
        class NotFrozen(Message):
            x: int

    with pytest.raises(InvalidMessage):
        encode_frame(msg)  # registered elsewhere, not in the default registry


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(st.sampled_from(ALL_TYPES), _cbor_values)
def test_arbitrary_cbor_payloads_decode_or_raise_malformed(cls: type[Message], value: object) -> None:
    payload = cbor2.dumps(value, canonical=True)
    try:
        msg = decode_payload(cls, payload)
    except MalformedFrame:
        return
    assert encode_payload(msg) == payload
