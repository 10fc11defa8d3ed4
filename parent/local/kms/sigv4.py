"""Verifying AWS Signature Version 4 on requests to the local KMS emulator.

The emulator knows each caller's secret, recomputes the signature over the
canonical request exactly as the SigV4 specification describes, and compares in
constant time. Nothing is trusted before this passes: an unknown access key is
UnrecognizedClientException, a wrong signature InvalidSignatureException, and a
session token past its expiry ExpiredTokenException, as AWS answers them.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from parent.local.kms.errors import (
    ExpiredTokenException,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_CLOCK_SKEW = timedelta(minutes=5)
# Headers a client must sign so the operation, host and time cannot be swapped.
REQUIRED_SIGNED_HEADERS = frozenset({"host", "x-amz-date", "x-amz-target"})
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})$"
)
_SPACES = re.compile(r"\s+")


EXPIRED_TOKEN_MESSAGE = "The security token included in the request is expired"


@dataclass(frozen=True)
class Principal:
    """A caller the emulator knows: its secret and the IAM ARN it acts as.

    Temporary credentials carry a session token and may carry `expires_at`: from
    then on every request signed with them is refused with ExpiredTokenException.
    """

    secret_access_key: str = field(repr=False)
    arn: str
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.expires_at is not None:
            if self.session_token is None:
                raise ValueError("only temporary credentials (with a session token) expire")
            if self.expires_at.tzinfo is None:
                raise ValueError("expires_at must be timezone-aware")


@dataclass(frozen=True)
class VerifiedCaller:
    access_key_id: str
    principal: Principal


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(f"AWS4{secret}".encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request (non-S3 services: the path is encoded once more)."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(_SPACES.sub(" ", value.strip()))
    lines = [f"{name}:{','.join(by_name.get(name, []))}\n" for name in signed_headers]
    return "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/~"),
            canonical_query(query),
            "".join(lines),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def compute_signature(
    secret: str, amz_date: str, region: str, service: str, canonical: str
) -> str:
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    key = signing_key(secret, date, region, service)
    return hmac.new(
        key, string_to_sign(amz_date, scope, canonical).encode("utf-8"), hashlib.sha256
    ).hexdigest()


class SigV4Verifier:
    """Authenticates requests against a fixed mapping of access keys to principals."""

    def __init__(
        self,
        principals: Mapping[str, Principal],
        *,
        region: str,
        service: str = "kms",
        max_skew: timedelta = MAX_CLOCK_SKEW,
    ) -> None:
        self._principals = dict(principals)
        self._lock = threading.Lock()
        self._region = region
        self._service = service
        self._max_skew = max_skew

    def add_principal(self, access_key_id: str, principal: Principal) -> None:
        """Know one more caller from now on (temporary credentials being issued)."""
        with self._lock:
            if access_key_id in self._principals:
                raise ValueError(f"access key {access_key_id} is already known")
            self._principals[access_key_id] = principal

    def verify(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        now: datetime,
    ) -> VerifiedCaller:
        lookup = {name.lower(): value for name, value in headers}
        authorization = lookup.get("authorization")
        if not authorization:
            raise MissingAuthenticationTokenException("Request is missing Authentication Token")
        match = _AUTH_RE.match(authorization.strip())
        if not match:
            raise IncompleteSignatureException("Authorization header is not a complete AWS4-HMAC-SHA256 signature")
        credential, signed, signature = match.groups()
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise IncompleteSignatureException("Credential must be AKID/date/region/service/aws4_request")
        access_key_id, scope_date, scope_region, scope_service, _ = parts
        with self._lock:
            principal = self._principals.get(access_key_id)
        if principal is None:
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        signed_headers = signed.split(";")
        if signed_headers != sorted(set(signed_headers)) or any(h != h.lower() for h in signed_headers):
            raise IncompleteSignatureException("SignedHeaders must be lower-case, sorted and unique")
        missing = REQUIRED_SIGNED_HEADERS - set(signed_headers)
        if missing:
            raise IncompleteSignatureException(f"SignedHeaders must include {', '.join(sorted(missing))}")
        self._check_token(principal, lookup, signed_headers)
        if principal.expires_at is not None and now >= principal.expires_at:
            raise ExpiredTokenException(EXPIRED_TOKEN_MESSAGE)
        amz_date = lookup.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise IncompleteSignatureException("X-Amz-Date is not in YYYYMMDDTHHMMSSZ form") from None
        if abs(now - when) > self._max_skew:
            raise InvalidSignatureException("Signature expired: request time is too far from server time")
        if scope_date != amz_date[:8]:
            raise InvalidSignatureException("Credential scope date does not match X-Amz-Date")
        if scope_region != self._region or scope_service != self._service:
            raise InvalidSignatureException(
                f"Credential should be scoped to region {self._region} and service {self._service}"
            )
        payload_hash = hashlib.sha256(body).hexdigest()
        declared = lookup.get("x-amz-content-sha256")
        if declared is not None and declared != payload_hash:
            raise InvalidSignatureException("X-Amz-Content-Sha256 does not match the request body")
        canonical = canonical_request(method, path, query, headers, signed_headers, payload_hash)
        expected = compute_signature(
            principal.secret_access_key, amz_date, self._region, self._service, canonical
        )
        if not hmac.compare_digest(expected, signature):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you provided."
            )
        return VerifiedCaller(access_key_id, principal)

    @staticmethod
    def _check_token(principal: Principal, lookup: Mapping[str, str], signed: Sequence[str]) -> None:
        token = lookup.get("x-amz-security-token")
        if principal.session_token is None:
            if token is not None:
                raise UnrecognizedClientException("The security token included in the request is invalid.")
            return
        if token is None or "x-amz-security-token" not in signed:
            raise UnrecognizedClientException("This access key requires a signed session token.")
        if not hmac.compare_digest(token.encode("utf-8"), principal.session_token.encode("utf-8")):
            raise UnrecognizedClientException("The security token included in the request is invalid.")
