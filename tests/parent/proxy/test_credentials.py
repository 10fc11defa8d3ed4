"""When and how the parent replaces the enclave's credentials: a clock of the test's own,
so every refresh happens at a chosen moment."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import NoCredentialsError

from enclave.errors import ConfigError, HermeticError
from enclave.transport.address import UnixAddress
from enclave.transport.errors import PeerDisconnected
from enclave.transport.messages import Credentials
from parent.proxy.credentials import CredentialsRefresher, ExpiredCredentials, RefreshPolicy, check_not_expired
from parent.proxy.job import RelayTarget, run_job
from parent.proxy.session import ParentSession

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
HOUR = 3600.0
DEFAULT_POLICY = RefreshPolicy()


def creds(expires_in: float | None, key: str = "ASIAONE", now: float = NOW, region: str = "us-east-1") -> Credentials:
    expiration = None if expires_in is None else int((now + expires_in) * 1000)
    return Credentials(key, f"secret-of-{key}", f"token-of-{key}", region, "https://kms.us-east-1.amazonaws.com",
                       expiration)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Source:
    """Hands out the queued credentials (or raises the queued error), one per call."""

    def __init__(self, *answers: Credentials | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> Credentials:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def started(source: Callable[[], Credentials], clock: Clock, first: Credentials,
            policy: RefreshPolicy = DEFAULT_POLICY) -> tuple[CredentialsRefresher, list[Credentials]]:
    sent: list[Credentials] = []
    refresher = CredentialsRefresher(source, policy=policy, clock=clock)
    refresher.start(first, sent.append)
    return refresher, sent


@pytest.mark.parametrize(
    ("lifetime_s", "margin_s"),
    [(6 * HOUR, 0.1 * 6 * HOUR), (HOUR, 360.0), (900.0, 300.0), (400.0, 200.0), (2.0, 1.0)],
)
def test_the_margin_is_minutes_a_fraction_of_the_lifetime_and_at_most_half(lifetime_s: float, margin_s: float) -> None:
    assert RefreshPolicy().margin(lifetime_s) == pytest.approx(margin_s)


def test_a_policy_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError):
        RefreshPolicy(fraction=0.9)


def test_expired_credentials_are_refused_with_one_line() -> None:
    check_not_expired(creds(1.0), NOW)
    check_not_expired(creds(None), NOW)
    with pytest.raises(ExpiredCredentials) as info:
        check_not_expired(creds(0.0), NOW)
    assert str(info.value) == (
        "the AWS credentials for the enclave expired at 2024-05-01T12:00:00+00:00; "
        "renew them (instance role, profile or environment) and start the job again"
    )
    assert isinstance(info.value, ConfigError) and "secret" not in str(info.value)


def test_a_refresh_is_sent_once_the_margin_is_reached() -> None:
    clock = Clock()
    fresh = creds(6 * HOUR, "ASIATWO", now=NOW + 5 * HOUR)
    refresher, sent = started(Source(fresh), clock, creds(6 * HOUR))
    try:
        assert refresher.due_at() == pytest.approx(NOW + 6 * HOUR - 0.1 * 6 * HOUR)
        clock.now = refresher.due_at() - 1  # type: ignore[operator]
        assert not refresher.refresh_if_due() and sent == []
        clock.now += 1
        assert refresher.refresh_if_due() and sent == [fresh] and refresher.refreshes == 1
        # The next one is measured against the new credentials' lifetime (from now to
        # their expiry at 11h: 5.6h, so the margin is 0.56h).
        assert refresher.due_at() == pytest.approx(NOW + 11 * HOUR - 0.56 * HOUR)
    finally:
        refresher.stop()


def test_nothing_newer_failures_and_expired_answers_are_asked_again_later(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    first = creds(HOUR)
    fresh = creds(2 * HOUR, "ASIATHREE")
    source = Source(first, NoCredentialsError(), creds(-1.0, "ASIASTALE"), creds(HOUR, "ASIAEU", region="eu-west-1"),
                    fresh)
    refresher, sent = started(source, clock, first, RefreshPolicy(retry_s=30))
    try:
        clock.now = NOW + HOUR - 300
        for _ in range(4):  # the same ones, no credentials, expired ones, another region
            assert not refresher.refresh_if_due()
            assert refresher.due_at() == pytest.approx(clock.now + 30)
            assert not refresher.refresh_if_due()  # not before the retry
            clock.now += 30
        assert refresher.refresh_if_due() and sent == [fresh] and source.calls == 5
    finally:
        refresher.stop()
    text = caplog.text
    assert "Unable to locate credentials" in text and "expired at" in text and "eu-west-1" in text
    assert "secret-of" not in text and "token-of" not in text


def test_credentials_without_expiration_are_never_refreshed() -> None:
    source = Source()
    refresher, sent = started(source, Clock(NOW + 100 * HOUR), creds(None))
    try:
        assert refresher.due_at() is None and not refresher.refresh_if_due()
    finally:
        refresher.stop()
    assert source.calls == 0 and sent == []


def test_nothing_is_sent_after_stop() -> None:
    clock = Clock()
    refresher, sent = started(Source(creds(2 * HOUR, "ASIATWO")), clock, creds(HOUR))
    refresher.stop()
    clock.now += HOUR
    assert not refresher.refresh_if_due() and sent == []


def test_a_broken_channel_ends_the_refreshes() -> None:
    clock = Clock()
    source = Source(creds(2 * HOUR, "ASIATWO"), creds(3 * HOUR, "ASIATHREE"))
    refresher = CredentialsRefresher(source, clock=clock)

    def send(_: Credentials) -> None:
        raise PeerDisconnected("peer disconnected while sending")

    refresher.start(creds(HOUR), send)
    try:
        clock.now += HOUR - 1
        assert not refresher.refresh_if_due()
        assert not refresher.refresh_if_due() and source.calls == 1
    finally:
        refresher.stop()


def test_the_thread_refreshes_when_woken_past_the_margin() -> None:
    clock = Clock()
    fresh = creds(HOUR, "ASIATWO", now=NOW + HOUR)
    arrived = threading.Event()
    sent: list[Credentials] = []

    def send(msg: Credentials) -> None:
        sent.append(msg)
        arrived.set()

    refresher = CredentialsRefresher(Source(fresh), clock=clock)
    refresher.start(creds(HOUR), send)
    try:
        refresher.wake()  # not due yet: nothing happens
        clock.now += HOUR - 60
        refresher.wake()
        assert arrived.wait(timeout=10)
    finally:
        refresher.stop()
    assert sent == [fresh]


def test_a_session_refuses_expired_credentials_before_connecting(tmp_path: Path) -> None:
    # Nothing listens there: the refusal comes before any connection is tried.
    session = ParentSession(UnixAddress(str(tmp_path / "nobody.sock")), creds(-1.0), clock=Clock())
    with pytest.raises(ExpiredCredentials, match="expired at 2024-05-01T11:59:59"):
        session.run("job-1", [])


def test_run_job_refuses_expired_credentials_before_starting_the_relay(tmp_path: Path) -> None:
    relay = tmp_path / "relay.sock"
    with pytest.raises(ExpiredCredentials) as info:
        run_job(enclave=UnixAddress(str(tmp_path / "e.sock")), relay_listen=UnixAddress(str(relay)),
                kms_target=RelayTarget("127.0.0.1", 1), allow_list=[RelayTarget("127.0.0.1", 1)],
                credentials=Credentials("ASIAOLD", "s", "t", "us-east-1", "https://kms", 1_000), job_id="j",
                datasets=[])
    assert isinstance(info.value, HermeticError) and "1970-01-01T00:00:01" in str(info.value)
    assert not relay.exists()


def test_refresh_logs_never_carry_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    refresher, sent = started(Source(creds(2 * HOUR, "ASIATWO")), clock, creds(HOUR))
    try:
        clock.now += HOUR - 1
        assert refresher.refresh_if_due()
    finally:
        refresher.stop()
    assert "refreshed" in caplog.text and "secret-of" not in caplog.text and "token-of" not in caplog.text
