from __future__ import annotations

import hashlib
import io
import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import SealedDataError
from enclave.sealed.errors import (
    BadMagic,
    EncryptionContextMismatch,
    MalformedHeader,
    SchemaMismatch,
    TruncatedSealedFile,
    UnsupportedVersion,
)
from enclave.sealed.format import (
    CHECKPOINT_PAYLOAD,
    MAX_HEADER_SIZE,
    MAX_SCHEMA_SIZE,
    SealedHeader,
    build_checkpoint_context,
    build_encryption_context,
    check_encryption_context,
)
from enclave.sealed.stream import read_header
from tests.support.checkpoints import TAG

from .conftest import KAT_SCHEMA_BYTES, make_header

# Known answer: the encoding of conftest.make_header() (chunk_size 16).
KAT_PREAMBLE = bytes.fromhex(
    "48524d545345414c000100000393a763616c676b4145532d3235362d47434d666b65795f6964782a61726e3a"
    "6177733a6b6d733a75732d656173742d313a3131313132323232333333333a6b65792f6b617466736368656d"
    "61590138ffffffff300100001000000000000a000c000600050008000a000000000104000c00000008000800"
    "000004000800000004000000020000005c00000014000000100014000800000007000c000000100010000000"
    "00000002100000001c0000000400000000000000050000006c6162656c0006000a0004000600000008000000"
    "0000120018000800000007000c00000010001400120000000000001018000000500000000800000018000000"
    "010000005800000005000000696d616765000000010000000c00000008000c00040008000800000010000000"
    "040000000300000032783200050000007368617065000000c6ffffff04000000100014000800060007000c00"
    "000010001000000000000102100000001c0000000400000000000000040000006974656d0000060008000400"
    "0600000008000000677061796c6f6164706172726f772d6970632d73747265616d6a6368756e6b5f73697a65"
    "1072656e637279707465645f646174615f6b65795830000102030405060708090a0b0c0d0e0f101112131415"
    "161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f72656e6372797074696f6e5f636f6e746578"
    "74aa6564656c74616531652d3035656f776e65727453742e204578616d706c6520486f73706974616c666c65"
    "64676572782b73333a2f2f6b61742d6c65646765722f6865726d657469633f6f776e65723d31313131323232"
    "32333333336a646174617365745f6964666b61742d64736b6d61785f657073696c6f6e63332e306c7265636f"
    "72645f636f756e7461326d736368656d615f7368613235367840313261383133353132663030306336626264"
    "3334666433663039653932653866323533303539373061643830313361626430626234313332613438616137"
    "39396f6865726d657469633a666f726d6174697365616c65642d7631706d6f64656c5f6f776e65725f6b6579"
    "73783261726e3a6177733a6b6d733a75732d656173742d313a3131313132323232333333333a6b65792f6d6f"
    "64656c2d6f776e6572716c65646765725f7075626c69635f6b65797840313131313131313131313131313131"
    "3131313131313131313131313131313131313131313131313131313131313131313131313131313131313131"
    "3131313131"
)
KAT_HEADER_HASH = "10b05d9fd9f8520fa374f34f7a4f039709360b44732dec0f6220c4df942fbcba"


def test_known_answer_encoding() -> None:
    header = make_header()
    encoded = header.encode()
    assert encoded == KAT_PREAMBLE
    assert header.header_hash.hex() == KAT_HEADER_HASH
    assert hashlib.sha256(KAT_PREAMBLE).hexdigest() == KAT_HEADER_HASH


