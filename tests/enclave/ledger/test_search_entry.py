"""The "search" ledger entry: its format, its version, and what a reader refuses."""
from __future__ import annotations

import dataclasses

import pytest

from enclave.hazmat.cbor import dumps, strict_loads
from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.entry import (
    ENTRY_VERSION,
    KIND_SEARCH,
    SEARCH_VERSION,
    InvalidEntry,
    LedgerEntry,
    decode_entry,
    encode_entry,
)
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge

KEY = LedgerSigningKey(b"k" * 32, "ds")
SEARCH = SearchCharge.of([(0.1, 1.5, 20), (0.05, 1.5, 40), (0.1, 1.5, 20)], "truncated_negative_binomial", 5.0, 0.5)


def entry(**changes: object) -> LedgerEntry:
    base = LedgerEntry(dataset_id="ds", seq=0, prev="", job_id="j", nonce=b"n" * 16, accountant="rdp", delta=1e-5,
                       segments=(), created_at=1, kind=KIND_SEARCH, version=SEARCH_VERSION, search=SEARCH)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # the test's overrides


def test_a_search_entry_round_trips() -> None:
    decoded = decode_entry(encode_entry(entry(), KEY), KEY.public_key)
    assert decoded == entry()
    assert decoded.search is not None and [(r.q, r.steps) for r in decoded.search.runs] == [(0.05, 40), (0.1, 20)]
    assert decoded.body()["search"] == {"runs": [[0.05, 1.5, 40], [0.1, 1.5, 20]],
                                        "distribution": "truncated_negative_binomial", "mean": 5.0, "shape": 0.5}
    assert decoded.steps == 40


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": ENTRY_VERSION}, "version 1 is not 2"),
    ({"segments": (Segment(0.1, 1.0, 2),)}, "a search and no segments"),
    ({"search": None}, "a search and no segments"),
    ({"kind": "reserve", "version": ENTRY_VERSION, "segments": (Segment(0.1, 1.0, 2),)}, "only a search entry"),
])
def test_malformed_search_entries_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEntry, match=message):
        entry(**changes)


def test_a_signed_body_with_a_bad_search_is_invalid() -> None:
    body = entry().body()
    body["search"] = dict(body["search"], mean=0.5)
    data = dumps({"body": dumps(body), "sig": KEY.sign(dumps(body))})
    with pytest.raises(InvalidEntry, match="entry search is invalid"):
        decode_entry(data, KEY.public_key)
    plain = entry(kind="reserve", version=ENTRY_VERSION, segments=(Segment(0.1, 1.0, 2),), search=None).body()
    plain["search"] = entry().body()["search"]
    data = dumps({"body": dumps(plain), "sig": KEY.sign(dumps(plain))})
    with pytest.raises(InvalidEntry, match="exactly the keys"):
        decode_entry(data, KEY.public_key)
    assert strict_loads(dumps(plain), what="x", error=InvalidEntry, canonical=dumps)["kind"] == "reserve"
