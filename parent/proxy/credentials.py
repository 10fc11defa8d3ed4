"""The AWS credentials the parent hands the enclave, and keeping them fresh during a job.

The enclave calls KMS with the parent's temporary credentials (instance role, profile
or environment). Those expire, the instance role's about every 6 hours, and a job may
outlive them: the final checkpoint is sealed with GenerateDataKey at the very end. So
while a session runs, `CredentialsRefresher` asks its source for newer credentials
when less than the policy's margin of their lifetime is left and sends them to the
enclave as another `Credentials` message, which replaces the KMS client the enclave
uses for later calls.

Credentials already past their expiration are never sent: `check_not_expired`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from enclave.errors import ConfigError, HermeticError, TransportError
from enclave.transport.messages import Credentials

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch (time.time)."""

CredentialsSource = Callable[[], Credentials]
"""The parent's current credentials, as a message (e.g. credentials_from_environment)."""

# The longest the refresher sleeps before looking at the clock again: a host that
# was suspended, or a clock that was set, does not make it miss the margin.
MAX_SLEEP_S = 60.0


class ExpiredCredentials(ConfigError):
    """Credentials for the enclave are already past their expiration."""


def _when(expiration_ms: int) -> str:
    try:
        return datetime.fromtimestamp(expiration_ms / 1000, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{expiration_ms} ms after the epoch"


def check_not_expired(creds: Credentials, now: float) -> None:
    """Refuse credentials whose expiration is not in the future."""
    if creds.expiration_ms is not None and creds.expiration_ms <= now * 1000:
        raise ExpiredCredentials(
            f"the AWS credentials for the enclave expired at {_when(creds.expiration_ms)}; "
            "renew them (instance role, profile or environment) and start the job again"
        )


@dataclass(frozen=True)
class RefreshPolicy:
    """When to replace the enclave's credentials.

    A refresh is due once less than the margin is left before they expire: at least
    `min_margin_s`, and at least `fraction` of the lifetime they had when handed over,
    but never more than half of it (short-lived credentials would otherwise be
    replaced the moment they arrive). For the instance role's 6 hours that is 36
    minutes; for a one-hour session 6 minutes; for 15 minutes, 5. When the source has
    nothing newer yet (botocore renews only shortly before expiry) or fails, it is
    asked again after `retry_s`.
    """

    min_margin_s: float = 300.0
    fraction: float = 0.1
    retry_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_margin_s < 0 or not 0 <= self.fraction <= 0.5 or self.retry_s <= 0:
            raise ConfigError("a refresh policy needs min_margin_s >= 0, 0 <= fraction <= 0.5 and retry_s > 0")

    def margin(self, lifetime_s: float) -> float:
        return min(max(self.min_margin_s, self.fraction * lifetime_s), lifetime_s / 2)


class CredentialsRefresher:
    """Keeps the enclave's credentials fresh for one session, on a thread of its own.

    `ParentSession` calls `start` right after it sent the first Credentials, with its
    channel's `send` (whose lock keeps a refresh from interleaving with dataset
    frames), and `stop` before its Goodbye, so no refresh ever follows a Goodbye.
    `refresh_if_due` is what the thread calls; tests call it too, with a clock of their
    own, to make a refresh happen at a chosen point of the stream.
    """

    def __init__(
        self,
        source: CredentialsSource,
        *,
        policy: RefreshPolicy = RefreshPolicy(),
        clock: Clock = time.time,
    ) -> None:
        self._source = source
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._send: Callable[[Credentials], None] | None = None
        self._current: Credentials | None = None
        self._handed_at = 0.0
        self._retry_at = 0.0
        self.refreshes = 0

    # ------------------------------------------------------------ lifecycle

    def start(self, current: Credentials, send: Callable[[Credentials], None]) -> None:
        """Watch `current`, just sent to the enclave, and send its successors with `send`."""
        if self._thread is not None:
            raise RuntimeError("a CredentialsRefresher serves one session")
        with self._lock:
            self._send = send
            self._take(current)
        self._thread = threading.Thread(target=self._run, name="parent-credentials", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Have the thread look at the clock again now (it otherwise sleeps until due)."""
        self._wake.set()

    def stop(self) -> None:
        """Send nothing more; returns once a refresh under way has been sent or dropped."""
        self._stopped.set()
        self._wake.set()
        with self._lock:
            self._send = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def due_at(self) -> float | None:
        """When (epoch seconds) the current credentials should be replaced; None: never."""
        with self._lock:
            return self._due_at()

    # ------------------------------------------------------------ refreshing

    def refresh_if_due(self) -> bool:
        """Send newer credentials if a refresh is due and the source has them; True if sent."""
        with self._lock:
            due = self._due_at()
            send = self._send
            if send is None or due is None or self._clock() < due:
                return False
            current = self._current
            assert current is not None  # set with `send` by start()
            try:
                fresh = self._source()
                check_not_expired(fresh, self._clock())
            except (HermeticError, BotoCoreError, ClientError, OSError) as err:
                log.warning("could not refresh the enclave's AWS credentials (%s); trying again in %.0fs",
                            err, self._policy.retry_s)
                self._retry_at = self._clock() + self._policy.retry_s
                return False
            except Exception:
                log.exception("the credentials source failed; trying again in %.0fs", self._policy.retry_s)
                self._retry_at = self._clock() + self._policy.retry_s
                return False
            if (fresh.region, fresh.kms_endpoint) != (current.region, current.kms_endpoint):
                log.error("refreshed credentials are for %s at %s, the session's for %s at %s; not sent",
                          fresh.region, fresh.kms_endpoint, current.region, current.kms_endpoint)
                self._retry_at = self._clock() + self._policy.retry_s
                return False
            if not _newer(fresh, current):
                log.debug("no newer AWS credentials yet; asking again in %.0fs", self._policy.retry_s)
                self._retry_at = self._clock() + self._policy.retry_s
                return False
            try:
                send(fresh)
            except TransportError as err:
                # The session sees the broken channel on its own; nothing more to refresh.
                log.info("could not send refreshed credentials to the enclave: %s", err)
                self._send = None
                return False
            self._take(fresh)
            self.refreshes += 1
        log.info("sent the enclave refreshed AWS credentials; they expire %s", _expires(fresh))
        return True

    def _take(self, creds: Credentials) -> None:
        self._current = creds
        self._handed_at = self._clock()
        self._retry_at = 0.0

    def _due_at(self) -> float | None:
        current = self._current
        if current is None or current.expiration_ms is None:
            return None
        expires = current.expiration_ms / 1000
        margin = self._policy.margin(max(expires - self._handed_at, 0.0))
        return max(expires - margin, self._retry_at)

    def _run(self) -> None:
        while not self._stopped.is_set():
            due = self.due_at()
            wait = None if due is None else due - self._clock()
            if wait is None or wait > 0:
                self._wake.wait(None if wait is None else min(wait, MAX_SLEEP_S))
                self._wake.clear()
                continue
            self.refresh_if_due()
            with self._lock:
                if self._send is None:  # stopped, or the channel broke
                    return


def _newer(fresh: Credentials, current: Credentials) -> bool:
    if fresh.expiration_ms is None:
        return True  # long-term keys do not expire
    return current.expiration_ms is not None and fresh.expiration_ms > current.expiration_ms


def _expires(creds: Credentials) -> str:
    return "never" if creds.expiration_ms is None else f"at {_when(creds.expiration_ms)}"