def test_known_answer_layout_matches_spec() -> None:
    # Parse the KAT independently of the module: magic, u16 version, u32 length, CBOR map.
    magic, version, length = struct.unpack(">8sHI", KAT_PREAMBLE[:14])
    assert (magic, version, length) == (b"HRMTSEAL", 1, len(KAT_PREAMBLE) - 14)
    body = cbor2.loads(KAT_PREAMBLE[14:])
    assert body["alg"] == "AES-256-GCM"
    assert body["payload"] == "arrow-ipc-stream"
    assert body["chunk_size"] == 16
    assert body["encrypted_data_key"] == bytes(range(48))
    assert body["encryption_context"]["hermetic:format"] == "sealed-v1"
    assert body["encryption_context"]["max_epsilon"] == "3.0"
    assert body["encryption_context"]["delta"] == "1e-05"
    assert body["encryption_context"]["record_count"] == "2"
    assert body["schema"] == KAT_SCHEMA_BYTES
    assert body["encryption_context"]["schema_sha256"] == hashlib.sha256(KAT_SCHEMA_BYTES).hexdigest()
    assert body["encryption_context"]["ledger"] == "s3://kat-ledger/hermetic?owner=111122223333"
    assert body["encryption_context"]["ledger_public_key"] == "11" * 32
    assert body["encryption_context"]["model_owner_keys"] == "arn:aws:kms:us-east-1:111122223333:key/model-owner"
    # By hand: "model_owner_keys" is a text of 16 (0x70), sorted among keys of its length after
    # "hermetic:format" (15) and before "ledger_public_key" (17), its value a text of 50 (0x78 0x32);
    # the context map has 10 entries (0xaa).
    ctx_start = KAT_PREAMBLE.index(b"encryption_context") + len(b"encryption_context")
    assert KAT_PREAMBLE[ctx_start] == 0xAA
    entry = b"\x70model_owner_keys\x78\x32arn:aws:kms:us-east-1:111122223333:key/model-owner"
    assert entry in KAT_PREAMBLE
    assert KAT_PREAMBLE.index(b"\x6fhermetic:format") < KAT_PREAMBLE.index(entry) < KAT_PREAMBLE.index(
        b"\x71ledger_public_key")
    assert set(body) == {"key_id", "encrypted_data_key", "encryption_context", "alg", "chunk_size", "payload", "schema"}
    assert KAT_PREAMBLE[14:] == cbor2.dumps(body, canonical=True)


def test_decode_round_trip_and_accessors() -> None:
    header = SealedHeader.decode(KAT_PREAMBLE)
    assert header == make_header()
    assert header.max_epsilon == 3.0 and header.delta == 1e-5
    assert header.record_count == 2
    assert header.dataset_id == "kat-ds" and header.owner == "St. Example Hospital"
    assert header.schema_sha256 == hashlib.sha256(KAT_SCHEMA_BYTES).hexdigest()
    assert header.schema == KAT_SCHEMA_BYTES
    assert read_header(io.BytesIO(KAT_PREAMBLE + b"rest")) == header


def test_context_is_read_only_copy() -> None:
    ctx = build_encryption_context(
        dataset_id="d", owner="o", max_epsilon=1, delta=0.5, record_count=0,
        schema_sha256=hashlib.sha256(b"s").hexdigest(),
        ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
        model_owner_keys=["k"],
    )
    header = SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, schema=b"s")
    before = header.encode()
    ctx["owner"] = "mallory"
    assert header.owner == "o" and header.encode() == before
    with pytest.raises(TypeError):
        header.encryption_context["owner"] = "mallory"  # type: ignore[index]


def _with_body(obj: object) -> bytes:
    body = cbor2.dumps(obj, canonical=True)
    return struct.pack(">8sHI", b"HRMTSEAL", 1, len(body)) + body


def _kat_body() -> dict:
    return cbor2.loads(KAT_PREAMBLE[14:])


def test_bad_magic() -> None:
    with pytest.raises(BadMagic):
        read_header(io.BytesIO(b"NOTSEALD" + KAT_PREAMBLE[8:]))
    with pytest.raises(BadMagic):
        read_header(io.BytesIO(b"PK\x03"))


def test_unsupported_version() -> None:
    data = KAT_PREAMBLE[:8] + struct.pack(">H", 2) + KAT_PREAMBLE[10:]
    with pytest.raises(UnsupportedVersion):
        read_header(io.BytesIO(data))


@pytest.mark.parametrize("length", [0, MAX_HEADER_SIZE + 1, 2**32 - 1])
def test_header_length_bounds(length: int) -> None:
    data = KAT_PREAMBLE[:10] + struct.pack(">I", length) + b"\0" * 32
    with pytest.raises(MalformedHeader):
        read_header(io.BytesIO(data))


@pytest.mark.parametrize("cut", [0, 3, 8, 13, 20, len(KAT_PREAMBLE) - 1])
def test_truncated_header(cut: int) -> None:
    with pytest.raises(TruncatedSealedFile):
        read_header(io.BytesIO(KAT_PREAMBLE[:cut]))


def test_non_canonical_cbor_rejected() -> None:
    body = _kat_body()
    # The same map with its keys in reverse order is valid CBOR but not canonical.
    encoded = cbor2.dumps(dict(reversed(list(body.items()))))
    assert encoded != cbor2.dumps(body, canonical=True)
    data = struct.pack(">8sHI", b"HRMTSEAL", 1, len(encoded)) + encoded
    with pytest.raises(MalformedHeader, match="canonical"):
        SealedHeader.decode(data)


