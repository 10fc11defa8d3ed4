"""The budget ledger's Ed25519 signing key, derived from a dataset's data key.

The 32-byte seed is HKDF-SHA256(data key, salt = the dataset id's UTF-8 bytes,
info = b"hermetic ledger signing key v1"). Only holders of the data key (the data
owner at sealing, attested enclaves after KMS released it) can derive it, so only
they can sign ledger entries; anyone with the public key (in the dataset's
encryption context) can check them.
"""
from __future__ import annotations

from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.errors import ConfigError, HermeticError

__all__ = ["LEDGER_KEY_INFO", "PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "LedgerSigningKey", "verify_signature"]

LEDGER_KEY_INFO = b"hermetic ledger signing key v1"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_DATA_KEY_BYTES = 32


class LedgerKeyNotSerialisable(HermeticError, TypeError):
    """Someone tried to pickle or copy a ledger signing key (it must stay where it was derived)."""


class LedgerSigningKey:
    """Ed25519 private key of one dataset's ledger; never printed, pickled or copied."""

    def __init__(self, data_key: bytes, dataset_id: str) -> None:
        if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != _DATA_KEY_BYTES:
            raise ConfigError("a ledger signing key is derived from a 32-byte data key")
        if not isinstance(dataset_id, str) or not dataset_id:
            raise ConfigError("a ledger signing key needs the dataset id")
        seed = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=dataset_id.encode("utf-8"), info=LEDGER_KEY_INFO
        ).derive(bytes(data_key))
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"LedgerSigningKey(public_key={self.public_key_hex})"

    def _refuse(self, *_: object) -> NoReturn:
        raise LedgerKeyNotSerialisable("a ledger signing key cannot be pickled or copied")

    __getstate__ = _refuse
    __reduce__ = _refuse
    __reduce_ex__ = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `message` under the raw `public_key`."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
