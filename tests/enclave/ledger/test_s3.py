"""S3LedgerStore against a real S3-compatible server (moto in server mode, tests/support/s3_server.py)."""
from __future__ import annotations

import string
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import example, given
from hypothesis import strategies as st

import enclave.ledger.s3 as s3mod
from enclave.errors import ConfigError
from enclave.ledger.s3 import (
    DEFAULT_RETENTION,
    InvalidLedgerLocation,
    LedgerTooLong,
    S3LedgerStore,
    S3Location,
    parse_s3_location,
)
from enclave.ledger.store import MAX_SLOT_BYTES, LedgerError, LedgerStore, LedgerUnavailable
from tests.support.s3_server import S3Server, s3_server
from tests.support.servers import free_port

PREFIX = "ledgers/fmnist-train"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture()
def raw(server: S3Server) -> Any:
    """The parent's own client: same server, its own credentials and requests."""
    return server.client()


@pytest.fixture()
def bucket(server: S3Server, raw: Any) -> str:
    name = server.unique_bucket("ledger")
    raw.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def store_for(server: S3Server, bucket: str, *, owner: str | None = None, **kwargs: Any) -> S3LedgerStore:
    location = S3Location(bucket=bucket, prefix=PREFIX, owner=owner or server.account_id)
    return S3LedgerStore(location, server.client(), **kwargs)


@pytest.fixture()
def store(server: S3Server, bucket: str) -> S3LedgerStore:
    return store_for(server, bucket)


# --------------------------------------------------------------------------- writing


def test_is_a_ledger_store(store: S3LedgerStore, server: S3Server, bucket: str) -> None:
    typed: LedgerStore = store
    assert typed.location == f"s3://{bucket}/{PREFIX}?owner={server.account_id}"


def test_a_datasets_store_keeps_its_slots_under_its_own_id(server: S3Server, bucket: str, raw: Any) -> None:
    sealed = f"s3://{bucket}/{PREFIX}?owner={server.account_id}"
    a = S3LedgerStore.for_dataset(sealed, "ds-a", server.client())
    b = S3LedgerStore.for_dataset(sealed, "ds-b", server.client())
    assert a.location == sealed and a.s3_location.prefix == f"{PREFIX}/ds-a"
    assert a.create(0, b"a-0") is True and b.create(0, b"b-0") is True
    assert [s.data for s in a.read_all()] == [b"a-0"] and [s.data for s in b.read_all()] == [b"b-0"]
    keys = sorted(o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"{PREFIX}/ds-a/0000000000", f"{PREFIX}/ds-b/0000000000"]


@pytest.mark.parametrize("dataset_id", ["..", ".", "a/b", "", "x" * 129])
def test_a_dataset_id_that_is_not_one_key_segment_is_refused(dataset_id: str) -> None:
    with pytest.raises(LedgerUnavailable, match="cannot name a ledger directory"):
        S3LedgerStore.for_dataset("s3://ledger/p?owner=123456789012", dataset_id, object())


def test_the_longest_sealed_prefix_leaves_room_for_any_dataset_id() -> None:
    prefix = "p" * s3mod.MAX_SEALED_PREFIX_LENGTH
    store = S3LedgerStore.for_dataset(f"s3://ledger/{prefix}?owner=123456789012", "d" * 128, object())
    assert len(store.s3_location.prefix) == s3mod.MAX_PREFIX_LENGTH
    with pytest.raises(InvalidLedgerLocation, match="at most"):
        parse_s3_location(f"s3://ledger/{prefix}p?owner=123456789012")


