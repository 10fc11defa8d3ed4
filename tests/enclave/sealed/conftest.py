from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pytest

from enclave.sealed.format import SealedHeader, build_encryption_context
from enclave.sealed.stream import seal_stream

KEY = bytes(range(32))

# The known-answer schema: a 2x2 uint8 image column and a uint8 label.
KAT_SCHEMA = pa.schema(
    [
        pa.field("image", pa.list_(pa.uint8(), 4), nullable=False, metadata={b"shape": b"2x2"}),
        pa.field("label", pa.uint8(), nullable=False),
    ]
)
# Its Arrow IPC serialisation (enclave.sealed.records.schema_bytes), as the header carries it.
KAT_SCHEMA_BYTES = bytes.fromhex(
    "ffffffff300100001000000000000a000c000600050008000a000000000104000c00000008000800000004000800000004000000"
    "020000005c00000014000000100014000800000007000c00000010001000000000000002100000001c0000000400000000000000"
    "050000006c6162656c0006000a00040006000000080000000000120018000800000007000c000000100014001200000000000010"
    "18000000500000000800000018000000010000005800000005000000696d616765000000010000000c00000008000c0004000800"
    "0800000010000000040000000300000032783200050000007368617065000000c6ffffff04000000100014000800060007000c00"
    "000010001000000000000102100000001c0000000400000000000000040000006974656d00000600080004000600000008000000"
)


def make_header(chunk_size: int = 16, schema: bytes = KAT_SCHEMA_BYTES, **ctx_overrides: object) -> SealedHeader:
    ctx_args: dict = dict(
        dataset_id="kat-ds",
        owner="St. Example Hospital",
        max_epsilon=3.0,
        delta=1e-5,
        record_count=2,
        schema_sha256=hashlib.sha256(schema).hexdigest(),
        ledger="s3://kat-ledger/hermetic?owner=111122223333",
        ledger_public_key="11" * 32,
        model_owner_keys=["arn:aws:kms:us-east-1:111122223333:key/model-owner"],
    )
    ctx_args.update(ctx_overrides)
    return SealedHeader(
        key_id="arn:aws:kms:us-east-1:111122223333:key/kat",
        encrypted_data_key=bytes(range(48)),
        encryption_context=build_encryption_context(**ctx_args),
        chunk_size=chunk_size,
        schema=schema,
    )


def seal_bytes(payload: bytes, header: SealedHeader | None = None, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    seal_stream([payload], header or make_header(), key, out)
    return out.getvalue()


@pytest.fixture
def header() -> SealedHeader:
    return make_header()
