"""The job's model: a preset name or an inline declarative model in the spec, checked against the schema."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from enclave.hazmat.csprng import Csprng
from enclave.training.check import check_job, check_spec
from enclave.training.jobmodel import ModelInput, fixed_front, inline_input, job_model
from enclave.training.modelfmt.presets import PRESET_CLASSES, PRESET_INPUT_SHAPES, PRESETS, UnknownPreset, preset_format
from enclave.training.modelfmt.spec import parse_model
from enclave.training.models import MODELS, build_model, model_generator, preprocess
from enclave.training.spec import JobSpec, SpecError

from .sealed_headers import dataset_header, image_field, label_field

#: The canonical hashes of the presets: what a certificate of a `name = ...` job states as
#: model_spec_sha256. Changing a preset changes its hash, and so what its certificates say.
PRESET_SHA256 = {
    "mlp": "3a3307400853f95f4d816e8e47c0f4a1519d52ed9ac382b6467364ef81d53cff",
    "tanh_cnn": "452a75ba181c57bc3e07f0ec052052ef85c48fc7238166adc7d14dee756139e5",
    "scatter_linear": "26fb44fce7053f0e229d86d045d09c23d19ffbfd7fab551e0fe64fbe2de5df39",
    "scatter2_linear": "a311392e5fef7a887750b8ac274a1a2a023ac89e4d453124b669ea7b1e26445a",
}

SMALL = {"format": 1, "layers": [{"type": "flatten"}, {"type": "linear", "out": 16}, {"type": "relu"},
                                 {"type": "linear"}]}
CONV = {"format": 1, "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
                                {"type": "relu"}, {"type": "flatten"}, {"type": "linear"}]}


def doc(model: Any) -> dict[str, Any]:
    return {
        "job": {"name": "inline"},
        "model": model,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": {"expected_batch_size": 100, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 20,
                    "noise_multiplier": 1.1},
        "checkpoint": {"key_id": "alias/model"},
    }


def spec(model: Any) -> JobSpec:
    return JobSpec.from_mapping(doc(model))


def header(size: int = 784, shape: bytes | None = b"28x28", classes: int | None = 10) -> Any:
    return dataset_header(schema=pa.schema([image_field(size=size, shape=shape), label_field(classes=classes)]))


# -- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_named_preset_is_its_model_format_and_keeps_its_spec_form(name: str) -> None:
    job = spec({"name": name})
    assert job.model_format == preset_format(name) == parse_model(PRESETS[name])
    assert job.model_sha256 == PRESET_SHA256[name]
    # The spec hash of a named model is unchanged by inline models (test_spec pins one).
    assert job.to_canonical()["model"] == {"name": name}


def test_an_inline_model_is_parsed_and_hashed_in_its_canonical_form() -> None:
    job = spec(SMALL)
    assert job.model.name is None and job.model_format == parse_model(SMALL)
    assert job.model_sha256 == parse_model(SMALL).sha256
    assert job.to_canonical()["model"] == parse_model(SMALL).to_canonical()
    # Spelled otherwise (kernel 3 as [3, 3], defaults written out): the same spec and model hash.
    spelled = {"format": 1, "layers": [{"type": "conv2d", "out_channels": 4, "kernel": [3, 3],
                                        "stride": 1, "padding": [1, 1]}, {"type": "relu"},
                                       {"type": "flatten"}, {"type": "linear", "bias": True}]}
    assert spec(spelled).sha256 == spec(CONV).sha256
    assert spec(spelled).model_sha256 == spec(CONV).model_sha256
    assert spec(CONV).sha256 != job.sha256
    # A preset written inline is the same model (hash) but another spec: the spec says what was written.
    inline_mlp = spec({k: [dict(layer) for layer in v] if k == "layers" else v for k, v in PRESETS["mlp"].items()})
    assert inline_mlp.model_sha256 == spec({"name": "mlp"}).model_sha256
    assert inline_mlp.sha256 != spec({"name": "mlp"}).sha256


def test_inline_models_from_toml() -> None:
    text = """
