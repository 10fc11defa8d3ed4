"""Narrow error types for sealed datasets; all derive from SealedDataError."""
from __future__ import annotations

from enclave.errors import SealedDataError


class BadMagic(SealedDataError):
    """The file does not start with the sealed-file magic."""


class UnsupportedVersion(SealedDataError):
    """The sealed-file version is not one this code reads."""


class MalformedHeader(SealedDataError):
    """The header is too large, not canonical CBOR, or has invalid fields."""


class SchemaMismatch(MalformedHeader):
    """The header's schema bytes do not hash to the encryption context's schema_sha256."""


class InvalidDataKey(SealedDataError):
    """The data key is not a 256-bit AES key."""


class ChunkAuthenticationFailed(SealedDataError):
    """A chunk's GCM tag did not verify (tampered, bit-flipped or reordered)."""

    def __init__(self, index: int, detail: str = "") -> None:
        self.index = index
        suffix = f": {detail}" if detail else ""
        super().__init__(
            f"chunk {index} failed authentication (tampered, corrupted or out of order){suffix}"
        )


class MalformedChunk(SealedDataError):
    """An authentic chunk violates the chunking rules (wrong size, shorter than a tag)."""


class ChunkTooLarge(SealedDataError):
    """A chunk's declared length exceeds the header's chunk size or the hard limit."""


class TruncatedSealedFile(SealedDataError):
    """The file ends early: a short read, or no final chunk."""


class TrailingData(SealedDataError):
    """Bytes follow the final chunk."""


class MalformedPayload(SealedDataError):
    """The decrypted payload is not a well-formed Arrow IPC stream."""


class EncryptionContextMismatch(SealedDataError):
    """The header's encryption context or records disagree with what was expected."""