def test_create_then_read_back_protected(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    assert store.create(0, b"entry-0") is True
    [slot] = store.read_all()
    assert (slot.seq, slot.data, slot.protected) == (0, b"entry-0", True)
    head = raw.head_object(Bucket=bucket, Key=f"{PREFIX}/0000000000")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    # Retained for the store's period (default ten years), give or take the test's own duration.
    expected = datetime.now(UTC) + DEFAULT_RETENTION
    assert abs(head["ObjectLockRetainUntilDate"] - expected) < timedelta(minutes=5)


def test_retention_period_is_the_constructors(server: S3Server, bucket: str, raw: Any) -> None:
    store = store_for(server, bucket, retention=timedelta(days=30))
    assert store.create(3, b"x")
    until = raw.head_object(Bucket=bucket, Key=f"{PREFIX}/0000000003")["ObjectLockRetainUntilDate"]
    assert abs(until - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)


def test_write_once(store: S3LedgerStore) -> None:
    assert store.create(1, b"first") is True
    assert store.create(1, b"second") is False
    assert [(s.seq, s.data) for s in store.read_all()] == [(1, b"first")]


def test_concurrent_creates_of_one_slot_have_one_winner(server: S3Server, bucket: str) -> None:
    stores = [store_for(server, bucket) for _ in range(4)]  # one client each, as separate enclaves
    barrier = threading.Barrier(len(stores))
    results: dict[int, bool] = {}

    def race(i: int) -> None:
        barrier.wait()
        results[i] = stores[i].create(7, f"writer-{i}".encode())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == len(stores) and len(winners) == 1
    [slot] = stores[0].read_all()
    assert slot.data == f"writer-{winners[0]}".encode()


def test_create_refuses_what_no_reader_accepts(store: S3LedgerStore) -> None:
    with pytest.raises(LedgerError, match="exceeds"):
        store.create(0, b"x" * (MAX_SLOT_BYTES + 1))
    for bad in (-1, 10**10, True):
        with pytest.raises(LedgerError, match="slot number"):
            store.create(bad, b"x")  # type: ignore[arg-type]
    assert store.read_all() == []


def test_retention_must_be_positive(server: S3Server, bucket: str) -> None:
    with pytest.raises(ConfigError):
        store_for(server, bucket, retention=timedelta(0))


# --------------------------------------------------------------------------- reading


def test_listing_is_ordered_and_ignores_gaps_and_foreign_keys(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    for seq in (12, 0, 3):
        assert store.create(seq, f"e{seq}".encode())
    foreign = [
        f"{PREFIX}/abc", f"{PREFIX}/00000000001", f"{PREFIX}/000000001", f"{PREFIX}/0000000004.tmp",
        f"{PREFIX}/0000000005/0000000006", f"{PREFIX}0000000007", f"{PREFIX}-other/0000000008",
        "0000000009", f"{PREFIX}/ 0000000010",
    ]
    for key in foreign:
        raw.put_object(Bucket=bucket, Key=key, Body=b"junk")
    slots = store.read_all()
    assert [(s.seq, s.data, s.protected) for s in slots] == [(0, b"e0", True), (3, b"e3", True), (12, b"e12", True)]


def test_an_oversized_slot_is_cut_one_byte_past_the_limit(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/0000000002", Body=b"A" * (MAX_SLOT_BYTES * 3))
    [slot] = store.read_all()
    assert slot.seq == 2 and slot.data == b"A" * (MAX_SLOT_BYTES + 1)


def test_an_empty_slot_reads_as_empty_and_unprotected(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/0000000004", Body=b"")
    [slot] = store.read_all()
    assert (slot.seq, slot.data, slot.protected) == (4, b"", False)


def test_a_slot_the_parent_wrote_without_retention_is_unprotected(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/0000000000", Body=b"forged", IfNoneMatch="*")
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/0000000001", Body=b"governed", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=365), ChecksumAlgorithm="SHA256")
    assert store.create(2, b"mine")
    assert [(s.seq, s.protected) for s in store.read_all()] == [(0, False), (1, False), (2, True)]
    # And the enclave's own create does not overwrite what the parent put there.
    assert store.create(0, b"mine") is False


def test_protection_ends_with_the_retention(server: S3Server, bucket: str) -> None:
    assert store_for(server, bucket).create(0, b"e0")
    later = store_for(server, bucket, clock=lambda: datetime.now(UTC) + DEFAULT_RETENTION + timedelta(days=1))
    [slot] = later.read_all()
    assert slot.protected is False


def test_a_protected_slot_cannot_be_deleted(store: S3LedgerStore, raw: Any, bucket: str) -> None:
    assert store.create(0, b"e0")
    key = f"{PREFIX}/0000000000"
    version = raw.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        raw.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert [(s.seq, s.data, s.protected) for s in store.read_all()] == [(0, b"e0", True)]


def test_a_delete_marker_hides_a_locked_slot_which_is_why_the_bucket_policy_denies_deletes(
    store: S3LedgerStore, raw: Any, bucket: str
) -> None:
    # Object Lock keeps the version, but a plain DeleteObject still stacks a delete marker
    # on top: listings stop showing the key, and If-None-Match no longer sees it, so the
    # slot can even be written again. Only the bucket policy (deny s3:DeleteObject for
    # everyone, kms-policies/ledger-bucket.template.json) stops this.
    assert store.create(0, b"e0")
    raw.delete_object(Bucket=bucket, Key=f"{PREFIX}/0000000000")
    versions = raw.list_object_versions(Bucket=bucket, Prefix=PREFIX)
    assert [v["Key"] for v in versions["Versions"]] == [f"{PREFIX}/0000000000"]
    assert store.read_all() == []
    assert store.create(0, b"rewritten") is True
    assert [s.data for s in store.read_all()] == [b"rewritten"]


# --------------------------------------------------------------------------- failures


def test_wrong_bucket_owner_is_refused(server: S3Server, bucket: str) -> None:
    assert store_for(server, bucket).create(0, b"secret-entry")
    other = store_for(server, bucket, owner="210987654321")
    with pytest.raises(LedgerUnavailable, match="^ledger S3 ListObjectsV2 failed: AccessDenied$"):
        other.read_all()
    with pytest.raises(LedgerUnavailable, match="^ledger S3 PutObject failed: AccessDenied$"):
        other.create(1, b"secret-entry")


def test_a_missing_bucket_is_unavailable(server: S3Server) -> None:
    store = store_for(server, server.unique_bucket("absent"))
    with pytest.raises(LedgerUnavailable, match="ListObjectsV2 failed: NoSuchBucket"):
        store.read_all()
    with pytest.raises(LedgerUnavailable, match="PutObject failed: NoSuchBucket"):
        store.create(0, b"x")


def test_server_down_is_unavailable() -> None:
    down = S3Server(endpoint=f"http://127.0.0.1:{free_port()}", account_id="123456789012")
    store = S3LedgerStore(f"s3://ledger/{PREFIX}?owner=123456789012", down.client())
    with pytest.raises(LedgerUnavailable, match="^ledger S3 ListObjectsV2 failed: EndpointConnectionError$"):
        store.read_all()
    with pytest.raises(LedgerUnavailable, match="^ledger S3 PutObject failed: EndpointConnectionError$"):
        store.create(0, b"x")


def test_a_stopped_server_is_unavailable() -> None:
    with s3_server() as running:
        client = running.client()
        bucket = running.unique_bucket("ledger")
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        store = S3LedgerStore(S3Location(bucket, PREFIX, running.account_id), client)
        assert store.create(0, b"e0")
    with pytest.raises(LedgerUnavailable):
        store.read_all()


# --------------------------------------------------------------------------- stubbed answers moto never gives


def _client_error(status: int, code: str, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


class _ScriptedPuts:
    """A client whose put_object raises the scripted errors in order, then succeeds."""

    def __init__(self, errors: list[ClientError]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.calls += 1
        assert request["IfNoneMatch"] == "*" and request["ObjectLockMode"] == "COMPLIANCE"
        if self.errors:
            raise self.errors.pop(0)
        return {}


LOCATION = f"s3://ledger/{PREFIX}?owner=123456789012"


def test_a_refreshed_client_serves_later_calls(server: S3Server, bucket: str) -> None:
    store = S3LedgerStore(S3Location(bucket, PREFIX, server.account_id), _ScriptedPuts([_client_error(403, "ExpiredToken")]))
    with pytest.raises(LedgerUnavailable, match="^ledger S3 PutObject failed: ExpiredToken$"):
        store.create(0, b"e0")
    store.replace_client(server.client())
    assert store.create(0, b"e0") is True


def test_a_conflict_is_retried_until_the_winner_is_known() -> None:
    client = _ScriptedPuts([_client_error(409, "ConditionalRequestConflict"), _client_error(412, "PreconditionFailed")])
    assert S3LedgerStore(LOCATION, client).create(0, b"x") is False
    assert client.calls == 2
    client = _ScriptedPuts([_client_error(409, "ConditionalRequestConflict")])
    assert S3LedgerStore(LOCATION, client).create(0, b"x") is True
    assert client.calls == 2


def test_endless_conflicts_are_unavailable_not_taken() -> None:
    client = _ScriptedPuts([_client_error(409, "ConditionalRequestConflict")] * 10)
    with pytest.raises(LedgerUnavailable, match="ConditionalRequestConflict"):
        S3LedgerStore(LOCATION, client).create(0, b"x")
    assert client.calls == s3mod.CONFLICT_RETRIES + 1


class _Pages:
    """A client whose listing comes in pages of `size` keys."""

    def __init__(self, keys: list[str], size: int) -> None:
        self.keys, self.size, self.gets = keys, size, 0

    def list_objects_v2(self, **request: Any) -> dict[str, Any]:
        start = int(request.get("ContinuationToken", "0"))
        page = self.keys[start:start + self.size]
        more = start + self.size < len(self.keys)
        answer: dict[str, Any] = {"Contents": [{"Key": k} for k in page], "IsTruncated": more}
        if more:
            answer["NextContinuationToken"] = str(start + self.size)
        return answer

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.gets += 1
        raise _client_error(500, "InternalError", "GetObject")


def test_listing_follows_continuation_tokens() -> None:
    keys = [f"{PREFIX}/{i:010d}" for i in range(7)]
    client = _Pages(keys, size=3)
    store = S3LedgerStore(LOCATION, client)
    assert [seq for seq, _ in store._list_slots()] == list(range(7))
    with pytest.raises(LedgerUnavailable, match="^ledger S3 GetObject failed: InternalError$"):
        store.read_all()


def test_too_many_slots_or_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "MAX_SLOTS", 5)
    monkeypatch.setattr(s3mod, "MAX_LISTED_ENTRIES", 10)
    client = _Pages([f"{PREFIX}/{i:010d}" for i in range(6)], size=2)
    with pytest.raises(LedgerTooLong, match="more than 5 slots"):
        S3LedgerStore(LOCATION, client).read_all()
    assert client.gets == 0
    junk = _Pages([f"{PREFIX}/junk-{i}" for i in range(11)], size=4)
    with pytest.raises(LedgerTooLong, match="more than 10 keys"):
        S3LedgerStore(LOCATION, junk).read_all()


# --------------------------------------------------------------------------- locations

_LOWER = string.ascii_lowercase + string.digits
buckets = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_LOWER),
    st.text(alphabet=_LOWER + "-", min_size=1, max_size=61),
    st.sampled_from(_LOWER),
)
segments = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(string.ascii_letters + string.digits + "_-"),
    st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=20),
)
prefixes = st.lists(segments, min_size=1, max_size=5).map("/".join)
owners = st.text(alphabet=string.digits, min_size=12, max_size=12)


@given(buckets, prefixes, owners)
def test_location_round_trips(bucket: str, prefix: str, owner: str) -> None:
    location = S3Location(bucket, prefix, owner)
    assert parse_s3_location(location.uri) == location
    assert parse_s3_location(location.uri).uri == location.uri


@given(st.text(max_size=120))
@example("s3://ledger/p?owner=123456789012")
@example("s3://ledger/p/?owner=123456789012")
def test_any_text_is_refused_or_canonical(text: str) -> None:
    try:
        location = parse_s3_location(text)
    except InvalidLedgerLocation:
        return
    assert location.uri == text


# Other spellings of one location, each of which S3 or a URL parser might read as the same.
SPELLINGS = [
    lambda b, p, o: f"S3://{b}/{p}?owner={o}",
    lambda b, p, o: f"s3://{b}/{p}/?owner={o}",
    lambda b, p, o: f"s3:///{b}/{p}?owner={o}",
    lambda b, p, o: f"s3://{b}//{p}?owner={o}",
    lambda b, p, o: f"s3://{b}/{p}?owner={o}&x=1",
    lambda b, p, o: f"s3://{b}/{p}?owner={o}#frag",
    lambda b, p, o: f"s3://{b}/{p}?Owner={o}",
    lambda b, p, o: f"s3://{b}/{p}?owner=0{o}",
    lambda b, p, o: f"s3://{b}/{p}",
    lambda b, p, o: f"s3://user@{b}/{p}?owner={o}",
    lambda b, p, o: f"s3://{b}:443/{p}?owner={o}",
    lambda b, p, o: f"s3://{b}/%2F{p}?owner={o}",
    lambda b, p, o: f"s3://{b.upper()}/{p}?owner={o}" if b.upper() != b else f"s3://{b}/./{p}?owner={o}",
    lambda b, p, o: f"s3://{b}/{p}?owner={o} ",
]


@given(buckets, prefixes, owners, st.sampled_from(SPELLINGS))
def test_other_spellings_of_a_location_are_refused(bucket: str, prefix: str, owner: str, spell: Any) -> None:
    with pytest.raises(InvalidLedgerLocation):
        parse_s3_location(spell(bucket, prefix, owner))


@pytest.mark.parametrize("uri", [
    "s3://ledger/p", "s3://ledger?owner=123456789012", "s3://ledger/?owner=123456789012",
    "s3://Ledger/p?owner=123456789012", "s3://le/p?owner=123456789012", "s3://192.168.1.1/p?owner=123456789012",
    "s3://a..b/p?owner=123456789012", "s3://ledger/a//b?owner=123456789012", "s3://ledger/a/../b?owner=123456789012",
    "s3://ledger/./b?owner=123456789012", "s3://ledger/p?owner=12345678901", "s3://ledger/p?owner=1234567890123",
    "https://ledger/p?owner=123456789012", "s3://ledger/p?owner=123456789012&owner=123456789012",
    "s3://ledger/p q?owner=123456789012", "s3://ledger/" + "p" * 513 + "?owner=123456789012", "",
])
def test_invalid_locations(uri: str) -> None:
    with pytest.raises(InvalidLedgerLocation):
        parse_s3_location(uri)


def test_a_location_is_a_config_error_and_needs_a_string() -> None:
    assert issubclass(InvalidLedgerLocation, ConfigError)
    with pytest.raises(InvalidLedgerLocation):
        parse_s3_location(b"s3://ledger/p?owner=123456789012")  # type: ignore[arg-type]
    with pytest.raises(InvalidLedgerLocation):
        S3Location("ledger", "p", "owner")