[job]
name = "toml-inline"
[model]
format = 1
layers = [
  { type = "reshape", shape = [1, 28, 28] },
  { type = "conv2d", out_channels = 8, kernel = 5, stride = 2 },
  { type = "relu" },
  { type = "flatten" },
  { type = "linear" },
]
[optimizer]
name = "adam"
lr = 0.001
[privacy]
expected_batch_size = 64
steps = 10
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.0
[checkpoint]
key_id = "k"
"""
    job = JobSpec.from_toml(text)
    assert [node.op for node in job.model_format.nodes] == ["reshape", "conv2d", "relu", "flatten", "linear"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "mlp", "format": 1}, "model.name (a preset) and model.format (an inline model) exclude each other"),
        ({"name": "mlp", **SMALL}, "model.name (a preset) and model.format (an inline model) exclude each other"),
        ({**SMALL, "weights": "x"}, "unknown key 'model.weights'"),
        ({}, "model.name is required"),
        ({"layers": SMALL["layers"]}, "model.format is required"),
        ({"format": 2, "layers": SMALL["layers"]}, "model.format must be 1, got 2"),
        ({"format": 1, "layers": [{"type": "lambda"}]}, "model.layers[0]: unknown layer type 'lambda'"),
        ({"format": 1, "layers": [{"type": "linear", "out": 0}]}, "model.layers[0] (linear): out"),
        ({"format": 1, "layers": SMALL["layers"], "graph": []}, "exactly one of layers"),
    ],
)
def test_malformed_model_sections_are_refused_with_one_line(model: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(model)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_preset_parses_but_the_check_names_it() -> None:
    job = spec({"name": "resnet152"})
    with pytest.raises(UnknownPreset, match="unknown model 'resnet152'; registered models: mlp, "):
        _ = job.model_format
    assert [p.where for p in check_spec(job)] == ["model.name"]


# -- the check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "shape", "classes"),
    [
        (SMALL, 784, b"28x28", 10),
        (SMALL, 784, None, 10),
        (SMALL, 20, None, 3),
        (CONV, 784, b"28x28", 10),
        (CONV, 768, b"16x16x3", 7),
        ({"format": 1, "layers": [{"type": "linear"}]}, 5, None, 2),
    ],
)
def test_an_inline_model_that_fits_its_data_passes(model: dict[str, Any], size: int, shape: bytes | None,
                                                   classes: int) -> None:
    assert check_job(spec(model), header(size, shape, classes)) == []


def _model_problems(model: dict[str, Any], **kw: Any) -> list[str]:
    problems = check_job(spec(model), header(**kw))
    assert all(p.where == "model" and "\n" not in p.message for p in problems)
    return [p.message for p in problems]


def test_an_inline_model_for_other_data_is_refused_in_terms_of_the_schema() -> None:
    # A flat chain built for 784 inputs fed 768 values.
    fixed = {"format": 1, "layers": [{"type": "reshape", "shape": [1, 28, 28]}, {"type": "flatten"},
                                     {"type": "linear"}]}
    (message,) = _model_problems(fixed, size=768, shape=b"16x16x3")
    assert message.startswith("model.layers[0] (reshape): ")
    assert message.endswith("(column 'image' gives 16x16x3 records as input [3, 16, 16], column 'label' 10 classes)")
    # Conv2d on flat records.
    (message,) = _model_problems(CONV, size=784, shape=None)
    assert message.startswith("model.layers[0] (conv2d): ") and "input [784]" in message
    # The output layer fixed at 10 logits on 5 declared classes.
    ten = {"format": 1, "layers": [{"type": "flatten"}, {"type": "linear", "out": 10}]}
    (message,) = _model_problems(ten, classes=5)
    assert "out is 10 but the model must give one logit per class, 5" in message


def test_a_model_beyond_the_format_limits_is_refused() -> None:
    huge = {"format": 1, "layers": [{"type": "flatten"}, {"type": "linear", "out": 65536}, {"type": "linear"}]}
    (message,) = _model_problems(huge)
    assert message.startswith("model.layers[1] (linear): the model reaches 51,445,760 parameters here")
    wide = {"format": 1, "layers": [{"type": "conv2d", "out_channels": 16384, "kernel": 1}, {"type": "flatten"},
                                    {"type": "linear", "out": 1}, {"type": "linear"}]}
    (message,) = _model_problems(wide)
    assert "activations reach" in message and "more than the limit of 8,000,000" in message


def test_every_problem_is_collected() -> None:
    # Columns wrong and the model unplannable: the column problems, and no model problem on top
    # (the model is planned only against columns it can read).
    problems = check_job(spec(CONV), header(shape=b"4x4", classes=None))
    assert [p.where for p in problems] == ["data.features", "data.label"]
    assert problems[0].message == "column 'image' declares records shaped 4x4, which is not its 784 values"
    job = JobSpec.from_mapping({**doc(CONV), "data": {"train": "other"}})
    assert [p.where for p in check_job(job, header(shape=None))] == ["data.train", "model"]


def test_an_embedding_reading_pixels_needs_every_uint8_value() -> None:
    model = {"format": 1, "layers": [{"type": "embedding", "vocab": 100, "dim": 4}, {"type": "mean_pool"},
                                     {"type": "linear"}]}
    (message,) = _model_problems(model, size=16, shape=None)
    assert message == "model.layers[0] (embedding): vocab is 100 but reads the uint8 values of column 'image' " \
                      "directly, up to 255"
    model["layers"][0]["vocab"] = 256
    assert _model_problems(model, size=16, shape=None) == []


# -- the input layout and the build --------------------------------------------------------------


def test_the_input_layout_of_records() -> None:
    assert inline_input(784, None, parse_model(SMALL)) == ModelInput((784,), (784,))
    assert inline_input(784, (28, 28), parse_model(SMALL)) == ModelInput((28, 28), (1, 28, 28))
    assert inline_input(768, (16, 16, 3), parse_model(CONV)) == ModelInput((16, 16, 3), (3, 16, 16), True)
    rows = np.arange(2 * 768, dtype=np.int64).reshape(2, 768).astype(np.uint8)
    x = inline_input(768, (16, 16, 3), parse_model(CONV)).tensor(rows)
    # Channel c of pixel (h, w) is byte (h * 16 + w) * 3 + c of the record.
    images = rows.reshape(2, 16, 16, 3)
    scaled = (images[1, 5, 7, 2] / 255.0 - 0.2860) / 0.3530
    assert x.shape == (2, 3, 16, 16) and math.isclose(float(x[1, 2, 5, 7]), scaled, rel_tol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_named_job_builds_its_registered_model(name: str) -> None:
    """Weights, outputs and inputs as the registry's, from the trainer's own seeding."""
    job = job_model(spec({"name": name}), header())
    assert job.input.shape == PRESET_INPUT_SHAPES[name] == MODELS[name].input_shape
    assert job.num_classes == PRESET_CLASSES == MODELS[name].num_classes
    built = job.build(model_generator(Csprng(bytes(32)).fork(b"model-init")))
    expected = build_model(name, rng=Csprng(bytes(32)).fork(b"model-init"))
    for ours, theirs in zip(built.parameters(), expected.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    rows = np.random.default_rng(0).integers(0, 256, (4, 784), dtype=np.uint8)
    x = job.input.tensor(rows)
    assert torch.equal(x, preprocess(name, rows))
    torch.testing.assert_close(built.eval()(x), expected.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["scatter_linear", "scatter2_linear"])
def test_a_scattering_front_is_computed_once_and_the_head_holds_every_parameter(name: str) -> None:
    job = job_model(spec({"name": name}), header())
    model = job.build(torch.Generator().manual_seed(0)).eval()
    front = fixed_front(job.format, model, job.plan())
    assert front is not None
    assert [id(p) for p in front.head.parameters()] == [id(p) for p in model.parameters()]
    rows = np.random.default_rng(1).integers(0, 256, (3, 784), dtype=np.uint8)
    features = front.features(job.input, rows)
    torch.testing.assert_close(front.head(features), model(job.input.tensor(rows)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "tanh_cnn"])
def test_models_without_a_scattering_front_train_whole(name: str) -> None:
    job = job_model(spec({"name": name}), header())
    assert fixed_front(job.format, job.build(torch.Generator().manual_seed(0)), job.plan()) is None


def test_an_inline_graph_is_checked_like_a_chain() -> None:
    text = """
