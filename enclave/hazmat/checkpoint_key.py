"""The key that authenticates training checkpoints, derived from the datasets' data keys.

For one dataset the 32-byte HMAC-SHA256 key is HKDF-SHA256(data key, salt = the
dataset id's UTF-8 bytes, info = b"hermetic checkpoint auth key v1"). Only holders
of the data key (the data owner, attested enclaves after KMS released it) can
derive it, so the model owner, who can decrypt and re-seal checkpoints under their
own KMS key, cannot make a tag the enclave accepts. With several datasets each one's
key is derived the same way and the HMAC key is HKDF-SHA256 over their
concatenation in the job's dataset order (salt empty, the same info): every data
owner's key is then needed.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.errors import ConfigError, HermeticError

__all__ = ["CHECKPOINT_AUTH_INFO", "TAG_BYTES", "CheckpointAuthKey"]

CHECKPOINT_AUTH_INFO = b"hermetic checkpoint auth key v1"
TAG_BYTES = 32
_DATA_KEY_BYTES = 32


class CheckpointKeyNotSerialisable(HermeticError, TypeError):
    """Someone tried to pickle or copy a checkpoint authentication key."""


def _derive(ikm: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=CHECKPOINT_AUTH_INFO).derive(ikm)


class CheckpointAuthKey:
    """HMAC-SHA256 key for checkpoint tags; never printed, pickled or copied."""

    def __init__(self, data_keys: Sequence[tuple[str, bytes]]) -> None:
        """`data_keys`: (dataset id, data key) of every sealed dataset, in the job's order."""
        if not data_keys:
            raise ConfigError("a checkpoint key is derived from at least one dataset's data key")
        derived = []
        for dataset_id, data_key in data_keys:
            if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != _DATA_KEY_BYTES:
                raise ConfigError("a checkpoint key is derived from 32-byte data keys")
            if not isinstance(dataset_id, str) or not dataset_id:
                raise ConfigError("a checkpoint key needs the dataset id")
            derived.append(_derive(bytes(data_key), dataset_id.encode("utf-8")))
        self._key = derived[0] if len(derived) == 1 else _derive(b"".join(derived), b"")

    def tag(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, tag: bytes) -> bool:
        """Whether `tag` is this key's tag of `message` (constant-time compare)."""
        return hmac.compare_digest(self.tag(message), bytes(tag))

    def __repr__(self) -> str:
        return "CheckpointAuthKey(<secret>)"

    def _refuse(self, *_: object) -> NoReturn:
        raise CheckpointKeyNotSerialisable("a checkpoint authentication key cannot be pickled or copied")

    __getstate__ = _refuse
    __reduce__ = _refuse
    __reduce_ex__ = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse
