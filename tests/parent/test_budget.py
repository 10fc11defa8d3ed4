"""`hermetic budget show`'s failure paths and the host-side report (the happy path runs in
tests/adversarial/test_ledger_scenario.py, against ledgers a real enclave wrote)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.entry import LedgerEntry, encode_entry, stored_sha256
from enclave.ledger.s3 import S3LedgerStore
from enclave.ledger.store import LedgerUnavailable
from enclave.privacy.ledger import Segment, compose_epsilon
from parent.budget import budget_report, open_ledger_store
from parent.cli import main
from tests.support.certificates import sha256_hex
from tests.support.ledgers import MemoryLedgerStore

KEY = LedgerSigningKey(bytes(range(32)), "ds-1")


def context(ledger: str = "s3://ledgers/hermetic?owner=123456789012") -> dict[str, str]:
    from enclave.sealed.format import build_encryption_context

    return build_encryption_context(dataset_id="ds-1", owner="o", max_epsilon=3.0, delta=1e-5, record_count=10,
                                    schema_sha256=sha256_hex("schema"), ledger=ledger,
                                    ledger_public_key=KEY.public_key_hex,
                                    model_owner_keys=["alias/hermetic-model-owner"])


def entry(seq: int, prev: str, steps: int) -> bytes:
    return encode_entry(LedgerEntry(dataset_id="ds-1", seq=seq, prev=prev, job_id=f"job-{seq}", nonce=os.urandom(16),
                                    accountant="prv", delta=1e-5, segments=(Segment(0.1, 1.0, steps),),
                                    created_at=1_700_000_000), KEY)


def test_the_report_recomputes_what_the_entries_spend_and_skips_junk() -> None:
    store = MemoryLedgerStore()
    store.slots[0] = entry(0, "", 2)
    store.slots[1] = b"junk"
    store.slots[2] = entry(2, stored_sha256(store.slots[0]), 3)
    report = budget_report(context(), store)
    spent = compose_epsilon([Segment(0.1, 1.0, 2), Segment(0.1, 1.0, 3)], 1e-5, "prv")
    assert report.valid and report.spent_epsilon == pytest.approx(spent)
    assert report.remaining_epsilon == pytest.approx(3.0 - spent)
    shown = report.to_json()
    assert [e["slot"] for e in shown["entries"]] == [0, 2] and shown["ignored"][0]["slot"] == 1
    assert shown["entries"][1]["cumulative_epsilon"] == pytest.approx(spent)
    assert shown["entries"][0]["created_at"] == "2023-11-14T22:13:20+00:00"


def test_an_s3_ledger_entry_the_store_does_not_protect_fails_verification() -> None:
    store = MemoryLedgerStore(protected=False)
    store.slots[0] = entry(0, "", 2)
    report = budget_report(context(), store)
    assert not report.valid and "does not protect" in (report.problem or "") and report.remaining_epsilon is None


def test_the_host_reads_local_and_s3_ledgers_by_their_one_grammar(tmp_path: Path) -> None:
    assert open_ledger_store(f"local:{tmp_path}", "ds-1").read_all() == []
    store = open_ledger_store("s3://ledgers/hermetic?owner=123456789012", "ds-1", s3_client=object())
    assert isinstance(store, S3LedgerStore) and store.s3_location.prefix == "hermetic/ds-1"
    for bad in ("s3://ledgers/hermetic", "file:///x"):
        with pytest.raises(LedgerUnavailable, match="ledger location"):
            open_ledger_store(bad, "ds-1", s3_client=object())


def test_a_dataset_id_needs_the_local_appliance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["budget", "show", "no-such-dataset", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)
    assert error["code"] == "config" and "needs --local" in error["error"]


def test_a_dataset_the_local_appliance_never_sealed_is_named(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tests.parent.test_appliance import make_state

    make_state(tmp_path).save()
    assert main(["budget", "show", "ds-1", "--local", str(tmp_path)]) == 1
    assert "no dataset 'ds-1' was sealed with the local appliance" in capsys.readouterr().err


def test_a_recorded_context_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.parent.test_appliance import make_state

    state = make_state(tmp_path)
    state.save()
    path = state.dataset_context_file("ds-1")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**context(), "ledger_public_key": "zz"}))
    assert main(["budget", "show", "ds-1", "--local", str(tmp_path), "--json"]) == 1
    assert "ledger_public_key" in json.loads(capsys.readouterr().out)["error"]
    path.write_text(json.dumps(context(f"local:{tmp_path / 'ledger'}")))
    assert main(["budget", "show", "ds-1", "--local", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["valid"], shown["spent_epsilon"], shown["remaining_epsilon"], shown["entries"]) == (True, 0.0, 3.0, [])
    assert "does not exist" in shown["note"]
