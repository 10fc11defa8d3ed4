from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from parent.local.kms.errors import (
    ExpiredTokenException,
    IncompleteSignatureException,
    InvalidSignatureException,
    KmsApiError,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from parent.local.kms.sigv4 import (
    Principal,
    SigV4Verifier,
    VerifiedCaller,
    canonical_request,
    compute_signature,
)

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
URL = "http://127.0.0.1:4566/"
HOST = "127.0.0.1:4566"
BODY = b'{"KeyId": "alias/x"}'


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # AWS SigV4 test suite, get-vanilla and post-vanilla.
        ("GET", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("POST", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ],
)
def test_aws_test_suite_vectors(method: str, expected: str) -> None:
    canonical = canonical_request(
        method, "/", "", [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
        ["host", "x-amz-date"], EMPTY_SHA256,
    )
    assert compute_signature(AWS_SECRET, "20150830T123600Z", "us-east-1", "service", canonical) == expected


def test_canonical_query_sorted_and_encoded() -> None:
    canonical = canonical_request("GET", "/", "b=2&a=x y&a=1", [("Host", "h")], ["host"], EMPTY_SHA256)
    assert canonical.splitlines()[2] == "a=1&a=x%20y&b=2"


def _signed(
    *,
    access_key: str = "AKIDOWNER",
    secret: str = "owner-secret",
    token: str | None = None,
    region: str = "us-east-1",
    body: bytes = BODY,
    target: str | None = "TrentService.DescribeKey",
) -> list[tuple[str, str]]:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=URL, data=body, headers=headers)
    SigV4Auth(Credentials(access_key, secret, token), "kms", region).add_auth(request)
    return [("Host", HOST), *request.headers.items()]


PRINCIPALS = {
    "AKIDOWNER": Principal("owner-secret", "arn:aws:iam::111122223333:user/owner"),
    "AKIDTOKEN": Principal("token-secret", "arn:aws:sts::111122223333:assumed-role/parent/i-1", "tok"),
}
# Requests are signed with the real clock, so the short-lived principal's expiry is taken
# when each test starts (a module-level one would lie minutes behind on a slow run).
EXPIRES = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _short_lived_principal() -> Iterator[None]:
    global EXPIRES
    EXPIRES = datetime.now(UTC) + timedelta(minutes=2)
    PRINCIPALS["ASIASHORT"] = Principal(
        "short-secret", "arn:aws:sts::111122223333:assumed-role/parent/i-2", "short", EXPIRES)
    yield
    del PRINCIPALS["ASIASHORT"]


def _verify(headers: list[tuple[str, str]], *, body: bytes = BODY, now: datetime | None = None) -> VerifiedCaller:
    return SigV4Verifier(PRINCIPALS, region="us-east-1").verify(
        method="POST", path="/", query="", headers=headers, body=body,
        now=now or datetime.now(UTC),
    )


def test_botocore_signature_verifies() -> None:
    caller = _verify(_signed())
    assert caller.access_key_id == "AKIDOWNER"
    assert caller.principal.arn.endswith(":user/owner")


def test_session_token_accepted_when_listed() -> None:
    assert _verify(_signed(access_key="AKIDTOKEN", secret="token-secret", token="tok")).principal.session_token == "tok"


def _replace(headers: list[tuple[str, str]], name: str, value: str | None) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return out if value is None else [*out, (name, value)]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: _signed(secret="wrong"), InvalidSignatureException, "does not match"),
        (lambda: _replace(_signed(), "X-Amz-Target", "TrentService.Decrypt"), InvalidSignatureException, "does not match"),
        (lambda: _signed(access_key="AKIDNOBODY"), UnrecognizedClientException, "invalid"),
        (lambda: _replace(_signed(), "Authorization", None), MissingAuthenticationTokenException, "missing"),
        (lambda: _replace(_signed(), "Authorization", "AWS4-HMAC-SHA256 nonsense"), IncompleteSignatureException, "complete"),
        (lambda: _signed(region="eu-west-1"), InvalidSignatureException, "scoped"),
        (lambda: _signed(target=None), IncompleteSignatureException, "x-amz-target"),
        (lambda: _signed(access_key="AKIDTOKEN", secret="token-secret"), UnrecognizedClientException, "session token"),
        (lambda: _signed(access_key="AKIDTOKEN", secret="token-secret", token="other"), UnrecognizedClientException, "invalid"),
        (lambda: _signed(token="unexpected"), UnrecognizedClientException, "invalid"),
        (lambda: _replace(_signed(), "X-Amz-Date", "yesterday"), IncompleteSignatureException, "X-Amz-Date"),
    ],
)
def test_rejections(make, error: type[KmsApiError], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        _verify(make())


def test_tampered_body_rejected() -> None:
    with pytest.raises(InvalidSignatureException):
        _verify(_signed(), body=b'{"KeyId": "alias/y"}')


def test_declared_payload_hash_must_match() -> None:
    headers = [*_signed(), ("X-Amz-Content-Sha256", EMPTY_SHA256)]
    with pytest.raises(InvalidSignatureException, match="Sha256"):
        _verify(headers)


@pytest.mark.parametrize("skew", [timedelta(minutes=6), -timedelta(minutes=6)])
def test_clock_skew_rejected(skew: timedelta) -> None:
    with pytest.raises(InvalidSignatureException, match="expired"):
        _verify(_signed(), now=datetime.now(UTC) + skew)


def test_temporary_credentials_work_until_their_expiry_then_fail_as_aws_says() -> None:
    def signed() -> list[tuple[str, str]]:
        return _signed(access_key="ASIASHORT", secret="short-secret", token="short")

    assert _verify(signed(), now=EXPIRES - timedelta(seconds=1)).principal.expires_at == EXPIRES
    with pytest.raises(ExpiredTokenException) as info:
        _verify(signed(), now=EXPIRES)
    error = info.value
    assert (error.aws_type, error.status) == ("ExpiredTokenException", 400)
    assert str(error) == "The security token included in the request is expired"


def test_an_expired_token_is_still_checked_first_for_being_the_right_one() -> None:
    with pytest.raises(UnrecognizedClientException):
        _verify(_signed(access_key="ASIASHORT", secret="short-secret", token="forged"), now=EXPIRES)


def test_principal_secrets_stay_out_of_repr_and_only_tokens_expire() -> None:
    principal = PRINCIPALS["ASIASHORT"]
    assert "short-secret" not in repr(principal) and "'short'" not in repr(principal)
    with pytest.raises(ValueError, match="session token"):
        Principal("s", "arn:aws:iam::111122223333:user/x", None, EXPIRES)
