"""`hermetic privacy plan` and `hermetic job check` on a tuning spec: the search's epsilon, with and without tuning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.privacy.calibration import epsilon
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge, compose
from parent.cli import main
from tests.parent.commands.test_privacy_plan import CAP, DELTA, RECORDS, plan_json, sealed_with_ledger
from tests.parent.test_job_check import write_spec
from tests.support.specs import TUNING_PRIVACY


def tuning_spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, privacy=TUNING_PRIVACY)


def search(sigma: float = 1.5) -> SearchCharge:
    q = 100 / RECORDS
    return SearchCharge.of([(q, sigma, 100), (q, sigma, 200)], "geometric", 4.0)


def test_the_plan_states_the_search_with_and_without_tuning(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = tuning_spec(tmp_path)
    report = plan_json(capsys, str(spec), "--records", str(RECORDS))
    plan = report["plan"]
    expected = compose([], [search()], DELTA, "rdp")
    assert plan["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert (plan["steps"], plan["accountant"]) == (200, "rdp")
    alone = epsilon(100 / RECORDS, 1.5, 200, DELTA, "rdp")
    assert plan["search"]["epsilon_without_tuning"] == pytest.approx(alone, rel=1e-12)
    assert plan["search"]["distribution"] == "geometric" and len(plan["search"]["runs"]) == 2
    assert alone < expected
    assert main(["privacy", "plan", str(spec), "--records", str(RECORDS)]) == 0
    text = capsys.readouterr().out
    assert "search of geometric trials (mean 4) over 6 candidates" in text
    assert f"epsilon {expected:.4g} with tuning" in text and f"alone: epsilon {alone:.4g}" in text


def test_a_ledger_with_earlier_jobs_composes_with_the_search_in_rdp(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    earlier = Segment(100 / RECORDS, 1.1, 300)
    data = sealed_with_ledger(tmp_path, entries=(earlier,))
    report = plan_json(capsys, str(tuning_spec(tmp_path)), "--sealed", str(data))
    [dataset] = report["datasets"]
    assert dataset["with_job"] == pytest.approx(compose([earlier], [search()], DELTA, "rdp"), rel=1e-12)
    fitting = max(k for k in range(0, 20) if compose([earlier], [search()] * k, DELTA, "rdp") <= CAP)
    assert dataset["more_jobs"] == fitting


def test_job_check_plans_the_search_and_refuses_it_past_the_cap(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed_with_ledger(tmp_path)
    assert main(["job", "check", str(tuning_spec(tmp_path)), "--sealed", str(data), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    planned = record["planned"][str(data)]
    assert planned["search"]["mean"] == 4.0 and planned["planned_epsilon"] == pytest.approx(
        compose([], [search()], DELTA, "rdp"), rel=1e-12)
    costly = write_spec(tmp_path, "costly.toml", privacy=TUNING_PRIVACY.replace("noise_multiplier = 1.5",
                                                                       "noise_multiplier = 0.7"))
    assert main(["job", "check", str(costly), "--sealed", str(data), "--json"]) != 0
    record = json.loads(capsys.readouterr().out)
    assert any("of the search" in p["message"] for p in record["problems"])


def test_the_frontier_refuses_a_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["privacy", "frontier", "--spec", str(tuning_spec(tmp_path)), "--records", str(RECORDS),
            "--vary", "noise", "--from", "1", "--to", "2"]
    assert main(argv) == 1
    assert "no single-run frontier" in capsys.readouterr().err
