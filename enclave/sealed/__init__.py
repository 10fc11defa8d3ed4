"""Sealed datasets: the sealed-v1 file format, streaming seal/open, Arrow payload helpers.

A sealed file is a header (bound into KMS through its encryption context) followed
by chunked AES-256-GCM ciphertext of an Arrow IPC stream (datasets) or of a training
checkpoint (payload "hermetic-checkpoint-v1"). See `format` and `stream`.
"""
from __future__ import annotations

from collections.abc import Mapping

from enclave.sealed.errors import (
    BadMagic,
    ChunkAuthenticationFailed,
    ChunkTooLarge,
    EncryptionContextMismatch,
    InvalidDataKey,
    MalformedChunk,
    MalformedHeader,
    MalformedPayload,
    TrailingData,
    TruncatedSealedFile,
    UnsupportedVersion,
)
from enclave.sealed.format import (
    CHECKPOINT_CONTEXT_KEYS,
    CHECKPOINT_PAYLOAD,
    DEFAULT_CHUNK_SIZE,
    ENCRYPTION_CONTEXT_KEYS,
    MAX_CHUNK_SIZE,
    MAX_HEADER_SIZE,
    MIN_CHUNK_SIZE,
    PAYLOAD,
    SealedHeader,
    build_checkpoint_context,
    build_encryption_context,
    format_context_float,
)
from enclave.sealed.records import (
    SHAPE_METADATA_KEY,
    field_shape,
    format_shape,
    iter_record_batches,
    read_table,
    schema_sha256,
    verify_records,
)
from enclave.sealed.stream import SealWriter, iter_plaintext, read_header, seal_stream


def check_encryption_context(header: SealedHeader, expected: Mapping[str, str]) -> None:
    """Raise EncryptionContextMismatch unless every expected entry is in the header's context."""
    actual = header.encryption_context
    for key in sorted(expected):
        if key not in actual:
            raise EncryptionContextMismatch(f"encryption context lacks {key!r}")
        if actual[key] != expected[key]:
            raise EncryptionContextMismatch(
                f"encryption context {key!r} is {actual[key]!r}, expected {expected[key]!r}"
            )


__all__ = [
    "BadMagic",
    "CHECKPOINT_CONTEXT_KEYS",
    "CHECKPOINT_PAYLOAD",
    "ChunkAuthenticationFailed",
    "ChunkTooLarge",
    "DEFAULT_CHUNK_SIZE",
    "ENCRYPTION_CONTEXT_KEYS",
    "EncryptionContextMismatch",
    "InvalidDataKey",
    "MAX_CHUNK_SIZE",
    "MAX_HEADER_SIZE",
    "MIN_CHUNK_SIZE",
    "MalformedChunk",
    "MalformedHeader",
    "MalformedPayload",
    "PAYLOAD",
    "SHAPE_METADATA_KEY",
    "SealWriter",
    "SealedHeader",
    "TrailingData",
    "TruncatedSealedFile",
    "UnsupportedVersion",
    "build_checkpoint_context",
    "build_encryption_context",
    "check_encryption_context",
    "field_shape",
    "format_context_float",
    "format_shape",
    "iter_plaintext",
    "iter_record_batches",
    "read_header",
    "read_table",
    "schema_sha256",
    "seal_stream",
    "verify_records",
]
