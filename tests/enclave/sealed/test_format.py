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
    TruncatedSealedFile,
    UnsupportedVersion,
)
from enclave.sealed.format import MAX_HEADER_SIZE, SealedHeader, build_encryption_context, check_encryption_context
from enclave.sealed.stream import read_header

from .conftest import make_header

# Known answer: the encoding of conftest.make_header() (chunk_size 16).
KAT_PREAMBLE = bytes.fromhex(
    "48524d545345414c000100000184a663616c676b4145532d3235362d47434d666b65795f6964782a61726e"
    "3a6177733a6b6d733a75732d656173742d313a3131313132323232333333333a6b65792f6b617467706179"
    "6c6f6164706172726f772d6970632d73747265616d6a6368756e6b5f73697a651072656e63727970746564"
    "5f646174615f6b65795830000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f72656e6372797074696f6e5f636f6e74657874a76564656c746165"
    "31652d3035656f776e65727453742e204578616d706c6520486f73706974616c6a646174617365745f6964"
    "666b61742d64736b6d61785f657073696c6f6e63332e306c7265636f72645f636f756e7461326d73636865"
    "6d615f7368613235367840616261626162616261626162616261626162616261626162616261626162616261"
    "626162616261626162616261626162616261626162616261626162616261626f6865726d657469633a666f72"
    "6d6174697365616c65642d7631"
)
KAT_HEADER_HASH = "0f8f9f027b00ef1f87f760ba15900fea69f5522c7aaff6800f709d87eb44a286"


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
    assert KAT_PREAMBLE[14:] == cbor2.dumps(body, canonical=True)


def test_decode_round_trip_and_accessors() -> None:
    header = SealedHeader.decode(KAT_PREAMBLE)
    assert header == make_header()
    assert header.max_epsilon == 3.0 and header.delta == 1e-5
    assert header.record_count == 2
    assert header.dataset_id == "kat-ds" and header.owner == "St. Example Hospital"
    assert header.schema_sha256 == "ab" * 32
    assert read_header(io.BytesIO(KAT_PREAMBLE + b"rest")) == header


def test_context_is_read_only_copy() -> None:
    ctx = build_encryption_context(
        dataset_id="d", owner="o", max_epsilon=1, delta=0.5, record_count=0, schema_sha256="0" * 64
    )
    header = SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx)
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
    header = SealedHeader(
        key_id="k" * 2048,
        encrypted_data_key=b"x" * 6144,
        encryption_context=build_encryption_context(
            dataset_id="d" * 1024, owner="o" * 1024, max_epsilon=1, delta=0.1,
            record_count=1, schema_sha256="0" * 64,
        ),
    )
    assert len(header.encode()) < MAX_HEADER_SIZE  # the field limits keep headers small


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
