"""`hermetic train` refuses to resume a tuning job before it reaches the appliance."""
from __future__ import annotations

from pathlib import Path

import pytest

from parent.cli import main
from tests.support.specs import mlp_spec

TUNING = """[eval]
public = "pub"
[tuning]
lr = [0.1, 0.2]
trials = { distribution = "geometric", mean = 2 }
select = { metric = "accuracy/pub" }
"""


def test_a_tuning_job_is_not_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(mlp_spec(key_id="alias/k", name="t", extra=TUNING).replace(
        "noise_multiplier = ", 'accountant = "rdp"\nnoise_multiplier = '))
    sealed = tmp_path / "d.sealed"
    sealed.write_bytes(b"x")
    argv = ["train", str(spec), "--local", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
            "--dataset", f"d={sealed}", "--resume", str(sealed)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "a tuning job cannot be resumed" in err and "hermetic local up" not in err
