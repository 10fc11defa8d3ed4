"""`hermetic privacy plan`: the enclave's plan, each dataset's ledger, and how many more such jobs fit."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.ledger.entry import LedgerEntry, encode_entry, stored_sha256
from enclave.ledger.local import LocalDirectoryStore
from enclave.privacy import calibration
from enclave.privacy.ledger import Segment, compose_epsilon
from parent.cli import main
from parent.privacy_plan import MAX_MORE_JOBS, fits, more_jobs
from parent.seal import seal_dataset
from tests.parent.test_job_check import KEY_ARN, write_spec

RECORDS = 5_000
CAP = 3.0
DELTA = 1e-5
# The spec's run on RECORDS records: q = 50 / 5000.
PRIVACY = "noise_multiplier = 1.1"
BATCH = 'expected_batch_size = 50\n'


class KeyKeepingKms:
    """Wraps nothing: keeps the data key the sealer drew, so the test can sign ledger entries with it."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def encrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.keys.append(kwargs["Plaintext"])
        return {"CiphertextBlob": b"blob", "KeyId": KEY_ARN}


def sealed_with_ledger(tmp_path: Path, name: str = "owner-a", *, records: int = RECORDS,
                       entries: tuple[Segment, ...] = ()) -> Path:
    """A sealed dataset whose `local:` ledger already holds one entry per segment in `entries`."""
    rng = np.random.default_rng(7)
    src = tmp_path / f"{name}.npz"
    np.savez(src, image=rng.integers(0, 256, (records, 784), dtype=np.uint8),
             label=rng.integers(0, 10, records, dtype=np.uint8))
    out, ledger, kms, dataset_id = tmp_path / f"{name}.sealed", tmp_path / "ledger", KeyKeepingKms(), f"{name}-v1"
    seal_dataset(src, out, key_id=KEY_ARN, kms_client=kms, max_epsilon=CAP, delta=DELTA, owner="owner",
                 dataset_id=dataset_id, ledger=f"local:{ledger}", model_owner_keys=["alias/model"])
    store, key, prev = LocalDirectoryStore(ledger, dataset_id), LedgerSigningKey(kms.keys[0], dataset_id), ""
    for seq, segment in enumerate(entries):
        data = encode_entry(LedgerEntry(dataset_id=dataset_id, seq=seq, prev=prev, job_id=f"earlier-{seq}",
                                        nonce=os.urandom(16), accountant="prv", delta=DELTA, segments=(segment,),
                                        created_at=1_700_000_000), key)
        assert store.create(seq, data)
        prev = stored_sha256(data)
    return out


