from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest

from enclave.sealed.errors import (
    ChunkAuthenticationFailed,
    EncryptionContextMismatch,
    MalformedPayload,
    TruncatedSealedFile,
)
from enclave.sealed.records import field_shape, iter_record_batches, read_table, schema_sha256, verify_records
from enclave.sealed.stream import iter_plaintext, read_header

from .conftest import KEY, make_header, seal_bytes

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
    header = make_header(record_count=10, schema_sha256=schema_sha256(t.schema))
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
