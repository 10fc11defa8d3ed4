"""`hermetic privacy frontier`: the accountant's epsilon at each x, as a table, JSON or a PNG plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from enclave.privacy import calibration
from parent.cli import main
from tests.parent.commands.test_privacy_plan import CAP, RECORDS, batch_spec, sealed_with_ledger

RECIPE = ["--sampling-rate", "0.01", "--noise-multiplier", "1.1", "--steps", "200", "--delta", "1e-5"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def frontier_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["privacy", "frontier", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_steps_points_are_the_accountants(capsys: pytest.CaptureFixture[str], accountant: str) -> None:
    record = frontier_json(capsys, *RECIPE, "--vary", "steps", "--from", "10", "--to", "1000", "--points", "5",
                           "--accountant", accountant)
    assert [p["x"] for p in record["points"]] == [10, 258, 505, 752, 1000]
    for point in record["points"]:
        assert point["epsilon"] == calibration.epsilon(0.01, 1.1, point["x"], 1e-5, accountant)
    assert record["epsilon"] == calibration.epsilon(0.01, 1.1, 200, 1e-5, accountant)
    assert (record["vary"], record["accountant"], record["cap"]) == ("steps", accountant, None)


def test_noise_points_are_the_accountants(capsys: pytest.CaptureFixture[str]) -> None:
    record = frontier_json(capsys, *RECIPE, "--vary", "noise", "--points", "4")
    # Default range: half to twice the recipe's noise multiplier.
    xs = [p["x"] for p in record["points"]]
    assert xs[0] == pytest.approx(0.55) and xs[-1] == pytest.approx(2.2) and len(xs) == 4
    for point in record["points"]:
        assert point["epsilon"] == calibration.epsilon(0.01, point["x"], 200, 1e-5, "prv")


def test_an_rdp_point_matches_dp_accounting(capsys: pytest.CaptureFixture[str]) -> None:
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    record = frontier_json(capsys, *RECIPE, "--vary", "steps", "--from", "100", "--to", "500", "--points", "2",
                           "--accountant", "rdp")
    for point in record["points"]:
        reference = rdp_privacy_accountant.RdpAccountant()
        reference.compose(dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), point["x"])
        assert point["epsilon"] == pytest.approx(reference.get_epsilon(1e-5), rel=0.01)


def test_a_spec_gives_the_recipe_and_a_sealed_file_the_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = batch_spec(tmp_path)
    by_records = frontier_json(capsys, "--spec", str(job), "--records", str(RECORDS), "--vary", "steps",
                               "--points", "3")
    assert (by_records["sampling_rate"], by_records["noise_multiplier"], by_records["steps"]) == (0.01, 1.1, 200)
    assert by_records["delta"] == 1e-5 and by_records["cap"] is None
    assert [p["x"] for p in by_records["points"]] == [20, 210, 400]
    data = sealed_with_ledger(tmp_path)
    by_sealed = frontier_json(capsys, "--spec", str(job), "--sealed", str(data), "--vary", "steps", "--points", "3")
    assert by_sealed["cap"] == CAP and by_sealed["points"] == by_records["points"]
    assert main(["privacy", "frontier", "--spec", str(job), "--sealed", str(data), "--vary", "noise",
                 "--points", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("epsilon at delta 1e-05 against noise multiplier (q=0.01, 200 steps; prv)\n")
    assert out.rstrip().endswith(f"cap {CAP:g}") and len(out.splitlines()) == 6


def test_png_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    data = sealed_with_ledger(tmp_path)
    png = tmp_path / "plots" / "frontier.png"
    record = frontier_json(capsys, "--spec", str(batch_spec(tmp_path)), "--sealed", str(data), "--vary", "steps",
                           "--points", "4", "--png", str(png))
    assert record["png"] == str(png)
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in png.parent.iterdir()] == ["frontier.png"]  # no temporary file left


def test_png_without_matplotlib_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # an import of it now fails
    png = tmp_path / "frontier.png"
    assert main(["privacy", "frontier", *RECIPE, "--vary", "steps", "--points", "2", "--png", str(png)]) == 1
    captured = capsys.readouterr()
    assert captured.err == "hermetic: error: --png needs matplotlib (pip install matplotlib)\n"
    assert not png.exists()


@pytest.mark.parametrize("argv, message", [
    (["--vary", "steps"], "a frontier needs --spec JOB.toml, or --sampling-rate, --noise-multiplier and --steps"),
    (["--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "5", "--vary", "steps"],
     "--delta is needed without --spec"),
    (["--spec", "missing.toml", "--records", "10", "--vary", "steps"], "cannot read job spec missing.toml"),
    (["--spec", "job.toml", "--vary", "steps"], "the job's record count is needed"),
    (["--spec", "job.toml", *RECIPE, "--vary", "steps"], "not both"),
    (["--records", "10", *RECIPE, "--vary", "steps"], "they need --spec"),
    ([*RECIPE, "--vary", "steps", "--from", "50", "--to", "10"], "the range must be 0 < --from < --to"),
    ([*RECIPE, "--vary", "steps", "--from", "1.5", "--to", "10"], "a range of steps is whole numbers"),
    ([*RECIPE, "--vary", "noise", "--points", "1"], "--points must be 2..200"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    batch_spec(tmp_path)
    assert main(["privacy", "frontier", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
