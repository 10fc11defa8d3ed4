from __future__ import annotations

import io

import pytest

from enclave.sealed.format import SealedHeader, build_encryption_context
from enclave.sealed.stream import seal_stream

KEY = bytes(range(32))


def make_header(chunk_size: int = 16, **ctx_overrides: object) -> SealedHeader:
    ctx_args: dict = dict(
        dataset_id="kat-ds",
        owner="St. Example Hospital",
        max_epsilon=3.0,
        delta=1e-5,
        record_count=2,
        schema_sha256="ab" * 32,
    )
    ctx_args.update(ctx_overrides)
    return SealedHeader(
        key_id="arn:aws:kms:us-east-1:111122223333:key/kat",
        encrypted_data_key=bytes(range(48)),
        encryption_context=build_encryption_context(**ctx_args),
        chunk_size=chunk_size,
    )


def seal_bytes(payload: bytes, header: SealedHeader | None = None, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    seal_stream([payload], header or make_header(), key, out)
    return out.getvalue()


@pytest.fixture
def header() -> SealedHeader:
    return make_header()
