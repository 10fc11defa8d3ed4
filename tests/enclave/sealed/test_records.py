from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.sealed.errors import (
    ChunkAuthenticationFailed,
    EncryptionContextMismatch,
    MalformedHeader,
    MalformedPayload,
    TruncatedSealedFile,
)
from enclave.sealed.format import CHECKPOINT_PAYLOAD, SealedHeader, build_checkpoint_context
from enclave.sealed.records import (
    field_shape,
    header_schema,
    iter_record_batches,
    read_table,
    schema_bytes,
    schema_sha256,
    verify_records,
)
from enclave.sealed.stream import iter_plaintext, read_header
from tests.support.checkpoints import TAG

from .conftest import KAT_SCHEMA, KAT_SCHEMA_BYTES, KEY, make_header, seal_bytes

# Known answer: the Fashion-MNIST schema as produced by parent.datasets for IDX pairs.
FMNIST_SCHEMA = pa.schema(
    [
        pa.field("image", pa.list_(pa.uint8(), 784), nullable=False, metadata={b"shape": b"28x28"}),
        pa.field("label", pa.uint8(), nullable=False),
    ]
)
FMNIST_SCHEMA_SHA256 = "c4b926af63812406b00517fdd240dad5782d09703729a263422b5d3f18583259"


def ipc_bytes(table: pa.Table, batch_rows: int = 3) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def table() -> pa.Table:
    return pa.table({"x": pa.array(np.arange(10, dtype=np.int64)), "s": [f"r{i}" for i in range(10)]})


def read_batches(data: bytes) -> list[pa.RecordBatch]:
    stream = io.BytesIO(data)
    header = read_header(stream)
    return list(iter_record_batches(iter_plaintext(stream, header, KEY)))


def test_schema_sha256_known_answer() -> None:
    assert schema_sha256(FMNIST_SCHEMA) == FMNIST_SCHEMA_SHA256


def test_schema_bytes_known_answer_is_what_the_hash_covers() -> None:
    assert schema_bytes(KAT_SCHEMA) == KAT_SCHEMA_BYTES
    assert schema_bytes(KAT_SCHEMA.with_metadata({b"pandas": b"{}"})) == KAT_SCHEMA_BYTES
    assert schema_sha256(KAT_SCHEMA) == hashlib.sha256(KAT_SCHEMA_BYTES).hexdigest()
    assert hashlib.sha256(schema_bytes(FMNIST_SCHEMA)).hexdigest() == FMNIST_SCHEMA_SHA256


def test_header_schema_gives_the_public_schema_with_field_metadata() -> None:
    assert header_schema(make_header()).equals(KAT_SCHEMA, check_metadata=True)
    fmnist = header_schema(make_header(schema=schema_bytes(FMNIST_SCHEMA)))
    assert field_shape(fmnist.field("image")) == (28, 28)
    assert fmnist.metadata is None


def test_header_schema_refuses_bytes_that_are_no_canonical_schema() -> None:
    with pytest.raises(MalformedHeader, match="not an Arrow schema"):
        header_schema(make_header(schema=b"\xff" * 64))
    with_metadata = KAT_SCHEMA.with_metadata({b"pandas": b"{}"}).serialize().to_pybytes()
    with pytest.raises(MalformedHeader, match="canonical"):
        header_schema(make_header(schema=with_metadata))


def test_header_schema_of_a_checkpoint_is_refused() -> None:
    ctx = build_checkpoint_context(job_id="j", spec_sha256="ab" * 32, step=1, auth_tag=TAG)
    header = SealedHeader(key_id="k", encrypted_data_key=b"x", encryption_context=ctx, payload=CHECKPOINT_PAYLOAD)
    with pytest.raises(EncryptionContextMismatch, match="not a dataset"):
        header_schema(header)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_header_schema_of_any_bytes_is_a_schema_or_a_typed_error(data: bytes) -> None:
    for blob in (data, KAT_SCHEMA_BYTES[:8] + data, KAT_SCHEMA_BYTES[: len(data)] + data[::-1]):
        try:
            schema = header_schema(make_header(schema=blob))
        except MalformedHeader:
            continue
        assert schema_bytes(schema) == blob


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(KAT_SCHEMA_BYTES) - 1), st.integers(min_value=1, max_value=255))
def test_a_flipped_schema_byte_parses_to_another_schema_or_is_refused(pos: int, xor: int) -> None:
    blob = bytearray(KAT_SCHEMA_BYTES)
    blob[pos] ^= xor
    try:
        schema = header_schema(make_header(schema=bytes(blob)))
    except MalformedHeader:
        return
    assert not schema.equals(KAT_SCHEMA, check_metadata=True)


