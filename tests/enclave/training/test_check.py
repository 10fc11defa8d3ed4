"""check_job: a job against a sealed header's public schema, model registry and budget."""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.sealed.format import CHECKPOINT_PAYLOAD, SealedHeader, build_checkpoint_context, build_encryption_context
from enclave.training.budget import BudgetPlan, plan_budget
from enclave.training.check import BUDGET, CONFIG, Problem, check_job, check_spec, review_dataset, review_job
from enclave.training.models import MODELS, ModelSpec, preprocess
from enclave.training.spec import JobSpec
from enclave.training.trainer import table_arrays
from tests.support.checkpoints import TAG

from .sealed_headers import RECORDS, dataset_header, image_field, label_field

LABEL = label_field()


def spec(model: str = "mlp", *, data: dict[str, str] | None = None, **privacy: Any) -> JobSpec:
    settings_: dict[str, Any] = {"expected_batch_size": 100, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 200,
                                 "noise_multiplier": 1.1}
    settings_.update(privacy)
    return JobSpec.from_mapping({
        "job": {"name": "check"},
        "model": {"name": model},
        "data": data or {},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": {k: v for k, v in settings_.items() if v is not None},
        "checkpoint": {"key_id": "alias/model"},
    })


def with_schema(*fields: pa.Field, **kw: Any) -> SealedHeader:
    return dataset_header(schema=pa.schema(list(fields)), **kw)


def wheres(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fashion_mnist_fits_every_registered_model(model: str) -> None:
    review = review_job(spec(model), dataset_header())
    assert review.ok and review.problems == ()
    assert review.planned == plan_budget(spec(model), dataset_header()).planned
    assert review.planned is not None and review.planned.records == RECORDS


@pytest.mark.parametrize(
    ("shape", "model"),
    [(b"784", "tanh_cnn"), (b"1x28x28", "tanh_cnn"), (b"28x28x1", "scatter_linear"), (None, "tanh_cnn"),
     (b"4x196", "mlp"), (b"784", "mlp"), (b"1x784", "scatter2_linear")],
)
def test_shapes_the_trainer_reads_as_the_model_input_pass(shape: bytes | None, model: str) -> None:
    assert check_job(spec(model), with_schema(image_field(shape=shape), LABEL)) == []


def test_missing_columns_are_each_named() -> None:
    header = with_schema(pa.field("pixels", pa.list_(pa.uint8(), 784)), label_field("y", pa.int64()))
    problems = check_job(spec(), header)
    assert wheres(problems) == ["data.features", "data.label"]
    assert problems[0].message == "column 'image' is not in the dataset (columns: 'pixels', 'y')"
    assert problems[1].message == "column 'label' is not in the dataset (columns: 'pixels', 'y')"
    assert {p.code for p in problems} == {CONFIG}


def test_the_spec_chooses_the_columns() -> None:
    header = with_schema(image_field("pixels"), label_field("y", pa.int64()))
    assert check_job(spec(data={"features": "pixels", "label": "y"}), header) == []


def test_many_columns_are_listed_in_part() -> None:
    fields = [pa.field(f"c{i}", pa.int8()) for i in range(20)]
    [problem, _] = check_job(spec(), with_schema(*fields))
    assert problem.message.endswith("'c6', 'c7' and 12 more)")


def test_duplicate_column_names_are_refused() -> None:
    problems = check_job(spec(), with_schema(image_field(), image_field(), LABEL))
    assert [(p.where, p.message) for p in problems] == [("data.features", "the dataset has 2 columns named 'image'")]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (image_field(value=pa.float32()),
         "column 'image' holds float values, model 'tanh_cnn' needs fixed_size_list<uint8>[784] pixels"),
        (image_field(size=64, shape=b"8x8"),
         "column 'image' holds 64 values per record, model 'tanh_cnn' takes 784 (1x28x28)"),
        (image_field(shape=b"4x196"),
         "column 'image' holds records shaped 4x196, model 'tanh_cnn' takes images shaped 1x28x28"),
        (image_field(shape=b"27x27"), "column 'image' declares records shaped 27x27, which is not its 784 values"),
        (image_field(shape=b"28xx28"), "column 'image' has a malformed shape b'28xx28'"),
        (pa.field("image", pa.list_(pa.uint8())),
         "column 'image' is list<item: uint8>, model 'tanh_cnn' needs fixed_size_list<uint8>[784] pixels"),
        (pa.field("image", pa.binary(784)),
         "column 'image' is fixed_size_binary[784], model 'tanh_cnn' needs fixed_size_list<uint8>[784] pixels"),
    ],
)
def test_a_feature_column_the_model_cannot_take_is_named_with_what_it_needs(field: pa.Field, message: str) -> None:
    problems = check_job(spec("tanh_cnn"), with_schema(field, LABEL))
    assert [(p.where, p.message) for p in problems] == [("data.features", message)]


