"""Temporary credentials the emulator issues, as STS AssumeRole would: an ASIA access
key, a secret, a session token and an expiration, acting as the role's assumed-role ARN.

Only the emulator that issued them knows them. Real STS allows 15 minutes to 12 hours;
here any positive lifetime is accepted, so tests can see credentials expire.
"""
from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from enclave.errors import ConfigError
from parent.local.kms.sigv4 import Principal

_ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_KEY_ALPHABET = string.ascii_uppercase + "234567"


@dataclass(frozen=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    arn: str

    @property
    def expiration_ms(self) -> int:
        return int(self.expiration.timestamp() * 1000)


def new_session(
    role_arn: str, session_name: str, now: datetime, lifetime: timedelta
) -> tuple[Principal, SessionCredentials]:
    """Fresh temporary credentials for `role_arn`, valid from `now` for `lifetime`."""
    match = _ROLE_ARN.match(role_arn)
    if match is None:
        raise ConfigError(f"{role_arn!r} is not an IAM role ARN")
    if not _SESSION_NAME.match(session_name):
        raise ConfigError(f"{session_name!r} is not a valid role session name")
    if lifetime <= timedelta(0):
        raise ConfigError("temporary credentials need a positive lifetime")
    partition, account, role = match.groups()
    creds = SessionCredentials(
        access_key_id="ASIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16)),
        secret_access_key=secrets.token_urlsafe(30),
        session_token=secrets.token_urlsafe(96),
        expiration=now + lifetime,
        arn=f"arn:{partition}:sts::{account}:assumed-role/{role}/{session_name}",
    )
    principal = Principal(creds.secret_access_key, creds.arn, creds.session_token, creds.expiration)
    return principal, creds