def test_schema_sha256_ignores_schema_metadata_but_not_fields() -> None:
    assert schema_sha256(FMNIST_SCHEMA.with_metadata({b"pandas": b"{}"})) == FMNIST_SCHEMA_SHA256
    other_shape = FMNIST_SCHEMA.set(
        0, FMNIST_SCHEMA.field("image").with_metadata({b"shape": b"784"})
    )
    assert schema_sha256(other_shape) != FMNIST_SCHEMA_SHA256
    renamed = FMNIST_SCHEMA.set(1, FMNIST_SCHEMA.field("label").with_name("y"))
    assert schema_sha256(renamed) != FMNIST_SCHEMA_SHA256


def test_round_trip_record_batches() -> None:
    t = table()
    batches = read_batches(seal_bytes(ipc_bytes(t), header=make_header(chunk_size=64)))
    assert pa.Table.from_batches(batches).equals(t)
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]


def test_tamper_surfaces_as_typed_error_through_arrow() -> None:
    data = bytearray(seal_bytes(ipc_bytes(table()), header=make_header(chunk_size=64)))
    data[-40] ^= 0xFF  # inside the last (final) chunk
    with pytest.raises(ChunkAuthenticationFailed):
        read_batches(bytes(data))


def test_truncation_surfaces_through_arrow() -> None:
    header = make_header(chunk_size=64)
    payload = ipc_bytes(table())
    data = seal_bytes(payload, header=header)
    # Drop the final frame: u32 length + (payload % 64, or a full chunk) + 16-byte tag.
    tail = len(payload) % 64 or 64
    with pytest.raises(TruncatedSealedFile):
        read_batches(data[: -(4 + tail + 16)])


def test_bytes_after_arrow_end_of_stream() -> None:
    with pytest.raises(MalformedPayload, match="end-of-stream"):
        read_batches(seal_bytes(ipc_bytes(table()) + b"junk", header=make_header(chunk_size=64)))


def test_not_arrow() -> None:
    with pytest.raises(MalformedPayload):
        read_batches(seal_bytes(b"\x00" * 100 + b"definitely not arrow", header=make_header(chunk_size=64)))


def test_verify_records() -> None:
    t = table()
    header = make_header(record_count=10, schema=schema_bytes(t.schema))
    verify_records(header, t.schema, 10)
    with pytest.raises(EncryptionContextMismatch, match="records"):
        verify_records(header, t.schema, 9)
    with pytest.raises(EncryptionContextMismatch, match="schema"):
        verify_records(header, FMNIST_SCHEMA, 10)


def test_field_shape() -> None:
    assert field_shape(FMNIST_SCHEMA.field("image")) == (28, 28)
    assert field_shape(FMNIST_SCHEMA.field("label")) is None
    with pytest.raises(MalformedPayload):
        field_shape(pa.field("x", pa.uint8(), metadata={b"shape": b"28xA"}))
    with pytest.raises(MalformedPayload):
        field_shape(pa.field("x", pa.uint8(), metadata={b"shape": b"0x3"}))


def test_read_table_keeps_schema_of_empty_payload() -> None:
    empty = table().slice(0, 0)
    data = seal_bytes(ipc_bytes(empty), header=make_header(chunk_size=64))
    stream = io.BytesIO(data)
    got = read_table(iter_plaintext(stream, read_header(stream), KEY))
    assert got.num_rows == 0 and got.schema.equals(empty.schema)
    stream = io.BytesIO(seal_bytes(ipc_bytes(table()), header=make_header(chunk_size=64)))
    assert read_table(iter_plaintext(stream, read_header(stream), KEY)).equals(table())


def test_read_table_surfaces_trailing_payload() -> None:
    stream = io.BytesIO(seal_bytes(ipc_bytes(table()) + b"junk", header=make_header(chunk_size=64)))
    with pytest.raises(MalformedPayload):
        read_table(iter_plaintext(stream, read_header(stream), KEY))
