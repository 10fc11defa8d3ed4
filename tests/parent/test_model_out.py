"""Model directories: a checkpoint's weights as safetensors plus model.json, and predictions from them."""
from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from enclave.sealed.public_schema import CategoricalColumn, ClassLabel, NumericColumn, RegressionTarget
from enclave.training.checkpoint import CheckpointState, SamplerState
from enclave.training.jobmodel import job_model_for_schema
from enclave.training.spec import JobSpec
from enclave.training.trainer import public_metrics
from parent.model_out import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    ModelDirError,
    SpecMismatch,
    load_model_dir,
    predict,
    read_card,
    write_model_dir,
    write_predictions,
)
from tests.support.specs import mlp_spec

CITIES = ("north", "south", "east")


def _spec(out: int, label: str, task: str = "") -> str:
    layers = f'[{{ type = "linear", out = 8 }}, {{ type = "tanh" }}, {{ type = "linear", out = {out} }}]'
    return mlp_spec(key_id="alias/model", name="tabular", model=f"format = 1\nlayers = {layers}",
                    data=f'features = ["age", "city"]\nlabel = "{label}"', lr=0.5, batch=100, steps=10, noise=1.5,
                    extra=task)


CLASSIFY = _spec(2, "diagnosis")
REGRESS = _spec(1, "cost", '[task]\nkind = "regression"')


def _schema(regression: bool = False) -> pa.Schema:
    label: ClassLabel | RegressionTarget
    if regression:
        label, label_type = RegressionTarget("cost", "double", -50.0, 300.0), pa.float64()
    else:
        label, label_type = ClassLabel("diagnosis", 2, ("low", "high")), pa.int64()
    columns = [(NumericColumn("age", "double", 0.0, 120.0), pa.float64()),
               (CategoricalColumn("city", vocabulary=CITIES), pa.int32()), (label, label_type)]
    return pa.schema([pa.field(c.name, t, nullable=False, metadata=c.metadata()) for c, t in columns])


