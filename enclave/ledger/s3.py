"""The budget ledger in S3: write-once slots that Object Lock keeps from being deleted.

A location is `s3://BUCKET/PREFIX?owner=ACCOUNT`; slot `seq` of dataset D is the
object `PREFIX/D/SEQ` (SEQ zero-padded to 10 digits, so keys sort as numbers), so one
location serves every dataset its owner seals (`S3LedgerStore.for_dataset`). `create` is a
conditional PutObject (`If-None-Match: *`) that also sets Object Lock retention in
COMPLIANCE mode; `read_all` lists the prefix and reads every slot, and calls a slot
`protected` only when S3 itself reports a COMPLIANCE retention that has not ended.
Every request names the expected bucket owner, so a parent that points the enclave at
a bucket of its own account fails instead of serving a ledger it can rewrite.

The parent holds the AWS credentials and relays the (TLS) traffic: it can refuse to
carry a request, or write objects itself, but it cannot forge S3's answers. What it
writes itself carries no valid entry signature (enclave.ledger checks those), and a
slot it writes without retention reads back as unprotected.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from enclave.errors import ConfigError
from enclave.ledger.store import (
    MAX_DATASET_DIR,
    MAX_SLOT_BYTES,
    MAX_SLOTS,
    LedgerError,
    LedgerUnavailable,
    StoredSlot,
    dataset_dir_name,
)

log = logging.getLogger(__name__)

SEQ_DIGITS = 10
MAX_SEQ = 10**SEQ_DIGITS - 1
# Compliance retention outlives any realistic use of a sealed dataset while keeping the
# cost bounded: nobody, not even the account root, can delete a slot before it ends.
DEFAULT_RETENTION = timedelta(days=3653)
# S3 answers 409 when another conditional write to the same key is in flight; the
# winner is then known to a retry (412 or success). A few retries settle it.
CONFLICT_RETRIES = 3
# Foreign keys under the prefix cost listing pages; bound them as the slots are bounded.
MAX_LISTED_ENTRIES = 2 * MAX_SLOTS
COMPLIANCE = "COMPLIANCE"

# Bucket names as S3 creates them today (lower case, digits, '-', '.'), not IP-shaped.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_SHAPED = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Prefix segments need no percent-encoding, so every prefix has one spelling.
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_SEQ_KEY = re.compile(r"^[0-9]{10}$")
MAX_PREFIX_LENGTH = 512
# A sealed location's prefix leaves room for '/DATASET_ID', so every dataset's slots have a valid prefix.
MAX_SEALED_PREFIX_LENGTH = MAX_PREFIX_LENGTH - 1 - MAX_DATASET_DIR


class InvalidLedgerLocation(ConfigError):
    """A ledger location is not a canonical `s3://BUCKET/PREFIX?owner=ACCOUNT` URI."""


class LedgerTooLong(LedgerError):
    """The ledger holds more slots (or junk keys) than the enclave will read."""


@dataclass(frozen=True)
class S3Location:
    """Where one dataset's ledger lives: bucket, key prefix and the bucket owner's account."""

    bucket: str
    prefix: str
    owner: str

    def __post_init__(self) -> None:
        check_bucket_name(self.bucket)
        _check_prefix(self.prefix)
        if not _ACCOUNT.match(self.owner):
            raise InvalidLedgerLocation("ledger location owner must be a 12-digit AWS account id")

    @property
    def uri(self) -> str:
        """The one spelling of this location (what the sealed file's context binds)."""
        return f"s3://{self.bucket}/{self.prefix}?owner={self.owner}"

    def key(self, seq: int) -> str:
        return f"{self.prefix}/{seq:0{SEQ_DIGITS}d}"

    def for_dataset(self, dataset_id: str) -> S3Location:
        """Where dataset `dataset_id`'s slots live under this location: PREFIX/DATASET_ID."""
        return S3Location(self.bucket, f"{self.prefix}/{dataset_dir_name(dataset_id)}", self.owner)


def check_bucket_name(bucket: str) -> None:
    """Raise InvalidLedgerLocation unless `bucket` is a name S3 would create."""
    if not _BUCKET.match(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket:
        raise InvalidLedgerLocation(f"ledger location bucket {bucket[:80]!r} is not a valid S3 bucket name")
    if _IPV4_SHAPED.match(bucket):
        raise InvalidLedgerLocation("ledger location bucket must not look like an IP address")


def _check_prefix(prefix: str) -> None:
    if not prefix or len(prefix) > MAX_PREFIX_LENGTH:
        raise InvalidLedgerLocation(f"ledger location prefix must be 1-{MAX_PREFIX_LENGTH} characters")
    for segment in prefix.split("/"):
        if not _SEGMENT.match(segment):
            raise InvalidLedgerLocation(
                "ledger location prefix must be '/'-separated segments of letters, digits, '.', '_', '-'"
                " (no empty, '.' or '..' segment)"
            )


def parse_s3_location(uri: str) -> S3Location:
    """Parse `s3://BUCKET/PREFIX?owner=ACCOUNT`, accepting only its canonical spelling.

    The string is bound into a sealed dataset's encryption context, so two spellings of
    one location would be two ledgers: anything `S3Location.uri` would not produce
    (upper-case scheme, a trailing or doubled '/', percent-escapes, other query fields,
    a fragment...) is refused rather than normalised.
    """
    if not isinstance(uri, str):
        raise InvalidLedgerLocation("ledger location must be a string")
    scheme = "s3://"
    if not uri.startswith(scheme):
        raise InvalidLedgerLocation("ledger location must start with s3://")
    rest = uri[len(scheme):]
    path, sep, query = rest.partition("?")
    if not sep:
        raise InvalidLedgerLocation("ledger location must end with ?owner=ACCOUNT (the bucket owner's account id)")
    if not query.startswith("owner="):
        raise InvalidLedgerLocation("ledger location query must be exactly owner=ACCOUNT")
    bucket, sep, prefix = path.partition("/")
    if not sep:
        raise InvalidLedgerLocation("ledger location needs a key prefix: s3://BUCKET/PREFIX?owner=ACCOUNT")
    if len(prefix) > MAX_SEALED_PREFIX_LENGTH:
        raise InvalidLedgerLocation(f"ledger location prefix must be at most {MAX_SEALED_PREFIX_LENGTH} characters")
    location = S3Location(bucket=bucket, prefix=prefix, owner=query[len("owner="):])
    if location.uri != uri:  # belt and braces: the checks above should make this unreachable
        raise InvalidLedgerLocation("ledger location is not in canonical form")
    return location


def _now() -> datetime:
    return datetime.now(UTC)


def _error_code(err: ClientError) -> str:
    code = err.response.get("Error", {}).get("Code")
    return str(code) if code else "Unknown"


def _status(err: ClientError) -> int | None:
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _unavailable(operation: str, err: Exception) -> LedgerUnavailable:
    # Name the failure, never what was sent or received.
    what = _error_code(err) if isinstance(err, ClientError) else type(err).__name__
    return LedgerUnavailable(f"ledger S3 {operation} failed: {what}")


class S3LedgerStore:
    """`LedgerStore` on S3 with conditional writes and Object Lock (see the module docstring).

    `client` is a boto3 S3 client (enclave.wiring builds it with the parent's
    credentials); `retention` is how long each new slot is locked in COMPLIANCE mode.
    Built directly, the slots are PREFIX/SEQ; `for_dataset` builds one dataset's store.
    """

    def __init__(
        self,
        location: S3Location | str,
        client: Any,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = _now,
        sealed_location: str | None = None,
    ) -> None:
        self._location = parse_s3_location(location) if isinstance(location, str) else location
        if retention <= timedelta(0):
            raise ConfigError("ledger retention must be positive")
        self._client = client
        self._retention = retention
        self._clock = clock
        self._sealed = sealed_location if sealed_location is not None else self._location.uri

    @classmethod
    def for_dataset(
        cls,
        location: str,
        dataset_id: str,
        client: Any,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = _now,
    ) -> S3LedgerStore:
        """Dataset `dataset_id`'s store under the sealed `location` (slots PREFIX/DATASET_ID/SEQ)."""
        slots = parse_s3_location(location).for_dataset(dataset_id)
        return cls(slots, client, retention=retention, clock=clock, sealed_location=location)

    @property
    def location(self) -> str:
        """The location as sealed into the context (for a dataset's store, without the dataset id)."""
        return self._sealed

    @property
    def s3_location(self) -> S3Location:
        """Where this store's slots are: bucket, key prefix (PREFIX/DATASET_ID for a dataset) and owner."""
        return self._location

    def replace_client(self, client: Any) -> None:
        """Use `client` (refreshed credentials) for every later call."""
        self._client = client

    # -- writing

    def create(self, seq: int, data: bytes) -> bool:
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
            raise LedgerError(f"ledger slot number must be an integer 0-{MAX_SEQ}")
        if len(data) > MAX_SLOT_BYTES:
            # A slot is permanent: never lock away bytes no reader will accept.
            raise LedgerError(f"ledger slot of {len(data)} bytes exceeds {MAX_SLOT_BYTES}")
        key = self._location.key(seq)
        for attempt in range(CONFLICT_RETRIES + 1):
            retain_until = (self._clock() + self._retention).replace(microsecond=0)
            try:
                self._client.put_object(
                    Bucket=self._location.bucket,
                    Key=key,
                    Body=bytes(data),
                    IfNoneMatch="*",
                    ExpectedBucketOwner=self._location.owner,
                    ObjectLockMode=COMPLIANCE,
                    ObjectLockRetainUntilDate=retain_until,
                    ChecksumAlgorithm="SHA256",
                )
            except ClientError as err:
                code, status = _error_code(err), _status(err)
                if code == "PreconditionFailed" or status == 412:
                    log.info("ledger slot %d at %s is already taken", seq, self._location.uri)
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    log.info("ledger slot %d: concurrent write in flight (attempt %d)", seq, attempt + 1)
                    continue
                raise _unavailable("PutObject", err) from None
            except BotoCoreError as err:
                raise _unavailable("PutObject", err) from None
            log.info("ledger slot %d written at %s, locked until %s", seq, self._location.uri, retain_until.isoformat())
            return True
        # Neither "written" nor "taken" can be claimed: someone else may still fail.
        raise LedgerUnavailable(f"ledger S3 PutObject failed: ConditionalRequestConflict {CONFLICT_RETRIES + 1} times")

    # -- reading

    def read_all(self) -> list[StoredSlot]:
        slots = [self._read_slot(seq, key) for seq, key in self._list_slots()]
        return [slot for slot in slots if slot is not None]

    def _list_slots(self) -> list[tuple[int, str]]:
        prefix = self._location.prefix + "/"
        found: list[tuple[int, str]] = []
        listed = 0
        token: str | None = None
        while True:
            request: dict[str, Any] = {
                "Bucket": self._location.bucket,
                "Prefix": prefix,
                # Deeper keys fold into one CommonPrefixes entry each: junk costs less.
                "Delimiter": "/",
                "ExpectedBucketOwner": self._location.owner,
            }
            if token is not None:
                request["ContinuationToken"] = token
            try:
                page = self._client.list_objects_v2(**request)
            except ClientError as err:
                raise _unavailable("ListObjectsV2", err) from None
            except BotoCoreError as err:
                raise _unavailable("ListObjectsV2", err) from None
            contents = page.get("Contents", [])
            listed += len(contents) + len(page.get("CommonPrefixes", []))
            for entry in contents:
                key = entry.get("Key", "")
                name = key[len(prefix):] if key.startswith(prefix) else ""
                if _SEQ_KEY.match(name):
                    found.append((int(name), key))
                else:
                    log.debug("ledger listing: ignoring a key that is not a slot")
            if len(found) > MAX_SLOTS:
                raise LedgerTooLong(f"ledger at {self._location.uri} has more than {MAX_SLOTS} slots")
            if listed > MAX_LISTED_ENTRIES:
                raise LedgerTooLong(f"ledger prefix at {self._location.uri} lists more than {MAX_LISTED_ENTRIES} keys")
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
            if not token:
                raise LedgerUnavailable("ledger S3 ListObjectsV2 failed: truncated page without a continuation token")
        found.sort()
        return found

    def _read_slot(self, seq: int, key: str) -> StoredSlot | None:
        try:
            response = self._client.get_object(
                Bucket=self._location.bucket,
                Key=key,
                ExpectedBucketOwner=self._location.owner,
                # The reader rejects anything over MAX_SLOT_BYTES; one byte more shows it.
                Range=f"bytes=0-{MAX_SLOT_BYTES}",
            )
        except ClientError as err:
            code = _error_code(err)
            if code in ("NoSuchKey", "NoSuchVersion"):
                # Gone since the listing: the same as having listed a moment later.
                log.warning("ledger slot %d vanished between listing and reading", seq)
                return None
            if code == "InvalidRange":
                # Only an empty object has no byte 0: junk, and reported without protection.
                return StoredSlot(seq=seq, data=b"", protected=False)
            raise _unavailable("GetObject", err) from None
        except BotoCoreError as err:
            raise _unavailable("GetObject", err) from None
        body = response.get("Body")
        try:
            data = body.read(MAX_SLOT_BYTES + 1) if body is not None else b""
        except BotoCoreError as err:
            raise _unavailable("GetObject", err) from None
        finally:
            if body is not None:
                body.close()
        return StoredSlot(seq=seq, data=bytes(data), protected=self._is_protected(response))

    def _is_protected(self, response: dict[str, Any]) -> bool:
        # Only S3's own answer counts: COMPLIANCE mode cannot be shortened or lifted by
        # anyone, so until the date passes the object cannot be deleted or replaced.
        if response.get("ObjectLockMode") != COMPLIANCE:
            return False
        until = response.get("ObjectLockRetainUntilDate")
        if not isinstance(until, datetime):
            return False
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        return until > self._clock()
