"""`hermetic privacy` through the real CLI entry point: output, JSON, exit codes 0/1/2."""
from __future__ import annotations

import json

import pytest

from enclave.privacy import calibration as privacy
from parent.cli import main

BASE = ["--sampling-rate", "0.004", "--delta", "1e-5"]


def run(*argv: str) -> int:
    return main(["privacy", *argv])


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_epsilon_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("epsilon", *BASE, "--noise-multiplier", "1", "--steps", "5000") == 0
    out = capsys.readouterr().out
    expected = privacy.epsilon(0.004, 1.0, 5000, 1e-5)
    assert out.startswith(f"epsilon = {expected:.6g} at delta = 1e-05")
    assert "prv" in out and out.count("\n") == 1


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_json(capsys: pytest.CaptureFixture[str], accountant: str) -> None:
    assert run("epsilon", *BASE, "--noise-multiplier", "1.1", "--steps", "300",
               "--accountant", accountant, "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {
        "epsilon": privacy.epsilon(0.004, 1.1, 300, 1e-5, accountant),
        "sampling_rate": 0.004, "noise_multiplier": 1.1, "steps": 300, "delta": 1e-5,
        "accountant": accountant,
    }


def test_infinite_epsilon_is_null_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    # A noise multiplier this small puts loss mass beyond any finite epsilon above delta.
    assert run("epsilon", "--sampling-rate", "1", "--noise-multiplier", "0.02", "--steps", "1",
               "--delta", "1e-5", "--json") == 0
    assert json.loads(capsys.readouterr().out)["epsilon"] is None


def test_noise(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("noise", "--target-epsilon", "1", *BASE, "--steps", "5000", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    sigma = record["noise_multiplier"]
    assert record["epsilon"] <= 1.0 < privacy.epsilon(0.004, sigma * (1 - 1e-3), 5000, 1e-5)
    assert record["target_epsilon"] == 1.0 and record["steps"] == 5000
    assert run("noise", "--target-epsilon", "1", *BASE, "--steps", "5000", "--accountant", "rdp") == 0
    assert capsys.readouterr().out.startswith("noise multiplier = ")


def test_max_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("max-steps", *BASE, "--noise-multiplier", "1", "--epsilon-budget", "1.5", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    steps = record["max_steps"]
    assert privacy.epsilon(0.004, 1.0, steps, 1e-5) <= 1.5 < privacy.epsilon(0.004, 1.0, steps + 1, 1e-5)


@pytest.mark.parametrize("argv", [
    ["epsilon", "--sampling-rate", "0", "--noise-multiplier", "1", "--steps", "5", "--delta", "1e-5"],
    ["epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "5", "--delta", "1e-5"],
    ["epsilon", "--sampling-rate", "abc", "--noise-multiplier", "1", "--steps", "5", "--delta", "1e-5"],
    ["epsilon", "--sampling-rate", "nan", "--noise-multiplier", "1", "--steps", "5", "--delta", "1e-5"],
    ["epsilon", *BASE, "--noise-multiplier", "-1", "--steps", "5"],
    ["epsilon", *BASE, "--noise-multiplier", "inf", "--steps", "5"],
    ["epsilon", *BASE, "--noise-multiplier", "1", "--steps", "-5"],
    ["epsilon", *BASE, "--noise-multiplier", "1", "--steps", "2.5"],
    ["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "5", "--delta", "1"],
    ["epsilon", *BASE, "--noise-multiplier", "1", "--steps", "5", "--accountant", "gdp"],
    ["epsilon", *BASE, "--noise-multiplier", "1"],
    ["noise", "--target-epsilon", "0", *BASE, "--steps", "5"],
    ["noise", "--target-epsilon", "-2", *BASE, "--steps", "5"],
    ["max-steps", *BASE, "--noise-multiplier", "1", "--epsilon-budget", "-1"],
    [],
])
def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    err = usage_error(capsys, *argv)
    assert "error:" in err


def test_reason_for_a_bad_rate_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1",
                      "--steps", "5", "--delta", "1e-5")
    assert "sampling rate q must be in (0, 1]" in err


def test_unreachable_budget_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("noise", "--target-epsilon", "1e-7", "--sampling-rate", "1", "--steps", "1",
               "--delta", "1e-5") == 1
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: ") and err.count("\n") == 1
    assert "not reached" in err


def test_calibrating_zero_steps_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("noise", "--target-epsilon", "1", *BASE, "--steps", "0") == 1
    assert "steps must be >= 1" in capsys.readouterr().err


def test_epsilon_composes_more_runs_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    from enclave.privacy.ledger import Segment, compose_epsilon

    assert run("epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1.5", "--steps", "30", "--delta", "1e-5",
               "--and", "0.05,2.0,40", "--and", "0.1,1.5,30", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    expected = compose_epsilon([Segment(0.1, 1.5, 30), Segment(0.05, 2.0, 40), Segment(0.1, 1.5, 30)], 1e-5, "prv")
    assert record["epsilon"] == expected
    assert record["runs"] == [{"q": 0.1, "sigma": 1.5, "steps": 30}, {"q": 0.05, "sigma": 2.0, "steps": 40},
                              {"q": 0.1, "sigma": 1.5, "steps": 30}]
    # Exact composition, not the sum of the parts.
    alone = privacy.epsilon(0.1, 1.5, 30, 1e-5)
    assert alone < record["epsilon"] < 2 * alone + privacy.epsilon(0.05, 2.0, 40, 1e-5)


@pytest.mark.parametrize("bad", ["0.1,1.5", "0.1,x,3", "2,1.5,3", "0.1,-1,3"])
def test_epsilon_refuses_a_malformed_run(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1.5", "--steps", "30", "--delta", "1e-5",
            "--and", bad)
    assert exited.value.code == 2
    assert "--and" in capsys.readouterr().err