def _state(spec_toml: str, schema: pa.Schema, seed: int = 3) -> CheckpointState:
    spec = JobSpec.from_toml(spec_toml)
    model = job_model_for_schema(spec, schema).build(torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return CheckpointState(
        job_id="job-patients", spec_sha256=spec.sha256, step=10, model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(), ledger={"delta": 1e-5, "accountant": "prv", "segments": []},
        sampler=SamplerState(steps=10, q=0.05),
    )


def _csv(path: Path, rows: int, *, label: str | None = "diagnosis") -> Path:
    rng = np.random.default_rng(5)
    header = ["age", "city"] + ([label] if label else [])
    lines = [",".join(header)]
    for _ in range(rows):
        age = int(rng.integers(0, 121))
        cells = [str(age), CITIES[int(rng.integers(0, 3))]]
        if label == "diagnosis":
            cells.append("high" if age > 60 else "low")
        elif label == "cost":
            cells.append(f"{2.0 * age:.3f}")
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference(state: CheckpointState, spec_toml: str, schema: pa.Schema, ages: list[float],
               cities: list[int]) -> torch.Tensor:
    """The in-memory module's outputs, fed by hand: min-max scaled age, one-hot city."""
    job = job_model_for_schema(JobSpec.from_toml(spec_toml), schema)
    module = job.build(torch.Generator().manual_seed(0))
    module.load_state_dict(dict(state.model_state))
    module.eval()
    x = torch.zeros((len(ages), 4), dtype=torch.float32)
    x[:, 0] = torch.tensor(np.clip(ages, 0, 120) / 120.0, dtype=torch.float32)
    x[torch.arange(len(ages)), 1 + torch.tensor(cities)] = 1.0
    with torch.no_grad():
        return module(x).to(torch.float64)


def test_model_dir_predicts_the_in_memory_modules_outputs(tmp_path: Path) -> None:
    schema = _schema()
    state = _state(CLASSIFY, schema)
    result = write_model_dir(state, CLASSIFY, schema, tmp_path / "model")
    assert result.step == 10 and result.spec_sha256 == JobSpec.from_toml(CLASSIFY).sha256
    for name in (CARD_FILE, WEIGHTS_FILE):
        assert stat.S_IMODE((tmp_path / "model" / name).stat().st_mode) == 0o600
    source = _csv(tmp_path / "patients.csv", 50)
    model = load_model_dir(tmp_path / "model")
    prediction = predict(model, source)
    with source.open() as handle:
        rows = list(csv.DictReader(handle))
    expected = _reference(state, CLASSIFY, schema, [float(r["age"]) for r in rows],
                          [CITIES.index(r["city"]) for r in rows])
    assert torch.equal(prediction.outputs, expected)
    labels = torch.tensor([int(r["diagnosis"] == "high") for r in rows])
    assert dict(prediction.metrics) == dict(public_metrics(expected, labels, model.job.target))
    assert {name for name, _ in prediction.metrics} == {"accuracy", "auc"}

    out = write_predictions(model, prediction, tmp_path / "pred.csv")
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 50 and set(written[0]) == {"prediction", "p_low", "p_high"}
    probabilities = torch.softmax(expected, dim=1)
    for k, row in enumerate(written):
        assert row["prediction"] == ("low", "high")[int(expected[k].argmax())]
        assert float(row["p_high"]) == float(probabilities[k, 1])


def test_the_label_column_may_be_absent(tmp_path: Path) -> None:
    schema = _schema()
    write_model_dir(_state(CLASSIFY, schema), CLASSIFY, schema, tmp_path / "model")
    prediction = predict(load_model_dir(tmp_path / "model"), _csv(tmp_path / "x.csv", 7, label=None))
    assert prediction.rows == 7 and prediction.labels is None and prediction.metrics == ()


def test_regression_predictions_are_in_the_targets_units(tmp_path: Path) -> None:
    schema = _schema(regression=True)
    state = _state(REGRESS, schema)
    write_model_dir(state, REGRESS, schema, tmp_path / "model")
    model = load_model_dir(tmp_path / "model")
    source = _csv(tmp_path / "costs.csv", 20, label="cost")
    prediction = predict(model, source)
    assert {name for name, _ in prediction.metrics} == {"rmse", "mae"}
    out = write_predictions(model, prediction, tmp_path / "pred.csv")
    with out.open() as handle:
        values = [float(r["prediction"]) for r in csv.DictReader(handle)]
    assert values == [float(v) for v in prediction.outputs[:, 0] * 350.0 - 50.0]


def test_safetensors_holds_exactly_the_state_dict(tmp_path: Path) -> None:
    schema = _schema()
    state = _state(CLASSIFY, schema)
    write_model_dir(state, CLASSIFY, schema, tmp_path / "model")
    weights = load_file(str(tmp_path / "model" / WEIGHTS_FILE))
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: tuple(v.shape) for k, v in state.model_state.items()}
    assert all(torch.equal(weights[k], v) for k, v in state.model_state.items())


def test_model_json_round_trips(tmp_path: Path) -> None:
    schema = _schema()
    write_model_dir(_state(CLASSIFY, schema), CLASSIFY, schema, tmp_path / "model")
    raw = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    card = read_card(tmp_path / "model")
    assert card.to_json() == raw and ModelCard.from_json(card.to_json()) == card
    spec = JobSpec.from_toml(CLASSIFY)
    assert raw["model_spec_sha256"] == spec.model_sha256 and raw["spec_sha256"] == spec.sha256
    assert raw["task"] == {"kind": "classification", "label": "diagnosis", "num_classes": 2,
                           "classes": ["low", "high"]}
    assert [c["name"] for c in raw["input"]["columns"]] == ["age", "city"]
    assert raw["input"]["columns"][0]["lo"] == 0 and raw["input"]["columns"][0]["hi"] == 120
    assert [c["name"] for c in raw["public_schema"]] == ["age", "city", "diagnosis"]
    assert card.schema.equals(schema, check_metadata=True)


