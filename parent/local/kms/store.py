"""Persistent key and alias storage of the KMS emulator under its state directory.

    STATE/keys/<key-id>.json   metadata, policy text, base64 key material (mode 0600)
    STATE/aliases.json         {"alias/name": {"key_id": ..., "created": ...}}

Files are replaced atomically so a crash never leaves half a key behind, and a
restarted emulator decrypts what an earlier one encrypted.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from parent.storage import write_atomic


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    created: float
    description: str
    policy: str
    material: bytes
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "created": self.created,
            "description": self.description,
            "policy": self.policy,
            "material": base64.b64encode(self.material).decode("ascii"),
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, raw: Any) -> StoredKey:
        try:
            material = base64.b64decode(raw["material"], validate=True)
            key = cls(
                key_id=str(raw["key_id"]),
                created=float(raw["created"]),
                description=str(raw["description"]),
                policy=str(raw["policy"]),
                material=material,
                enabled=bool(raw.get("enabled", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"KMS emulator key file is malformed: {exc}") from None
        if len(key.material) != 32:
            raise ConfigError(f"KMS emulator key {key.key_id} has bad key material")
        return key


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    write_atomic(path, data, mode)


class KeyStore:
    """Thread-safe access to keys and aliases; every mutation is persisted at once."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = Path(state_dir)
        self._keys_dir = self._dir / "keys"
        self._aliases_path = self._dir / "aliases.json"
        self._lock = threading.RLock()
        self._keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keys: dict[str, StoredKey] = {}
        for path in sorted(self._keys_dir.glob("*.json")):
            key = StoredKey.from_json(json.loads(path.read_text("utf-8")))
            self._keys[key.key_id] = key
        self._aliases: dict[str, dict[str, Any]] = {}
        if self._aliases_path.exists():
            raw = json.loads(self._aliases_path.read_text("utf-8"))
            if not isinstance(raw, dict):
                raise ConfigError("KMS emulator aliases file is malformed")
            self._aliases = raw

    def create(self, description: str, policy: str) -> StoredKey:
        key = StoredKey(
            key_id=str(uuid.uuid4()),
            created=round(time.time(), 3),
            description=description,
            policy=policy,
            material=os.urandom(32),
        )
        with self._lock:
            self._save(key)
        return key

    def get(self, key_id: str) -> StoredKey | None:
        with self._lock:
            return self._keys.get(key_id)

    def set_policy(self, key_id: str, policy: str) -> StoredKey:
        with self._lock:
            key = replace(self._keys[key_id], policy=policy)
            self._save(key)
            return key

    def _save(self, key: StoredKey) -> None:
        data = json.dumps(key.to_json(), indent=2).encode("utf-8")
        _write_atomic(self._keys_dir / f"{key.key_id}.json", data)
        self._keys[key.key_id] = key

    def alias_target(self, alias: str) -> str | None:
        with self._lock:
            entry = self._aliases.get(alias)
            return None if entry is None else str(entry["key_id"])

    def add_alias(self, alias: str, key_id: str) -> bool:
        """False if the alias already exists."""
        with self._lock:
            if alias in self._aliases:
                return False
            self._aliases[alias] = {"key_id": key_id, "created": round(time.time(), 3)}
            _write_atomic(self._aliases_path, json.dumps(self._aliases, indent=2).encode("utf-8"))
            return True

    def aliases(self) -> list[tuple[str, str, float]]:
        with self._lock:
            return sorted((a, str(e["key_id"]), float(e["created"])) for a, e in self._aliases.items())
