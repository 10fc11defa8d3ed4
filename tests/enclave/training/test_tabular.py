"""Tabular jobs: the spec's feature list, the check against the public schema, feature assembly, regression."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from enclave.sealed.public_schema import (
    CategoricalColumn,
    ClassLabel,
    Column,
    NumericColumn,
    RegressionTarget,
    parse_schema,
)
from enclave.training.check import Problem, check_job
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.reference import ReferenceClipping
from enclave.training.jobmodel import job_model_for_schema
from enclave.training.spec import JobSpec, Scale, SpecError
from enclave.training.tabular import Categorical, Numeric, TabularLayout, TabularRecordsUnusable, Target
from enclave.training.trainer import binary_auc, public_metrics

from .sealed_headers import dataset_header

_TYPES: dict[str, pa.DataType] = {"int64": pa.int64(), "double": pa.float64()}


def field(column: Column) -> pa.Field:
    if isinstance(column, (CategoricalColumn, ClassLabel)):
        kind = pa.int32()
    else:
        kind = _TYPES[column.dtype]
    return pa.field(column.name, kind, nullable=False, metadata=column.metadata())


AGE = NumericColumn("age", "int64", 0, 120)
INCOME = NumericColumn("income", "double")
CITY = CategoricalColumn("city", vocabulary=("north", "south", "east"))
ZIP = CategoricalColumn("zip", buckets=16)
DIAGNOSIS = ClassLabel("diagnosis", 2, ("low", "high"))
PRICE = RegressionTarget("price", "double", 0.0, 500.0)


def schema(*columns: Column) -> pa.Schema:
    return pa.schema([field(c) for c in columns])


def header(*columns: Column) -> Any:
    return dataset_header(schema=schema(*columns))


def job(data: dict[str, Any], *, layers: list[dict[str, Any]] | None = None, task: dict[str, str] | None = None,
        model: dict[str, Any] | None = None) -> JobSpec:
    raw: dict[str, Any] = {
        "job": {"name": "tabular"},
        "model": model or {"format": 1, "layers": layers or [{"type": "linear", "out": 8}, {"type": "relu"},
                                                             {"type": "linear", "out": 2}]},
        "data": data,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": {"expected_batch_size": 100, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 20,
                    "noise_multiplier": 1.1},
        "checkpoint": {"key_id": "alias/model"},
    }
    if task is not None:
        raw["task"] = task
    return JobSpec.from_mapping(raw)


def messages(problems: list[Problem]) -> list[str]:
    return [f"{p.where}: {p.message}" for p in problems]


# -- the spec -------------------------------------------------------------------------
def test_a_feature_list_with_scale_and_encoding_parses() -> None:
    spec = job({"features": ["age", "city"], "label": "diagnosis", "categorical": "ids",
                "scale": {"age": {"lo": 0, "hi": 100}}}, task={"kind": "classification"})
    assert spec.data.features == ("age", "city") and spec.data.tabular
    assert spec.data.encoding == "ids" and spec.data.scale_of("age") == Scale(0.0, 100.0)
    canonical = spec.to_canonical()
    assert canonical["data"]["features"] == ["age", "city"]
    assert canonical["data"]["scale"] == {"age": {"lo": 0.0, "hi": 100.0}}
    assert canonical["task"] == {"kind": "classification", "loss": "cross_entropy"}


def test_a_spec_without_the_new_keys_keeps_its_canonical_form() -> None:
    spec = job({"features": "image"})
    canonical = spec.to_canonical()
    assert "task" not in canonical and set(canonical["data"]) == {"train", "features", "label"}
    assert not spec.data.tabular and spec.task.kind == "classification" and spec.task.loss == "cross_entropy"


def test_regression_defaults_to_mse_and_takes_huber() -> None:
    assert job({"label": "price"}, task={"kind": "regression"}).task.loss == "mse"
    assert job({"label": "price"}, task={"kind": "regression", "loss": "huber"}).task.loss == "huber"


@pytest.mark.parametrize(("data", "task", "fragment"), [
    ({"features": ["age", "age"]}, None, "names column 'age' more than once"),
    ({"features": ["age", "diagnosis"], "label": "diagnosis"}, None, "must name different columns"),
    ({"features": []}, None, "must list 1.."),
    ({"features": ["age"], "scale": {"city": {"lo": 0, "hi": 1}}}, None, "not in data.features or data.label"),
    ({"features": ["age"], "scale": {"age": {"lo": 2, "hi": 1}}}, None, "lo below hi"),
    ({"features": ["age"], "scale": {"age": {"lo": 0}}}, None, "data.scale.age.hi is required"),
    ({"features": ["age"], "categorical": "hash"}, None, "data.categorical must be one of one_hot, ids"),
    ({"features": "image", "categorical": "ids"}, None, "applies to a list of feature columns"),
    ({}, {"kind": "regression", "loss": "cross_entropy"}, "task.loss must be one of mse, huber"),
    ({}, {"kind": "ranking"}, "task.kind must be one of classification, regression"),
])
def test_malformed_tabular_specs_are_refused(data: dict[str, Any], task: dict[str, str] | None,
                                             fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        job(data, task=task)


# -- the check ---------------------------------------------------------------------------
FEATURES = {"features": ["age", "city", "zip"], "label": "diagnosis"}
TABLE = (AGE, INCOME, CITY, ZIP, DIAGNOSIS)


def test_a_tabular_classification_job_fits() -> None:
    assert check_job(job(FEATURES), header(*TABLE)) == []


def test_a_missing_column_is_one_problem() -> None:
    found = messages(check_job(job({"features": ["age", "town"], "label": "diagnosis"}), header(*TABLE)))
    assert len(found) == 1 and found[0].startswith("data.features: column 'town' is not in the dataset")


def test_a_label_in_the_feature_list_is_the_wrong_kind() -> None:
    other = ClassLabel("outcome", 2)
    found = messages(check_job(job({"features": ["age", "outcome"], "label": "age2"}),
                               header(AGE, NumericColumn("age2", "int64", 0, 1), other)))
    assert any("column 'outcome' is label, 2 classes" in m and "numeric and categorical" in m for m in found)


def test_an_unbounded_numeric_column_needs_public_constants() -> None:
    found = messages(check_job(job({"features": ["income", "city"], "label": "diagnosis"}), header(*TABLE)))
    assert len(found) == 1
    assert "column 'income' is numeric double, unbounded" in found[0]
    assert "--numeric income:LO:HI" in found[0] and "[data.scale] income" in found[0]
    scaled = job({"features": ["income", "city"], "label": "diagnosis", "scale": {"income": {"lo": 0, "hi": 1e5}}})
    assert check_job(scaled, header(*TABLE)) == []


def test_the_model_must_plan_for_the_assembled_width_and_the_class_count() -> None:
    # age 1 + city 3 + zip 16 = 20 inputs; 2 classes: a 3-output model is refused with what the data gives.
    found = messages(check_job(job(FEATURES, layers=[{"type": "linear", "out": 3}]), header(*TABLE)))
    assert len(found) == 1 and found[0].startswith("model: ")
    assert "input [20]" in found[0] and "'city' one-hot 3" in found[0] and "2 classes" in found[0]


def test_wrong_class_count_for_the_model() -> None:
    three = ClassLabel("diagnosis", 3)
    found = messages(check_job(job(FEATURES), header(AGE, CITY, ZIP, three)))
    assert len(found) == 1 and "3 classes" in found[0]


def test_a_regression_label_with_a_classification_task_is_refused() -> None:
    found = messages(check_job(job({"features": ["age"], "label": "price"}), header(AGE, PRICE)))
    assert found == ["data.label: column 'price' is regression target double, in [0.0, 500.0]; the task is "
                     'classification (the default): set [task] kind = "regression"']


def test_a_class_label_with_a_regression_task_is_refused() -> None:
    found = messages(check_job(job(FEATURES, task={"kind": "regression"}), header(*TABLE)))
    assert any(m.startswith("data.label: column 'diagnosis' is label, 2 classes: low,high; [task] kind = "
                            '"regression" needs a regression target') for m in found)


def test_a_regression_target_needs_bounds_and_one_output() -> None:
    layers = [{"type": "linear", "out": 1}]
    unbounded = RegressionTarget("price", "double")
    found = messages(check_job(job({"features": ["age"], "label": "price"}, layers=layers,
                                   task={"kind": "regression"}), header(AGE, unbounded)))
    assert len(found) == 1 and "unbounded: the loss clips the target to public bounds" in found[0]
    assert check_job(job({"features": ["age"], "label": "price"}, layers=layers, task={"kind": "regression"}),
                     header(AGE, PRICE)) == []
    two = messages(check_job(job({"features": ["age"], "label": "price"}, task={"kind": "regression"}),
                             header(AGE, PRICE)))
    assert len(two) == 1 and two[0].startswith("model: ") and "1 output (regression)" in two[0]


def test_ids_take_categorical_columns_only_and_an_embedding_large_enough() -> None:
    embed = [{"type": "embedding", "vocab": 19, "dim": 4}, {"type": "flatten"}, {"type": "linear", "out": 2}]
    data = {"features": ["city", "zip"], "label": "diagnosis", "categorical": "ids"}
    assert check_job(job(data, layers=embed), header(*TABLE)) == []
    small = [{"type": "embedding", "vocab": 18, "dim": 4}, {"type": "flatten"}, {"type": "linear", "out": 2}]
    found = messages(check_job(job(data, layers=small), header(*TABLE)))
    assert len(found) == 1 and "vocab is 18 but the ids of the listed columns reach 18" in found[0]
    mixed = messages(check_job(job({**data, "features": ["age", "city"]}, layers=embed), header(*TABLE)))
    assert len(mixed) == 1 and "column 'age' is numeric" in mixed[0] and "categorical columns only" in mixed[0]


def test_a_preset_cannot_take_a_tabular_job() -> None:
    found = messages(check_job(job(FEATURES, model={"name": "mlp"}), header(*TABLE)))
    assert found == ["model.name: preset 'mlp' takes 28x28 images and gives 10 classes; a tabular job describes "
                     "its model inline"]


def test_every_problem_is_reported_once() -> None:
    data = {"features": ["income", "town", "city"], "label": "price"}
    found = messages(check_job(job(data), header(*TABLE[:-1], PRICE)))
    assert len(found) == 3, found


def test_a_regression_on_an_image_column_plans_one_output() -> None:
    image = pa.field("image", pa.list_(pa.uint8(), 784), nullable=False,
                     metadata={b"hermetic.kind": b"tensor", b"shape": b"28x28"})
    images = pa.schema([image, field(PRICE)])
    layers = [{"type": "flatten"}, {"type": "linear", "out": 1}]
    spec = job({"features": "image", "label": "price"}, layers=layers, task={"kind": "regression"})
    assert check_job(spec, dataset_header(schema=images)) == []
    model = job_model_for_schema(spec, images)
    assert model.num_classes == 1 and model.tabular is None and model.input.shape == (1, 28, 28)


def test_datasets_of_one_job_share_every_listed_column() -> None:
    first = dataset_header(schema=schema(*TABLE), dataset_id="a-v1")
    other = dataset_header(schema=schema(AGE, CategoricalColumn("city", vocabulary=("north", "south")), ZIP,
                                         DIAGNOSIS), dataset_id="b-v1")
    found = messages(check_job(job({**FEATURES, "train": ["a-v1", "b-v1"]}), [first, other]))
    assert len(found) == 1 and found[0].startswith("b-v1: data.features: column 'city' is int32")


# -- assembly -----------------------------------------------------------------------------
def _table() -> pa.Table:
    return pa.table({
        "age": pa.array([0, 60, 150], pa.int64()),
        "city": pa.array([2, 0, 1], pa.int32()),
        "zip": pa.array([15, 3, 0], pa.int32()),
        "diagnosis": pa.array([1, 0, 1], pa.int32()),
        "price": pa.array([-10.0, 250.0, 500.0], pa.float64()),
    })


def test_numeric_scaling_and_one_hot_with_known_values() -> None:
    layout = job_model_for_schema(job(FEATURES), schema(*TABLE)).tabular
    assert layout == TabularLayout((Numeric("age", 0.0, 120.0), Categorical("city", 3), Categorical("zip", 16)))
    x = layout.assemble([_table()])
    assert x.dtype == torch.float32 and x.shape == (3, 20)
    assert x[:, 0].tolist() == [0.0, 0.5, 1.0]  # 150 is clipped to the public bound 120
    assert x[0, 1:4].tolist() == [0.0, 0.0, 1.0] and x[1, 1:4].tolist() == [1.0, 0.0, 0.0]
    assert x[0, 4 + 15] == 1.0 and x[2, 4] == 1.0 and float(x[:, 4:].sum()) == 3.0


def test_spec_constants_replace_the_schema_bounds() -> None:
    spec = job({**FEATURES, "scale": {"age": {"lo": 0, "hi": 60}}})
    layout = job_model_for_schema(spec, schema(*TABLE)).tabular
    assert layout is not None and layout.assemble([_table()])[:, 0].tolist() == [0.0, 1.0, 1.0]


def test_ids_are_offset_per_column() -> None:
    embed = [{"type": "embedding", "vocab": 19, "dim": 4}, {"type": "flatten"}, {"type": "linear", "out": 2}]
    model = job_model_for_schema(job({"features": ["city", "zip"], "label": "diagnosis", "categorical": "ids"},
                                     layers=embed), schema(*TABLE))
    assert model.input.ids and model.input.shape == (2,)
    assert model.tabular is not None
    x = model.tabular.assemble([_table(), _table()])
    assert x.dtype == torch.int64 and x[:3].tolist() == [[2, 3 + 15], [0, 3 + 3], [1, 3 + 0]]
    assert x.shape == (6, 2)


def test_a_category_outside_the_schema_is_refused_without_its_value() -> None:
    layout = TabularLayout((Categorical("city", 3),))
    bad = pa.table({"city": pa.array([0, 7], pa.int32())})
    with pytest.raises(TabularRecordsUnusable, match="^a category index lies outside the declared categories$"):
        layout.assemble([bad])


def test_the_regression_target_is_clipped_and_scaled_and_metrics_are_in_its_units() -> None:
    spec = job({"features": ["age"], "label": "price"}, layers=[{"type": "linear", "out": 1}],
               task={"kind": "regression"})
    model = job_model_for_schema(spec, schema(AGE, PRICE))
    assert model.num_classes == 1 and model.target == Target("price", None, 0.0, 500.0)
    y = model.target.values(_table())
    assert y.dtype == torch.float32 and y.tolist() == [0.0, 0.5, 1.0]
    outputs = torch.tensor([[0.1], [0.5], [0.8]], dtype=torch.float64)
    metrics = dict(public_metrics(outputs, y, model.target))
    # Errors in price units: 50, 0, -100.
    assert metrics["mae"] == pytest.approx(50.0)
    assert metrics["rmse"] == pytest.approx(np.sqrt((50.0**2 + 100.0**2) / 3))


def test_classification_metrics_are_accuracy_and_auc_for_two_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    outputs = torch.tensor([[0.0, -1.0], [0.0, 0.5], [0.0, 0.2], [0.0, 2.0]], dtype=torch.float64)
    metrics = dict(public_metrics(outputs, labels, Target("diagnosis", 2)))
    assert metrics["accuracy"] == 0.75
    assert metrics["auc"] == pytest.approx(0.75)  # pairs (pos, neg) ranked right: 3 of 4
    three = dict(public_metrics(torch.eye(3, dtype=torch.float64), torch.tensor([0, 1, 1]), Target("d", 3)))
    assert set(three) == {"accuracy"}


def test_auc_counts_ties_half() -> None:
    assert binary_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    assert np.isnan(binary_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


# -- regression losses in the clipping engines --------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_both_engines_clip_regression_losses_alike(loss: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(7, 5), torch.rand(7) * 3
    fast = GhostClipping(model, max_grad_norm=0.5, loss=loss).clipped_sum(x, y)
    reference = ReferenceClipping(model, max_grad_norm=0.5, loss=loss).clipped_sum(x, y)
    for name, total in reference.sums.items():
        torch.testing.assert_close(fast.sums[name], total, rtol=1e-4, atol=1e-6)
    # Each per-sample gradient is clipped, so the sum has norm at most n * C.
    assert float(torch.cat([t.reshape(-1) for t in fast.sums.values()]).norm()) <= 7 * 0.5 + 1e-4


def test_the_public_schema_of_the_test_table_parses() -> None:
    assert parse_schema(schema(*TABLE)).task == "classification"