[job]
name = "graph"
[model]
format = 1
graph = [
  { name = "flat", type = "flatten", inputs = ["input"] },
  { name = "a", type = "linear", out = 784, inputs = ["flat"] },
  { name = "sum", type = "add", inputs = ["a", "flat"] },
  { name = "logits", type = "linear", inputs = ["sum"] },
]
output = "logits"
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 100
steps = 20
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.1
[checkpoint]
key_id = "alias/model"
"""
    job = JobSpec.from_toml(text)
    assert job.model_format.form == "graph" and job.to_canonical()["model"]["output"] == "logits"
    assert check_job(job, header()) == []
    (problem,) = check_job(job, header(size=768, shape=b"16x16x3"))
    assert problem.where == "model" and problem.message.startswith("model.graph[2] 'sum' (add): ")


def test_a_model_reading_ids_gets_the_uint8_values_as_int64() -> None:
    model = parse_model({"format": 1, "layers": [{"type": "embedding", "vocab": 256, "dim": 4},
                                                 {"type": "mean_pool"}, {"type": "linear"}]})
    model_input = inline_input(16, None, model)
    assert model_input == ModelInput((16,), (16,), ids=True)
    rows = np.arange(32, dtype=np.uint8).reshape(2, 16) * 8
    x = model_input.tensor(rows)
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(rows.astype(np.int64)))