def test_every_defect_of_one_column_is_listed() -> None:
    problems = check_job(spec("mlp"), with_schema(image_field(size=100, value=pa.int16(), shape=b"10x11"), LABEL))
    assert wheres(problems) == ["data.features"] * 3
    assert ["int16" in problems[0].message, "100 values" in problems[1].message, "10x11" in problems[2].message] == [
        True, True, True]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (pa.float32(), "column 'label' is float, the model needs integer class indices 0..9"),
        (pa.bool_(), "column 'label' is bool, the model needs integer class indices 0..9"),
        (pa.string(), "column 'label' is string, the model needs integer class indices 0..9"),
        (pa.list_(pa.uint8(), 10), "column 'label' is fixed_size_list<item: uint8>[10], the model needs integer "
                                   "class indices 0..9"),
        (pa.dictionary(pa.int8(), pa.string()), "column 'label' is dictionary<values=string, indices=int8, "
                                                "ordered=0>, the model needs integer class indices 0..9"),
    ],
)
def test_labels_must_be_integer_class_indices(label: pa.DataType, message: str) -> None:
    problems = check_job(spec(), with_schema(image_field(), label_field(kind=label)))
    assert [(p.where, p.message) for p in problems] == [("data.label", message)]


@pytest.mark.parametrize("label", [pa.int8(), pa.uint8(), pa.int16(), pa.uint32(), pa.int64()])
def test_every_integer_type_holds_ten_classes(label: pa.DataType) -> None:
    assert check_job(spec(), with_schema(image_field(), label_field(kind=label))) == []


def test_a_label_type_too_narrow_for_the_classes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = ModelSpec(name="mlp", input_shape=(784,), num_classes=200, build=MODELS["mlp"].build)
    monkeypatch.setattr("enclave.training.check.MODELS", {"mlp": wide})
    problems = check_job(spec(), with_schema(image_field(), label_field(kind=pa.int8(), classes=200)))
    assert [(p.where, p.message) for p in problems] == [
        ("data.label", "column 'label' is int8, which cannot hold class indices 0..199")]
    assert check_job(spec(), with_schema(image_field(), label_field(kind=pa.uint8(), classes=200))) == []


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (label_field(classes=None), "column 'label' declares no class count (hermetic.num_classes): seal the data "
                                    "with --num-classes"),
        (label_field(classes=9), "column 'label' declares 9 classes, model 'mlp' has 10"),
        (label_field(classes=1000), "column 'label' declares 1000 classes, model 'mlp' has 10"),
        (pa.field("label", pa.uint8(), metadata={b"hermetic.num_classes": b"010"}),
         "column 'label' declares a malformed class count b'010'"),
        (pa.field("label", pa.uint8(), metadata={b"hermetic.num_classes": b"0"}),
         "column 'label' declares a malformed class count b'0'"),
    ],
)
def test_the_declared_class_count_must_be_the_models(label: pa.Field, message: str) -> None:
    # The sealer checked every label against the declared count: a model with another
    # count could meet a label it cannot take, a failure that depends on the data.
    problems = check_job(spec(), with_schema(image_field(), label))
    assert [(p.where, p.message) for p in problems] == [("data.label", message)]


