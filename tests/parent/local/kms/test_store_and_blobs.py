from __future__ import annotations

import stat
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from parent.local.kms import ciphertext
from parent.local.kms.errors import InvalidCiphertextException
from parent.local.kms.store import KeyStore

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MATERIAL = bytes(range(32))


def test_blob_round_trip_and_layout() -> None:
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"secret", {"b": "2", "a": "1"})
    assert blob[:4] == b"HKC1" and blob[4:40] == KEY_ID.encode()
    assert len(blob) == 4 + 36 + 12 + len(b"secret") + 16
    assert ciphertext.key_id_of(blob) == KEY_ID
    # The context is canonical: order does not matter, content does.
    assert ciphertext.unseal(MATERIAL, blob, {"a": "1", "b": "2"}) == b"secret"


@pytest.mark.parametrize("context", [{}, {"a": "1"}, {"a": "1", "b": "3"}, {"a": "1", "b": "2", "c": ""}])
def test_wrong_context_fails(context: dict[str, str]) -> None:
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"secret", {"a": "1", "b": "2"})
    with pytest.raises(InvalidCiphertextException):
        ciphertext.unseal(MATERIAL, blob, context)


def test_tampering_detected() -> None:
    blob = bytearray(ciphertext.seal(MATERIAL, KEY_ID, b"secret", {}))
    for index in (41, 52, len(blob) - 1):
        mutated = bytearray(blob)
        mutated[index] ^= 1
        with pytest.raises(InvalidCiphertextException):
            ciphertext.unseal(MATERIAL, bytes(mutated), {})
    with pytest.raises(InvalidCiphertextException):
        ciphertext.unseal(bytes(32), bytes(blob), {})


@pytest.mark.parametrize("blob", [b"", b"HKC1", b"XXXX" + b"0" * 80, b"HKC1" + b"z" * 36 + b"0" * 40])
def test_malformed_blobs(blob: bytes) -> None:
    with pytest.raises(InvalidCiphertextException):
        ciphertext.key_id_of(blob)


def test_store_persists_keys_and_aliases(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = store.create("d", '{"p": 1}')
    assert store.add_alias("alias/x", key.key_id) and not store.add_alias("alias/x", key.key_id)
    store.set_policy(key.key_id, '{"p": 2}')
    path = tmp_path / "keys" / f"{key.key_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("keys/.*.tmp"))
    again = KeyStore(tmp_path)
    loaded = again.get(key.key_id)
    assert loaded is not None and loaded.material == key.material and loaded.policy == '{"p": 2}'
    assert again.alias_target("alias/x") == key.key_id


def test_store_rejects_corrupt_key_file(tmp_path: Path) -> None:
    KeyStore(tmp_path)
    (tmp_path / "keys" / "bad.json").write_text('{"key_id": "x"}')
    with pytest.raises(ConfigError, match="malformed"):
        KeyStore(tmp_path)
