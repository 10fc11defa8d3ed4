"""`hermetic audit`: the report, its JSON fields, the verdict's exit status, and what it refuses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parent.audit.result import parse_audit_result
from parent.cli import main
from tests.support.specs import mlp_spec

TINY = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear" }]'
SEED = "07" * 32
FIELDS = {"epsilon_certified", "epsilon_lower_bound", "ceiling", "canaries", "guesses", "correct", "confidence",
          "control"}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    # q = 0.1 on 100 records, 60 steps at sigma 2: epsilon about 2.
    path.write_text(mlp_spec(key_id="alias/k", model=TINY, batch=10, steps=60, noise=2.0), encoding="utf-8")
    return path


def _audit(spec: Path, *extra: str) -> list[str]:
    return ["audit", str(spec), "--local", "--records", "100", "--canaries", "200", "--seed", SEED, *extra]


def test_json_report_and_a_consistent_verdict(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_audit(spec), "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    assert FIELDS <= record.keys()
    # What `hermetic report --audit` reads, field for field.
    assert parse_audit_result(out.encode()).to_json() == record
    assert record["verdict"] == "consistent" and record["control"] is False
    assert (record["canaries"], record["guesses"], record["confidence"]) == (200, 40, 0.95)
    assert record["canary_kind"] == "dirac"
    assert record["epsilon_lower_bound"] <= record["epsilon_certified"] < record["ceiling"] + 10


def test_the_control_is_caught_and_the_text_says_so(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_audit(spec, "--control-no-noise", "--guesses", "60")]) == 0
    out = capsys.readouterr().out
    assert "WITHOUT noise" in out and "verdict      caught" in out
    assert "of 60 guesses right, 200 dirac canaries" in out


def test_a_control_that_is_not_caught_exits_1(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two guesses can certify nothing at 95%: the audit cannot see the missing noise.
    assert main([*_audit(spec, "--control-no-noise", "--guesses", "2", "--steps", "5"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"].startswith("missed")


def test_without_local_it_refuses(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(spec), "--json"]) == 1
    assert "pass --local" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize(("option", "value"), [("--confidence", "1"), ("--confidence", "x"), ("--seed", "00"),
                                               ("--canaries", "0")])
def test_malformed_options_are_usage_errors(spec: Path, option: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", str(spec), "--local", option, value])
    assert exit_.value.code == 2


def test_a_public_file_replaces_the_synthetic_records(spec: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.feather

    from parent.audit.canaries import synthetic_schema
    from parent.commands.privacy_plan import load_spec

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(100, 784), dtype=np.uint8)
    schema = synthetic_schema(load_spec(str(spec)))
    table = pa.table([pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 784),
                      pa.array(rng.integers(0, 10, size=100), pa.int64())], schema=schema)
    path = tmp_path / "public.arrow"
    pyarrow.feather.write_feather(table, path)
    argv = ["audit", str(spec), "--local", "--data", str(path), "--canaries", "200", "--seed", SEED, "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 100


def test_sealed_without_data_is_refused(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_audit(spec), "--sealed", str(tmp_path / "x.sealed")]) == 1
    assert "--sealed re-encodes a public file" in capsys.readouterr().err