def test_trailing_bytes_inside_header_rejected() -> None:
    body = cbor2.dumps(_kat_body(), canonical=True) + b"\x00"
    data = struct.pack(">8sHI", b"HRMTSEAL", 1, len(body)) + body
    with pytest.raises(MalformedHeader):
        SealedHeader.decode(data)


def test_indefinite_length_rejected() -> None:
    body = bytearray(cbor2.dumps(_kat_body(), canonical=True))
    body[0] = 0xBF  # indefinite-length map ...
    body += b"\xff"  # ... with its break
    data = struct.pack(">8sHI", b"HRMTSEAL", 1, len(body)) + bytes(body)
    with pytest.raises(MalformedHeader):
        SealedHeader.decode(data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("alg"),
        lambda b: b.update(extra=1),
        lambda b: b.update(alg="AES-128-GCM"),
        lambda b: b.update(payload="parquet"),
        lambda b: b.update(chunk_size=15),
        lambda b: b.update(chunk_size=16 * 1024 * 1024 + 1),
        lambda b: b.update(chunk_size=True),
        lambda b: b.update(key_id=""),
        lambda b: b.update(encrypted_data_key="text"),
        lambda b: b.update(encrypted_data_key=b""),
        lambda b: b["encryption_context"].pop("delta"),
        lambda b: b["encryption_context"].update(extra="x"),
        lambda b: b["encryption_context"].update({"hermetic:format": "sealed-v2"}),
        lambda b: b["encryption_context"].update(max_epsilon="inf"),
        lambda b: b["encryption_context"].update(max_epsilon="0.0"),
        lambda b: b["encryption_context"].update(max_epsilon="3"),  # not canonical "3.0"
        lambda b: b["encryption_context"].update(delta="1.0"),
        lambda b: b["encryption_context"].update(record_count="-1"),
        lambda b: b["encryption_context"].update(record_count="007"),
        lambda b: b["encryption_context"].update(schema_sha256="AB" * 32),
        lambda b: b["encryption_context"].update(owner=""),
        lambda b: b["encryption_context"].update(owner=5),
        lambda b: b.update(encryption_context=[1, 2]),
        lambda b: b.update(schema=KAT_SCHEMA_BYTES.hex()),
        lambda b: b.update(schema=None),
        lambda b: b.update(schema=b""),
        lambda b: b.update(schema=b"\x00" * (48 * 1024 + 1)),
    ],
)
def test_invalid_fields_rejected(mutate) -> None:
    body = _kat_body()
    mutate(body)
    with pytest.raises(MalformedHeader):
        SealedHeader.decode(_with_body(body))


def test_header_not_a_map() -> None:
    with pytest.raises(MalformedHeader):
        SealedHeader.decode(_with_body([1, 2, 3]))


def test_oversized_header_cannot_be_encoded() -> None:
    schema = b"s" * MAX_SCHEMA_SIZE
    header = SealedHeader(
        key_id="k" * 2048,
        encrypted_data_key=b"x" * 6144,
        encryption_context=build_encryption_context(
            dataset_id="d" * 1024, owner="o" * 1024, max_epsilon=1.0000000000000002, delta=0.1,
            record_count=10**1023, schema_sha256=hashlib.sha256(schema).hexdigest(),
            ledger="local:/" + "l" * 1017, ledger_public_key="ab" * 32,
            model_owner_keys=[f"{i}" + "k" * 203 for i in range(5)],
        ),
        schema=schema,
    )
    assert len(header.encode()) < MAX_HEADER_SIZE  # the field limits keep headers small


# -- the public schema ------------------------------------------------------------


def test_schema_bytes_that_do_not_hash_to_the_context_are_refused() -> None:
    body = _kat_body()
    body["schema"] = KAT_SCHEMA_BYTES[:-1] + b"\x01"
    with pytest.raises(SchemaMismatch, match="header schema hashes to .* the encryption context says"):
        SealedHeader.decode(_with_body(body))
    with pytest.raises(SchemaMismatch):
        read_header(io.BytesIO(_with_body(body)))
    assert issubclass(SchemaMismatch, SealedDataError)


def test_a_header_cannot_be_built_with_another_schema() -> None:
    with pytest.raises(SchemaMismatch):
        make_header(schema=b"another schema", schema_sha256=hashlib.sha256(KAT_SCHEMA_BYTES).hexdigest())


def test_a_dataset_header_must_carry_its_schema() -> None:
    with pytest.raises(MalformedHeader, match="must carry its schema"):
        make_header(schema=b"")