def batch_spec(tmp_path: Path, privacy: str = PRIVACY) -> Path:
    # tanh_cnn takes the 784 values of a record as one image.
    path = write_spec(tmp_path, privacy=privacy)
    path.write_text(path.read_text().replace("expected_batch_size = 100\n", BATCH), encoding="utf-8")
    return path


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["privacy", "plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_plan_is_the_accountants_and_job_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, job = sealed_with_ledger(tmp_path), batch_spec(tmp_path)
    report = plan_json(capsys, str(job), "--sealed", str(data))
    plan = report["plan"]
    assert (plan["sampling_rate"], plan["steps"], plan["noise_multiplier"], plan["accountant"], plan["delta"]) == (
        0.01, 200, 1.1, "prv", DELTA)
    assert plan["epsilon"] == calibration.epsilon(0.01, 1.1, 200, DELTA, "prv")
    assert main(["job", "check", str(job), "--sealed", str(data), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert plan["epsilon"] == checked["planned"][str(data)]["planned_epsilon"]
    assert report["datasets"][0]["with_job"] == checked["ledger"][str(data)]["dataset_epsilon_with_job"]
    # The record count alone plans the same run.
    assert plan_json(capsys, str(job), "--records", str(RECORDS))["plan"] == plan


def test_more_jobs_fit_the_cap_and_one_more_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    earlier = (Segment(0.01, 1.1, 200), Segment(0.02, 0.9, 150))
    data = sealed_with_ledger(tmp_path, entries=earlier)
    report = plan_json(capsys, str(batch_spec(tmp_path)), "--sealed", str(data))
    [dataset] = report["datasets"]
    spent = compose_epsilon(earlier, DELTA, "prv")
    job = Segment(0.01, 1.1, 200)
    assert dataset["dataset_id"] == "owner-a-v1" and dataset["records"] == RECORDS and dataset["cap"] == CAP
    assert dataset["spent"] == spent and dataset["remaining"] == pytest.approx(CAP - spent)
    assert dataset["with_job"] == compose_epsilon([*earlier, job], DELTA, "prv")
    k = dataset["more_jobs"]
    assert k >= 2 and not dataset["more_jobs_capped"]
    assert compose_epsilon([*earlier, *[job] * k], DELTA, "prv") <= CAP
    assert compose_epsilon([*earlier, *[job] * (k + 1)], DELTA, "prv") > CAP
    # Sub-additive: more jobs fit than the remaining budget divided by one job's epsilon.
    assert k >= int((CAP - spent) / report["plan"]["epsilon"])

    assert main(["privacy", "plan", str(batch_spec(tmp_path)), "--sealed", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"{k} jobs like this one still fit under the cap (this one included)" in out
    assert f"cap epsilon {CAP:g} at delta {DELTA:g}" in out


def test_more_jobs_search_bounds() -> None:
    job = Segment(0.01, 1.1, 200)
    one = calibration.epsilon(0.01, 1.1, 200, DELTA)
    assert more_jobs([], job, one * 0.99, DELTA, "prv") == 0  # the job alone passes the cap
    assert more_jobs([], job, one, DELTA, "prv") == 1
    spent = [Segment(0.5, 0.8, 50)]  # a ledger already past a cap of 1: nothing more fits
    assert not fits(spent, job, 0, 1.0, DELTA, "prv") and more_jobs(spent, job, 1.0, DELTA, "prv") == 0
    # Beyond the limit the answer is limit + 1: "more than limit".
    assert more_jobs([], Segment(0.001, 50.0, 1), 10.0, DELTA, "rdp", limit=5) == 6
    assert MAX_MORE_JOBS == 10_000


def test_json_field_names_are_the_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed_with_ledger(tmp_path)
    report = plan_json(capsys, str(batch_spec(tmp_path)), "--sealed", str(data))
    assert {"plan", "datasets", "target"} <= set(report) and report["target"] is None
    assert {"sampling_rate", "steps", "noise_multiplier", "accountant", "delta", "epsilon"} <= set(report["plan"])
    assert {"dataset_id", "records", "cap", "spent", "remaining", "with_job", "more_jobs"} <= set(
        report["datasets"][0])


def test_the_noise_a_target_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asked = plan_json(capsys, str(batch_spec(tmp_path)), "--records", str(RECORDS), "--target-epsilon", "2")
    assert asked["target"] == {"epsilon": 2.0,
                               "noise_multiplier": calibration.noise_multiplier(2.0, DELTA, 0.01, 200, "prv")}
    targeted = plan_json(capsys, str(batch_spec(tmp_path, "target_epsilon = 2.0")), "--records", str(RECORDS))
    assert targeted["target"] == {"epsilon": 2.0, "noise_multiplier": targeted["plan"]["noise_multiplier"]}
    assert targeted["plan"]["noise_multiplier"] == asked["target"]["noise_multiplier"]
    assert targeted["plan"]["epsilon"] <= 2.0


def test_an_over_budget_job_is_planned_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed_with_ledger(tmp_path)
    report = plan_json(capsys, str(batch_spec(tmp_path, "noise_multiplier = 0.4")), "--sealed", str(data))
    assert report["plan"]["epsilon"] > CAP and report["datasets"][0]["more_jobs"] == 0
    assert "exceeds the dataset's budget 3" in report["problems"][0]
    assert main(["privacy", "plan", str(batch_spec(tmp_path, "noise_multiplier = 0.4")), "--sealed", str(data)]) == 0
    out = capsys.readouterr().out
    assert "  this job does not fit under the cap\n" in out and "problem: privacy.noise_multiplier: planned" in out


def test_past_the_search_bound_it_says_more_than(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, job = sealed_with_ledger(tmp_path), batch_spec(tmp_path, "noise_multiplier = 100.0")
    [dataset] = plan_json(capsys, str(job), "--sealed", str(data))["datasets"]
    assert (dataset["more_jobs"], dataset["more_jobs_capped"]) == (MAX_MORE_JOBS, True)
    assert main(["privacy", "plan", str(job), "--sealed", str(data)]) == 0
    assert f"more than {MAX_MORE_JOBS} jobs like this one still fit" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["missing.toml", "--records", "10"], "cannot read job spec"),
    (["job.toml"], "the job's record count is needed"),
    (["job.toml", "--sealed", "missing.sealed"], "missing.sealed"),
    (["broken.toml", "--records", "10"], "broken.toml: "),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)
    (tmp_path / "broken.toml").write_text("[job]\nname = 'x'\n", encoding="utf-8")
    assert main(["privacy", "plan", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert main(["privacy", "plan", *argv, "--json"]) == 1
    assert message in json.loads(capsys.readouterr().out)["error"]


def test_a_file_the_spec_does_not_train_on_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed_with_ledger(tmp_path)
    job = write_spec(tmp_path, data='train = "someone-else"')
    assert main(["privacy", "plan", str(job), "--sealed", str(data)]) == 1
    assert "data.train names 'someone-else'; the sealed files hold 'owner-a-v1'" in capsys.readouterr().err


def test_a_ledger_this_host_cannot_read_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import parent.job_check

    monkeypatch.setattr(parent.job_check, "read_ledger_view", lambda header, s3_client: None)
    data, job = sealed_with_ledger(tmp_path), batch_spec(tmp_path)
    [dataset] = plan_json(capsys, str(job), "--sealed", str(data))["datasets"]
    assert dataset["cap"] == CAP and dataset["ledger_read"] is False
    assert (dataset["spent"], dataset["remaining"], dataset["with_job"], dataset["more_jobs"]) == (None,) * 4
    assert main(["privacy", "plan", str(job), "--sealed", str(data)]) == 0
    assert "not read from this host: spent budget and more jobs unknown" in capsys.readouterr().out


def test_a_job_on_several_datasets_plans_one_run_over_their_union(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a = sealed_with_ledger(tmp_path, "owner-a", entries=(Segment(0.01, 1.1, 200),))
    b = sealed_with_ledger(tmp_path, "owner-b", records=RECORDS * 3)
    job = batch_spec(tmp_path)
    job.write_text(job.read_text().replace("[data]\n", '[data]\ntrain = ["owner-a-v1", "owner-b-v1"]\n'),
                   encoding="utf-8")
    report = plan_json(capsys, str(job), "--sealed", str(a), "--sealed", str(b))
    assert report["plan"]["records"] == RECORDS * 4 and report["plan"]["sampling_rate"] == 50 / (RECORDS * 4)
    assert main(["job", "check", str(job), "--sealed", str(a), "--sealed", str(b), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert report["plan"]["epsilon"] == checked["planned"][str(a)]["planned_epsilon"]
    first, second = report["datasets"]
    assert (first["dataset_id"], second["dataset_id"]) == ("owner-a-v1", "owner-b-v1")
    assert first["spent"] > 0 and second["spent"] == 0.0
    assert first["more_jobs"] < second["more_jobs"]  # the earlier entry leaves owner a less room
