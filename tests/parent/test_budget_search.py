"""`hermetic budget show` on a ledger holding a search entry: composed in RDP from that entry on."""
from __future__ import annotations

import os

import pytest

from enclave.ledger.entry import KIND_SEARCH, SEARCH_VERSION, LedgerEntry, encode_entry, stored_sha256
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.privacy.searches import SearchCharge, compose
from parent.budget import budget_report
from parent.commands.budget import _entry_line
from tests.parent.test_budget import KEY, context, entry
from tests.support.ledgers import MemoryLedgerStore

SEARCH = SearchCharge.of([(0.1, 2.0, 3), (0.1, 2.0, 2)], "geometric", 3.0)


def test_a_search_entry_is_shown_and_composed_in_rdp() -> None:
    store = MemoryLedgerStore()
    store.slots[0] = entry(0, "", 2)
    store.slots[1] = encode_entry(LedgerEntry(
        dataset_id="ds-1", seq=1, prev=stored_sha256(store.slots[0]), job_id="search", nonce=os.urandom(16),
        accountant="rdp", delta=1e-5, segments=(), created_at=1_700_000_000, kind=KIND_SEARCH,
        version=SEARCH_VERSION, search=SEARCH), KEY)
    report = budget_report(context(), store)
    plain = Segment(0.1, 1.0, 2)
    both = compose([plain], [SEARCH], 1e-5, "prv")
    assert report.valid and report.spent_epsilon == pytest.approx(both)
    # The total is an RDP composition whatever accountant was asked for: the report says which.
    assert report.accountant == "rdp" and report.to_json()["accountant"] == "rdp"
    first, second = report.to_json()["entries"]
    assert first["cumulative_epsilon"] == pytest.approx(compose_epsilon([plain], 1e-5, "prv"))
    assert second["cumulative_epsilon"] == pytest.approx(both) and second["search"] == SEARCH.to_dict()
    assert "search of geometric trials (mean 3) over 2 distinct runs at sigma=2" in _entry_line(second)
