"""Loading the KMS emulator's start-up inputs: the principal map and the attestation root.

Principals file (JSON), one entry per access key id:

    {"AKIDOWNER": {"secret_access_key": "...", "arn": "arn:aws:iam::111122223333:user/owner"},
     "AKIDPARENT": {"secret_access_key": "...", "arn": "arn:aws:iam::111122223333:role/parent",
                    "session_token": "...", "expiration": "2024-05-01T18:00:00Z"}}

Temporary credentials carry a session token and may carry an `expiration` (ISO 8601
with a time zone, as STS writes it): requests signed with them after it are refused
with ExpiredTokenException.

A two-element list `[secret_access_key, arn]` is accepted as a short form.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from enclave.errors import ConfigError
from parent.inputs import load_certificate_der
from parent.local.kms.sigv4 import Principal

_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::\d{12}:.+$")
_AKID_RE = re.compile(r"^[A-Z0-9]{4,128}$")


def _principal(access_key_id: str, raw: object) -> Principal:
    if isinstance(raw, list) and len(raw) == 2:
        raw = {"secret_access_key": raw[0], "arn": raw[1]}
    if not isinstance(raw, dict):
        raise ConfigError(f"principal {access_key_id} must be an object with secret_access_key and arn")
    secret, arn, token = raw.get("secret_access_key"), raw.get("arn"), raw.get("session_token")
    if not isinstance(secret, str) or not secret:
        raise ConfigError(f"principal {access_key_id} has no secret_access_key")
    if not isinstance(arn, str) or not _ARN_RE.match(arn):
        raise ConfigError(f"principal {access_key_id} has no valid IAM arn")
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError(f"principal {access_key_id} has an invalid session_token")
    return Principal(secret_access_key=secret, arn=arn, session_token=token,
                     expires_at=_expiration(access_key_id, raw.get("expiration"), token))


def _expiration(access_key_id: str, raw: object, token: str | None) -> datetime | None:
    if raw is None:
        return None
    if token is None:
        raise ConfigError(f"principal {access_key_id} has an expiration but no session_token")
    try:
        when = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ConfigError(f"principal {access_key_id} has an expiration that is not ISO 8601 with a time zone")
    return when


def load_principals(path: Path) -> dict[str, Principal]:
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read principals file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"principals file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"principals file {path} must be a non-empty JSON object")
    principals: dict[str, Principal] = {}
    for access_key_id, entry in raw.items():
        if not _AKID_RE.match(access_key_id):
            raise ConfigError(f"principals file {path}: {access_key_id!r} is not an access key id")
        principals[access_key_id] = _principal(access_key_id, entry)
    return principals


def load_root_der(path: Path) -> bytes:
    """The attestation trust anchor from a PEM or DER certificate file, as DER."""
    return load_certificate_der(path, "attestation root")
