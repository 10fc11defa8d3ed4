"""Tabular jobs end to end: a CSV sealed with a public schema, a public CSV re-encoded by it, metrics certified.

Patients whose diagnosis is "high" when they are older than 60 (and a regression
target that grows with age), sealed as `hermetic seal patients.csv --label diagnosis
--classes low,high --numeric age:0:120 --categorical city=north|south|east` would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from enclave.training.spec import JobSpec
from enclave.transport.messages import PUBLIC_PREFIX
from parent.datasets.schema import SchemaDeclaration, declaration_from_flags
from parent.job_check import sealed_public_schema
from parent.public_data import load_public_dataset
from parent.seal import seal_dataset
from parent.sources import BytesSource
from tests.integration.conftest import OWNER, DataPath, kms_client
from tests.integration.test_training import _train_in_process
from tests.support.specs import mlp_spec

STEPS = 30
CITIES = ("north", "south", "east")


def _patients(rng: np.random.Generator, count: int) -> str:
    rows = ["age,city,diagnosis,cost"]
    for _ in range(count):
        age = int(rng.integers(0, 121))
        city = CITIES[int(rng.integers(0, 3))]
        rows.append(f"{age},{city},{'high' if age > 60 else 'low'},{2.0 * age + rng.normal(0, 5):.3f}")
    return "\n".join(rows) + "\n"


def _seal(data_path: DataPath, tmp_path: Path, name: str, declaration: SchemaDeclaration, text: str) -> Path:
    src, out = tmp_path / f"{name}.csv", tmp_path / f"{name}.sealed"
    src.write_text(text)
    seal_dataset(src, out, key_id=data_path.key_id, kms_client=kms_client(data_path.emulator.url, OWNER),
                 max_epsilon=3.0, delta=1e-5, owner="hospital", dataset_id=f"{name}-v1", chunk_size=64 * 1024,
                 ledger=data_path.ledger_location, model_owner_keys=[data_path.model_key_id], schema=declaration)
    return out


EVAL = '[eval]\npublic = "holdout"\nevery_steps = 10'


def _spec(model_key: str, out: int, data: str, task: str = "") -> str:
    layers = f'[{{ type = "linear", out = 16 }}, {{ type = "tanh" }}, {{ type = "linear", out = {out} }}]'
    return mlp_spec(key_id=model_key, name="tabular", model=f"format = 1\nlayers = {layers}", data=data, lr=0.5,
                    batch=100, steps=STEPS, noise=1.5, extra=f"{task}\n{EVAL}")


def _train(data_path: DataPath, tmp_path: Path, name: str, declaration: SchemaDeclaration, spec: str) -> Any:
    rng = np.random.default_rng(13)
    sealed = _seal(data_path, tmp_path, name, declaration, _patients(rng, 2000))
    holdout = tmp_path / f"{name}-holdout.csv"
    holdout.write_text(_patients(rng, 400))
    # Re-encoded on the host by the sealed file's public schema: city and diagnosis become indices.
    public = load_public_dataset("holdout", holdout, schema=sealed_public_schema(str(sealed)))
    streams = [(f"{name}-v1", str(sealed)), (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc))]
    body = _train_in_process(data_path, name, streams, spec, tmp_path / "out")
    assert body.spec_sha256 == JobSpec.from_toml(spec).sha256 and body.steps == STEPS
    assert body.public_datasets[0].sha256 == public.sha256 and body.public_datasets[0].records == 400
    return body


def test_a_tabular_classification_job_with_a_string_label_releases_accuracy_and_auc(
    data_path: DataPath, tmp_path: Path
) -> None:
    declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                         drop=["cost"], label="diagnosis", classes="low,high")
    spec = _spec(data_path.model_key_id, 2, 'features = ["age", "city"]\nlabel = "diagnosis"')
    body = _train(data_path, tmp_path, "patients", declaration, spec)
    final = {m.name: m.value for m in body.metrics if m.step == STEPS}
    assert set(final) == {"accuracy/holdout", "auc/holdout"}
    assert all(m.kind == "public_eval" and m.epsilon_cost == 0.0 for m in body.metrics)
    # Age alone decides the class: well above chance under this noise.
    assert final["accuracy/holdout"] > 0.7 and final["auc/holdout"] > 0.7, body.metrics


def test_a_regression_job_releases_rmse_and_mae(data_path: DataPath, tmp_path: Path) -> None:
    declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                         drop=["diagnosis"], target="cost:-50:300")
    spec = _spec(data_path.model_key_id, 1, 'features = ["age", "city"]\nlabel = "cost"',
                 '[task]\nkind = "regression"\nloss = "huber"')
    body = _train(data_path, tmp_path, "costs", declaration, spec)
    final = {m.name: m.value for m in body.metrics if m.step == STEPS}
    assert set(final) == {"rmse/holdout", "mae/holdout"}
    # In the target's units: a constant guess at the middle would be off by 60 on average.
    assert 0 <= final["mae/holdout"] <= final["rmse/holdout"] < 50, body.metrics
