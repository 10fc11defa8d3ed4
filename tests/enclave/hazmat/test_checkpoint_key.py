from __future__ import annotations

import copy
import hashlib
import hmac
import pickle

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.errors import ConfigError
from enclave.hazmat.checkpoint_key import CHECKPOINT_AUTH_INFO, CheckpointAuthKey, CheckpointKeyNotSerialisable

DATA_KEY = bytes(range(32))


def test_one_dataset_key_is_hkdf_of_its_data_key_salted_with_its_id() -> None:
    assert CHECKPOINT_AUTH_INFO == b"hermetic checkpoint auth key v1"
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"train-v1", info=CHECKPOINT_AUTH_INFO).derive(DATA_KEY)
    key = CheckpointAuthKey([("train-v1", DATA_KEY)])
    assert key.tag(b"m") == hmac.new(expected, b"m", hashlib.sha256).digest()
    # Known answer: pins the derivation against silent change.
    assert key.tag(b"m").hex() == "78a5293d2240466102c4469cf57f7622fb2387ffc09ccb20fd12cc926765d90d"


def test_verify_accepts_only_the_right_tag() -> None:
    key = CheckpointAuthKey([("train-v1", DATA_KEY)])
    tag = key.tag(b"message")
    assert key.verify(b"message", tag)
    assert not key.verify(b"messagf", tag)
    assert not key.verify(b"message", bytes(32))
    assert not CheckpointAuthKey([("train-v2", DATA_KEY)]).verify(b"message", tag)
    assert not CheckpointAuthKey([("train-v1", bytes(32))]).verify(b"message", tag)


def test_several_datasets_need_every_key_in_order() -> None:
    a, b = ("a", DATA_KEY), ("b", bytes(32))
    both = CheckpointAuthKey([a, b]).tag(b"m")
    assert both not in {CheckpointAuthKey([a]).tag(b"m"), CheckpointAuthKey([b]).tag(b"m"),
                        CheckpointAuthKey([b, a]).tag(b"m")}


@pytest.mark.parametrize("keys", [[], [("x", b"short")], [("", DATA_KEY)]])
def test_bad_inputs_are_refused(keys: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ConfigError):
        CheckpointAuthKey(keys)


def test_the_key_is_never_pickled_copied_or_printed() -> None:
    key = CheckpointAuthKey([("train-v1", DATA_KEY)])
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(CheckpointKeyNotSerialisable):
            attempt(key)
    assert DATA_KEY.hex() not in repr(key) and "secret" in repr(key)
