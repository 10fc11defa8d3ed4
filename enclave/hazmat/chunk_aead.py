"""AES-256-GCM for the chunks of one sealed stream.

Chunk i is sealed under the file's data key with

    nonce_i = i as 11-byte big-endian || final flag (0x00 or 0x01)
    aad_i   = b"hermetic-sealed-v1" || header_hash || i as u64 big-endian || final flag

so a chunk cannot move to another index, another file or across the end of the stream.
"""
from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.sealed.errors import InvalidDataKey

__all__ = ["AAD_PREFIX", "KEY_SIZE", "TAG_SIZE", "ChunkAead", "chunk_aad", "chunk_nonce"]

AAD_PREFIX = b"hermetic-sealed-v1"
TAG_SIZE = 16
KEY_SIZE = 32


def chunk_nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def chunk_aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return AAD_PREFIX + header_hash + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class ChunkAead:
    """Seals and opens chunk i of the stream whose header hashes to `header_hash`."""

    __slots__ = ("_aead", "_header_hash")

    def __init__(self, data_key: bytes, header_hash: bytes) -> None:
        if len(data_key) != KEY_SIZE:
            raise InvalidDataKey(f"data key must be {KEY_SIZE} bytes, got {len(data_key)}")
        self._aead = AESGCM(bytes(data_key))
        self._header_hash = bytes(header_hash)

    def open(self, index: int, final: bool, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None when the tag does not verify for this index and flag."""
        try:
            return self._aead.decrypt(
                chunk_nonce(index, final), ciphertext, chunk_aad(self._header_hash, index, final)
            )
        except InvalidTag:
            return None

    def seal_into(self, index: int, final: bool, plaintext: memoryview, out: memoryview) -> None:
        """Ciphertext and tag of `plaintext` into `out` (exactly len(plaintext) + TAG_SIZE bytes)."""
        self._aead.encrypt_into(
            chunk_nonce(index, final), plaintext, chunk_aad(self._header_hash, index, final), out
        )