def test_an_unknown_model_is_named_and_the_columns_still_checked() -> None:
    problems = check_job(spec("resnet152"), with_schema(image_field(value=pa.int8()), pa.field("label", pa.utf8())))
    assert wheres(problems) == ["model.name", "data.features", "data.label"]
    assert problems[0].message.startswith("unknown model 'resnet152'; registered models: mlp, ")
    assert "needs fixed_size_list<uint8> pixels" in problems[1].message


def test_the_dataset_id_must_be_the_one_the_spec_names() -> None:
    problems = check_job(spec(data={"train": "fmnist-v2"}), dataset_header(dataset_id="fmnist-v1"))
    assert [(p.where, p.message) for p in problems] == [
        ("data.train", "names dataset 'fmnist-v2', the sealed file is 'fmnist-v1'")]
    assert check_job(spec(data={"train": "fmnist-v1"}), dataset_header(dataset_id="fmnist-v1")) == []


def test_budget_problems_are_listed_with_the_data_problems() -> None:
    header = with_schema(image_field(size=64, shape=None), LABEL, max_epsilon=1.0, delta=1e-6)
    problems = check_job(spec("mlp", noise_multiplier=0.5), header)
    assert wheres(problems) == ["data.features", "privacy.delta", "privacy.noise_multiplier"]
    assert [p.code for p in problems] == [CONFIG, BUDGET, BUDGET]
    assert problems[1].message == "job delta 1e-05 exceeds the dataset's delta 1e-06"
    assert problems[2].message.startswith("planned epsilon ")
    assert problems[2].message.endswith("(200 steps, q=0.01, sigma=0.5) exceeds the dataset's budget 1")


def test_an_over_budget_run_is_still_planned_for_the_report() -> None:
    review = review_job(spec(noise_multiplier=0.5), dataset_header(max_epsilon=1.0))
    assert wheres(list(review.problems)) == ["privacy.noise_multiplier"]
    assert review.planned is not None and review.planned.planned_epsilon > 1.0
    assert review.planned.max_steps_within_budget < review.planned.steps


def test_a_target_over_budget_is_named_without_a_plan() -> None:
    review = review_job(spec(noise_multiplier=None, target_epsilon=4.0), dataset_header())
    assert [(p.where, p.message) for p in review.problems] == [
        ("privacy.target_epsilon", "target epsilon 4 exceeds the dataset's budget 3")]
    assert review.planned is None


def test_a_batch_larger_than_the_dataset_is_named() -> None:
    review = review_job(spec(expected_batch_size=500), dataset_header(records=100))
    assert [(p.where, p.message) for p in review.problems] == [
        ("privacy.expected_batch_size", "privacy.expected_batch_size 500 exceeds the training set's 100 records")]
    assert review.planned is None


def test_a_checkpoint_is_not_a_dataset() -> None:
    header = SealedHeader(
        key_id="k", encrypted_data_key=b"x", payload=CHECKPOINT_PAYLOAD,
        encryption_context=build_checkpoint_context(job_id="j", spec_sha256="ab" * 32, step=3, auth_tag=TAG),
    )
    review = review_job(spec(), header)
    assert [(p.where, p.message) for p in review.problems] == [
        ("sealed file", "holds a 'hermetic-checkpoint-v1' payload, not a dataset")]
    assert review.planned is None


def test_schema_bytes_that_are_no_arrow_schema_are_a_problem_not_a_crash() -> None:
    junk = b"\xff" * 40
    header = SealedHeader(
        key_id="k", encrypted_data_key=b"x", chunk_size=1 << 16, schema=junk,
        encryption_context=build_encryption_context(
            dataset_id="d", owner="o", max_epsilon=3.0, delta=1e-5, record_count=RECORDS,
            schema_sha256=hashlib.sha256(junk).hexdigest(),
            ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
            model_owner_keys=["alias/model"],
        ),
    )
    problems = check_job(spec(), header)
    assert wheres(problems) == ["schema"]
    assert problems[0].message.startswith("header schema is not an Arrow schema")


def test_problems_serialise_to_where_and_message() -> None:
    assert Problem("data.label", "m", BUDGET).to_json() == {"where": "data.label", "message": "m"}


# -- property: what the check accepts, the trainer reads -----------------------------------------------

