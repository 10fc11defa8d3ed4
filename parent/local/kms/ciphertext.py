"""The emulator's own opaque CiphertextBlob format (real KMS blobs are opaque too).

    magic "HKC1" | key id (36 ASCII, a UUID) | nonce (12) | AES-256-GCM ciphertext+tag

The associated data binds the header and the canonical encryption context, so a
blob decrypts only under its key and with exactly the context it was made with.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parent.local.kms.errors import InvalidCiphertextException

MAGIC = b"HKC1"
KEY_ID_LEN = 36
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = len(MAGIC) + KEY_ID_LEN
MIN_BLOB_LEN = HEADER_LEN + NONCE_LEN + TAG_LEN


def canonical_context(context: Mapping[str, str]) -> bytes:
    """Order-independent, unambiguous bytes of an encryption context."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def key_id_of(blob: bytes) -> str:
    """The key id a blob names, without decrypting; InvalidCiphertext if malformed."""
    if len(blob) < MIN_BLOB_LEN or blob[: len(MAGIC)] != MAGIC:
        raise InvalidCiphertextException("The ciphertext is not a valid KMS ciphertext blob.")
    raw = blob[len(MAGIC) : HEADER_LEN]
    try:
        key_id = raw.decode("ascii")
        if str(uuid.UUID(key_id)) != key_id:
            raise ValueError(key_id)
    except ValueError:
        raise InvalidCiphertextException("The ciphertext is not a valid KMS ciphertext blob.") from None
    return key_id


def seal(material: bytes, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
    header = MAGIC + key_id.encode("ascii")
    if len(header) != HEADER_LEN:
        raise ValueError("key id must be a 36-character UUID")
    nonce = os.urandom(NONCE_LEN)
    return header + nonce + AESGCM(material).encrypt(nonce, plaintext, header + canonical_context(context))


def unseal(material: bytes, blob: bytes, context: Mapping[str, str]) -> bytes:
    key_id_of(blob)
    header = blob[:HEADER_LEN]
    nonce = blob[HEADER_LEN : HEADER_LEN + NONCE_LEN]
    try:
        return AESGCM(material).decrypt(nonce, blob[HEADER_LEN + NONCE_LEN :], header + canonical_context(context))
    except InvalidTag:
        raise InvalidCiphertextException(
            "The ciphertext or encryption context is not valid for this key."
        ) from None