def test_a_checkpoint_header_carries_no_schema() -> None:
    ctx = build_checkpoint_context(job_id="j", spec_sha256="ab" * 32, step=1, auth_tag=TAG)
    header = SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, payload=CHECKPOINT_PAYLOAD)
    assert header.schema == b"" and cbor2.loads(header.header_bytes())["schema"] == b""
    assert SealedHeader.decode(header.encode()) == header
    with pytest.raises(MalformedHeader, match="carries no schema"):
        SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, payload=CHECKPOINT_PAYLOAD,
                     schema=KAT_SCHEMA_BYTES)


def test_a_header_from_before_the_schema_is_refused_by_name() -> None:
    body = _kat_body()
    del body["schema"]
    with pytest.raises(MalformedHeader, match="carries no schema .* seal the data again"):
        SealedHeader.decode(_with_body(body))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2048))
def test_any_schema_bytes_round_trip_exactly_when_the_context_binds_them(schema: bytes) -> None:
    header = make_header(schema=schema)
    assert SealedHeader.decode(header.encode()).schema == schema
    body = cbor2.loads(header.encode()[14:])
    body["schema"] = schema + b"\x00"
    with pytest.raises(SchemaMismatch):
        SealedHeader.decode(_with_body(body))


def test_check_encryption_context() -> None:
    header = make_header()
    check_encryption_context(header, {"dataset_id": "kat-ds", "max_epsilon": "3.0"})
    with pytest.raises(EncryptionContextMismatch, match="max_epsilon"):
        check_encryption_context(header, {"max_epsilon": "30.0"})
    with pytest.raises(EncryptionContextMismatch, match="lacks"):
        check_encryption_context(header, {"job": "x"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_typed_errors(data: bytes) -> None:
    for blob in (data, KAT_PREAMBLE[:14] + data, KAT_PREAMBLE[:10] + struct.pack(">I", len(data)) + data):
        try:
            read_header(io.BytesIO(blob))
        except SealedDataError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(KAT_PREAMBLE) - 1), st.integers(min_value=1, max_value=255))
def test_any_header_byte_flip_is_rejected_or_changes_hash(pos: int, xor: int) -> None:
    data = bytearray(KAT_PREAMBLE)
    data[pos] ^= xor
    try:
        header = read_header(io.BytesIO(bytes(data)))
    except SealedDataError:
        return
    # A flip that still parses must change the header hash, which every chunk's AAD binds.
    assert header.header_hash.hex() != KAT_HEADER_HASH


# -- the budget ledger in the context ------------------------------------------------


def test_a_dataset_sealed_before_the_ledger_is_refused_by_name() -> None:
    body = _kat_body()
    del body["encryption_context"]["ledger"], body["encryption_context"]["ledger_public_key"]
    with pytest.raises(MalformedHeader, match="sealed before datasets had a budget ledger"):
        read_header(io.BytesIO(_with_body(body)))


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("ledger", "file:///tmp/x", "ledger location starts with"),
    ("ledger", "local:relative/dir", "ABSOLUTE"),
    ("ledger_public_key", "AB" * 32, "64 lowercase hex"),
    ("ledger_public_key", "ab" * 31, "64 lowercase hex"),
])
def test_a_malformed_ledger_in_the_context_is_refused(key: str, value: str, reason: str) -> None:
    body = _kat_body()
    body["encryption_context"][key] = value
    with pytest.raises(MalformedHeader, match=reason):
        read_header(io.BytesIO(_with_body(body)))


def test_the_header_names_its_ledger() -> None:
    header = make_header()
    assert header.ledger_location == "s3://kat-ledger/hermetic?owner=111122223333"
    assert header.ledger_public_key == bytes([0x11]) * 32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("b,a", "not sorted, distinct"),
        ("a,a", "not sorted, distinct"),
        ("a,", "is not a KMS key"),
        ("a b", "is not a KMS key"),
    ],
)
def test_model_owner_keys_have_one_canonical_form(value: str, message: str) -> None:
    ctx = dict(make_header().encryption_context)
    ctx["model_owner_keys"] = value
    with pytest.raises(MalformedHeader, match=message):
        SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, schema=KAT_SCHEMA_BYTES)


def test_a_dataset_sealed_before_model_owner_keys_is_refused_by_name() -> None:
    ctx = dict(make_header().encryption_context)
    del ctx["model_owner_keys"]
    with pytest.raises(MalformedHeader, match="no model_owner_keys .* --model-owner-key"):
        SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, schema=KAT_SCHEMA_BYTES)
    assert make_header(model_owner_keys=["b", "a", "b"]).model_owner_keys == ("a", "b")