def _mostly(valid: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`valid` three times in four, so examples that fit but for one detail are common."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), st.sampled_from(others))


@st.composite
def schemas(draw: st.DrawFn) -> pa.Schema:
    fields = []
    kind = draw(_mostly("fixed", "list", "scalar"))
    value = draw(_mostly(pa.uint8(), pa.int8(), pa.float32(), pa.uint16()))
    name = draw(_mostly("image", "img"))
    if kind == "fixed":
        size = draw(_mostly(784, 64, 785))
        shape = draw(st.sampled_from([None, b"28x28", b"784", b"1x28x28", b"28x28x1", b"4x196", b"8x8", b"x"]))
        fields.append(image_field(name, size, value, shape))
    elif kind == "list":
        fields.append(pa.field(name, pa.list_(value)))
    else:
        fields.append(pa.field(name, value))
    if draw(_mostly(True, False)):
        label = draw(_mostly(pa.uint8(), pa.int64(), pa.float64(), pa.bool_(), pa.string()))
        classes = draw(_mostly(10, None, 9))
        fields.append(label_field(draw(_mostly("label", "y")), label, classes))
    return pa.schema(fields)


def _rows(schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        kind = field.type
        if pa.types.is_fixed_size_list(kind):
            values = pa.array(np.zeros(2 * kind.list_size, dtype=kind.value_type.to_pandas_dtype()))
            columns.append(pa.FixedSizeListArray.from_arrays(values, kind.list_size))
        elif pa.types.is_list(kind):
            columns.append(pa.array([[0], [1]], type=kind))
        elif pa.types.is_string(kind):
            columns.append(pa.array(["0", "1"]))
        else:
            columns.append(pa.array([0, 1]).cast(kind))
    return pa.Table.from_arrays(columns, schema=schema)


@functools.cache
def _fitting_budget() -> BudgetPlan:
    plan = plan_budget(spec(), dataset_header())
    assert plan.breaches == ()
    return plan


@settings(max_examples=300, deadline=None)
@given(schemas(), st.sampled_from(sorted(MODELS)))
def test_a_schema_the_check_accepts_is_one_the_trainer_reads(schema: pa.Schema, model: str) -> None:
    job = spec(model)
    header = dataset_header(schema=schema)
    # The budget does not depend on the schema: plan it once, not once per example.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("enclave.training.check.plan_budget", lambda *_: _fitting_budget())
        problems = check_job(job, header)
    assert all(isinstance(p, Problem) and p.where and p.message for p in problems)
    try:
        rows, _ = table_arrays(_rows(schema), job.data.features, job.data.label, 10)
        preprocess(model, rows)
        readable = True
    except Exception:  # noqa: BLE001  # any failure of the trainer's reading is what the check must foresee
        readable = False
    if not problems:
        assert readable
    # An independent statement of what fits: the one Fashion-MNIST layout, flat or as an image.
    names = schema.names
    image = schema.field("image") if "image" in names else None
    shape = None if image is None or image.metadata is None else image.metadata[b"shape"]
    fits = (
        image is not None and "label" in names
        and image.type == pa.list_(pa.uint8(), 784)
        and pa.types.is_integer(schema.field("label").type)
        and schema.field("label").metadata == {b"hermetic.num_classes": b"10"}
        and (shape in (None, b"28x28", b"784", b"1x28x28", b"28x28x1") or (model == "mlp" and shape == b"4x196"))
    )
    assert (not problems) == fits


def test_the_spec_alone_and_the_dataset_part_make_up_the_whole_check() -> None:
    job = spec("resnet", data={"train": "other"})
    header = with_schema(image_field(value=pa.int8()), LABEL)
    assert [p.where for p in check_spec(job)] == ["model.name"]
    assert [p.where for p in review_dataset(job, header).problems] == ["data.train", "data.features"]
    assert review_job(job, header).problems == (*check_spec(job), *review_dataset(job, header).problems)
    assert check_spec(spec("mlp")) == []


def test_what_the_header_puts_into_a_message_is_bounded() -> None:
    wide = pa.struct([pa.field(f"f{i}", pa.int64()) for i in range(150)])
    long_name = "n" * 5000
    header = with_schema(
        pa.field("image", wide), pa.field("label", wide), pa.field(long_name, pa.int8()),
        pa.field("x", pa.int8(), metadata={b"shape": b"9" * 5000}),
    )
    problems = check_job(spec(data={"features": "x", "label": "missing"}), header)
    assert wheres(problems) == ["data.features", "data.label"]
    assert "'nnnnnnnn" in problems[1].message and "...," in problems[1].message
    assert all(len(p.message) < 400 for p in problems)
    header = with_schema(image_field(shape=b"q" * 5000), pa.field("label", wide))
    problems = check_job(spec(), header)
    assert wheres(problems) == ["data.features", "data.label"]
    assert all(len(p.message) < 400 for p in problems)
    assert problems[1].message.startswith("column 'label' is struct<f0: int64, f1: int64")


# -- a job on several datasets -------------------------------------------------------
def test_several_datasets_plan_one_run_over_their_union() -> None:
    a = dataset_header(dataset_id="a-v1", records=6000, max_epsilon=5.0)
    b = dataset_header(dataset_id="b-v1", records=4000, max_epsilon=8.0, delta=1e-4)
    review = review_job(spec(data={"train": ["a-v1", "b-v1"]}, steps=50), [a, b])
    assert review.problems == ()
    assert review.planned is not None
    # q over the union's 10 000 records, the tightest cap and delta reported.
    assert review.planned.records == 10_000 and review.planned.sampling_rate == 100 / 10_000
    assert (review.planned.max_epsilon, review.planned.budget_delta) == (5.0, 1e-5)


def test_a_run_over_one_owners_cap_names_that_dataset() -> None:
    a = dataset_header(dataset_id="a-v1", records=5000, max_epsilon=100.0)
    b = dataset_header(dataset_id="b-v1", records=5000, max_epsilon=0.5)
    problems = check_job(spec(data={"train": ["a-v1", "b-v1"]}), [a, b])
    assert [(p.where, p.code) for p in problems] == [("privacy.noise_multiplier", BUDGET)]
    assert "exceeds dataset 'b-v1''s budget 0.5" in problems[0].message


def test_a_job_delta_above_one_owners_delta_names_that_dataset() -> None:
    a = dataset_header(dataset_id="a-v1", delta=1e-4)
    b = dataset_header(dataset_id="b-v1", delta=1e-6)
    problems = check_job(spec(data={"train": ["a-v1", "b-v1"]}, delta=1e-5), [a, b])
    assert [p.message for p in problems if p.where == "privacy.delta"] == [
        "job delta 1e-05 exceeds dataset 'b-v1''s delta 1e-06"]


@pytest.mark.parametrize(("field", "where", "shown"), [
    (label_field(classes=5), "data.label", "uint8 with 5 classes"),
    (label_field(kind=pa.int64()), "data.label", "int64 with 10 classes"),
    (image_field(shape=b"784"), "data.features", "shaped 784"),
])
def test_datasets_whose_fields_differ_are_refused(field: pa.Field, where: str, shown: str) -> None:
    fields = {f.name: f for f in (image_field(), LABEL)}
    fields[field.name] = field
    a = dataset_header(dataset_id="a-v1")
    b = with_schema(*fields.values(), dataset_id="b-v1")
    problems = review_job(spec(data={"train": ["a-v1", "b-v1"]}), [a, b]).problems
    mismatch = [p for p in problems if "share a schema" in p.message]
    assert [p.where for p in mismatch] == [f"b-v1: {where}"]
    assert shown in mismatch[0].message and "in a-v1 it is" in mismatch[0].message


def test_each_datasets_own_problems_carry_its_id() -> None:
    a = dataset_header(dataset_id="a-v1")
    b = with_schema(image_field(), label_field(classes=None), dataset_id="b-v1")
    c = dataset_header(dataset_id="c-v1")
    problems = check_job(spec(data={"train": ["a-v1", "b-v1"]}), [a, b, c])
    assert "b-v1: data.label" in wheres(problems)
    assert ("c-v1: data.train", "names datasets 'a-v1', 'b-v1', the sealed file is 'c-v1'") in [
        (p.where, p.message) for p in problems]