def test_a_spec_of_another_hash_is_refused(tmp_path: Path) -> None:
    schema = _schema()
    state = _state(CLASSIFY, schema)
    other = CLASSIFY.replace("lr = 0.5", "lr = 0.25")
    with pytest.raises(SpecMismatch, match="the checkpoint was made under spec"):
        write_model_dir(state, other, schema, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    schema = _schema()
    write_model_dir(_state(CLASSIFY, schema), CLASSIFY, schema, tmp_path / "model")
    path = tmp_path / "model" / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="weights_sha256"):
        load_model_dir(tmp_path / "model")


def test_a_model_dir_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    schema = _schema()
    state = _state(CLASSIFY, schema)
    for name in ("a", "b"):
        write_model_dir(state, CLASSIFY, schema, tmp_path / name)
    for file in (CARD_FILE, WEIGHTS_FILE):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_export_onnx_computes_the_modules_outputs(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from parent.model_out import export_onnx

    schema = _schema()
    write_model_dir(_state(CLASSIFY, schema), CLASSIFY, schema, tmp_path / "model")
    model = load_model_dir(tmp_path / "model")
    path = export_onnx(model, tmp_path / "model.onnx")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    x = torch.rand((5, 4), generator=torch.Generator().manual_seed(1))
    (got,) = ReferenceEvaluator(graph).run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model.module(x).numpy()
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)

    from parent.cli import main

    assert main(["model", "export-onnx", str(tmp_path / "model"), "--out", str(tmp_path / "cli.onnx")]) == 0
    assert (tmp_path / "cli.onnx").read_bytes() == path.read_bytes()


IMAGE_SPEC = """
[job]
name = "images"
[model]
format = 1
layers = [{ type = "conv2d", out_channels = 2, kernel = 3 }, { type = "flatten" }, { type = "linear", out = 3 }]
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 10
steps = 1
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.0
[checkpoint]
key_id = "alias/model"
"""


def test_an_image_model_predicts_an_npz(tmp_path: Path) -> None:
    from enclave.sealed.public_schema import TensorColumn

    columns = [(TensorColumn("image", "uint8", (5, 5)), pa.list_(pa.uint8(), 25)),
               (ClassLabel("label", 3), pa.int64())]
    schema = pa.schema([pa.field(c.name, t, nullable=False, metadata=c.metadata()) for c, t in columns])
    state = _state(IMAGE_SPEC, schema)
    write_model_dir(state, IMAGE_SPEC, schema, tmp_path / "model")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(9, 5, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, size=9).astype(np.int64)
    np.savez(tmp_path / "x.npz", image=images, label=labels)
    model = load_model_dir(tmp_path / "model")
    prediction = predict(model, tmp_path / "x.npz")
    assert json.loads((tmp_path / "model" / CARD_FILE).read_text())["input"]["shape"] == [1, 5, 5]
    expected_input = model.job.input.tensor(images.reshape(9, 25))
    reference = job_model_for_schema(JobSpec.from_toml(IMAGE_SPEC), schema).build(torch.Generator().manual_seed(0))
    reference.load_state_dict(dict(state.model_state))
    with torch.no_grad():
        assert torch.equal(prediction.outputs, reference.eval()(expected_input).to(torch.float64))
    assert dict(prediction.metrics) == dict(public_metrics(prediction.outputs, torch.from_numpy(labels), None))
    assert prediction.classes == ("0", "1", "2")


def test_a_preset_job_on_a_dataset_sealed_before_the_public_schema(tmp_path: Path) -> None:
    from tests.integration.conftest import spec_toml

    # An image column without a declared shape: no public schema describes it, the trainer never asks.
    schema = pa.schema([pa.field("image", pa.list_(pa.uint8(), 784)), pa.field("label", pa.int64())])
    spec = spec_toml("alias/model")
    write_model_dir(_state(spec, schema), spec, schema, tmp_path / "model")
    card = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    assert card["public_schema"] == [] and card["task"]["classes"] == [str(k) for k in range(10)]
    np.savez(tmp_path / "x.npz", image=np.zeros((3, 784), np.uint8), label=np.array([1, 2, 3]))
    prediction = predict(load_model_dir(tmp_path / "model"), tmp_path / "x.npz")
    assert prediction.rows == 3 and [name for name, _ in prediction.metrics] == ["accuracy"]
