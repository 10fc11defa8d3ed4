"""Models out end to end: a tabular job's sealed checkpoint decrypted to a model directory, predictions on the
public holdout reproducing the certified metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parent.checkpoints import decrypt_checkpoint
from parent.cli import main
from parent.datasets.schema import declaration_from_flags
from parent.model_out import load_model_dir, predict, sealed_arrow_schema, write_model_dir
from tests.integration.conftest import MODEL_OWNER, REGION, DataPath, kms_client
from tests.integration.test_tabular import STEPS, _spec, _train


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predict_on_the_holdout_reproduces_the_released_metrics(
    data_path: DataPath, tmp_path: Path, task: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if task == "classification":
        name = "patients"
        declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                             drop=["cost"], label="diagnosis", classes="low,high")
        spec = _spec(data_path.model_key_id, 2, 'features = ["age", "city"]\nlabel = "diagnosis"')
    else:
        name = "costs"
        declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                             drop=["diagnosis"], target="cost:-50:300")
        spec = _spec(data_path.model_key_id, 1, 'features = ["age", "city"]\nlabel = "cost"',
                     '[task]\nkind = "regression"\nloss = "huber"')
    body = _train(data_path, tmp_path, name, declaration, spec)
    released = {m.name.split("/")[0]: m.value for m in body.metrics if m.step == STEPS}

    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{STEPS:08d}.sealed"
    _, state = decrypt_checkpoint(checkpoint, kms_client=kms_client(data_path.emulator.url, MODEL_OWNER))
    sealed, holdout = tmp_path / f"{name}.sealed", tmp_path / f"{name}-holdout.csv"
    write_model_dir(state, spec, sealed_arrow_schema(str(sealed)), tmp_path / "model")
    prediction = predict(load_model_dir(tmp_path / "model"), holdout)
    assert prediction.rows == 400
    assert dict(prediction.metrics).keys() == released.keys()
    for metric, value in prediction.metrics:
        assert abs(value - released[metric]) <= 1e-9, (metric, value, released[metric])

    assert main(["model", "predict", str(tmp_path / "model"), str(holdout), "--out", str(tmp_path / "p.csv"),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == 400 and printed["metrics"] == dict(prediction.metrics)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 401

    # The command line: the same directory, and a spec of another hash refused in one line.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MODEL_OWNER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MODEL_OWNER[1])
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(spec)
    argv = ["checkpoint", "decrypt", str(checkpoint), "--kms-endpoint", data_path.emulator.url, "--region", REGION,
            "--sealed", str(sealed), "--spec", str(spec_file), "--json"]
    assert main([*argv, "--model-dir", str(tmp_path / "cli-model")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == STEPS
    assert (tmp_path / "cli-model" / "model.safetensors").read_bytes() == (
        tmp_path / "model" / "model.safetensors").read_bytes()
    spec_file.write_text(spec.replace("lr = 0.5", "lr = 0.25"))
    assert main([*argv, "--model-dir", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint was made under spec" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()
