from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError
from enclave.training.spec import JobSpec, SpecError

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "jobs" / "fashion-mnist.toml"
# Known answer: SHA-256 of the canonical CBOR of jobs/fashion-mnist.toml.
EXAMPLE_SHA256 = "c2187a147eaae8f5bc4cebb065b94658fca3518c3d8c44fa3e6096b36b6eaac1"

EXAMPLE_CANONICAL = {
    "format": "hermetic-job-spec-v1",
    "job": {"name": "fashion-mnist-dp"},
    "model": {"name": "tanh_cnn"},
    "data": {"train": None, "features": "image", "label": "label"},
    "optimizer": {"name": "sgd", "lr": 4.0, "momentum": 0.9, "weight_decay": 0.0},
    "privacy": {
        "expected_batch_size": 2048,
        "epochs": 40.0,
        "steps": None,
        "max_grad_norm": 0.1,
        "delta": 1e-5,
        "target_epsilon": 3.0,
        "noise_multiplier": None,
        "accountant": "prv",
    },
    "eval": {"public": "fashion-mnist-test", "every_steps": 200},
    "checkpoint": {"every_steps": 500, "key_id": "alias/hermetic-model-owner"},
}

# The same spec as the example, written differently: other order, inline tables,
# integers for floats, other number spellings, comments, no explicit defaults.
REFORMATTED = """
checkpoint = { key_id = "alias/hermetic-model-owner", every_steps = 500 }  # inline
eval.every_steps = 200
eval.public = "fashion-mnist-test"

[privacy]
target_epsilon = 3
delta = 0.00001
max_grad_norm = 1e-1
epochs = 40.0
expected_batch_size = 2_048

[optimizer]
momentum = 0.9
lr = 4
name = "sgd"

[model]
name = 'tanh_cnn'

[job]
name = "fashion-mnist-dp"
"""

MINIMAL = """
[job]
name = "j"
[model]
name = "mlp"
[optimizer]
name = "adam"
lr = 0.001
[privacy]
expected_batch_size = 256
steps = 100
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.1
[checkpoint]
key_id = "k"
"""


def example() -> JobSpec:
    return JobSpec.from_toml(EXAMPLE.read_text())


def base() -> dict[str, Any]:
    return {
        "job": {"name": "j"},
        "model": {"name": "mlp"},
        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
        "privacy": {"expected_batch_size": 256, "epochs": 2, "max_grad_norm": 1.0, "delta": 1e-5,
                    "target_epsilon": 3.0},
        "checkpoint": {"key_id": "k"},
    }


# -- known answers and the canonical form ---------------------------------------------
def test_example_known_answer() -> None:
    spec = example()
    assert spec.to_canonical() == EXAMPLE_CANONICAL
    assert spec.canonical_cbor() == cbor2.dumps(EXAMPLE_CANONICAL, canonical=True)
    assert spec.sha256 == hashlib.sha256(spec.canonical_cbor()).hexdigest() == EXAMPLE_SHA256


def test_canonical_floats_are_floats() -> None:
    canonical = JobSpec.from_toml(REFORMATTED).to_canonical()
    for section, key in [("optimizer", "lr"), ("privacy", "epochs"), ("privacy", "target_epsilon")]:
        assert type(canonical[section][key]) is float
    assert type(canonical["privacy"]["expected_batch_size"]) is int


def test_formatting_and_comments_do_not_change_the_hash() -> None:
    assert JobSpec.from_toml(REFORMATTED).sha256 == EXAMPLE_SHA256
    commented = "# a comment\n" + EXAMPLE.read_text().replace("\n", "   # trailing\n").replace("=", " = ")
    assert JobSpec.from_toml(commented).sha256 == EXAMPLE_SHA256


def test_explicit_defaults_hash_like_omitted_ones() -> None:
    explicit = MINIMAL + '[data]\nfeatures = "image"\nlabel = "label"\n[eval]\nevery_steps = 200\n'
    explicit = explicit.replace("noise_multiplier = 1.1", 'noise_multiplier = 1.1\naccountant = "prv"')
    explicit = explicit.replace("lr = 0.001", "lr = 0.001\nweight_decay = 0")
    assert JobSpec.from_toml(explicit).sha256 == JobSpec.from_toml(MINIMAL).sha256


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('name = "fashion-mnist-dp"', 'name = "fashion-mnist-dp2"'),
        ('name = "tanh_cnn"', 'name = "mlp"'),
        ("lr = 4.0", "lr = 4.000000001"),
        ("momentum = 0.9", "momentum = 0.8"),
        ("weight_decay = 0.0", "weight_decay = 1e-4"),
        ("expected_batch_size = 2048", "expected_batch_size = 2049"),
        ("epochs = 40", "epochs = 41"),
        ("epochs = 40", "steps = 40"),
        ("max_grad_norm = 0.1", "max_grad_norm = 0.2"),
        ("delta = 1e-5", "delta = 1e-6"),
        ("target_epsilon = 3.0", "target_epsilon = 3.0000001"),
        ("target_epsilon = 3.0", "noise_multiplier = 3.0"),
        ('accountant = "prv"', 'accountant = "rdp"'),
        ('features = "image"', 'features = "pixels"'),
        ('label = "label"', 'label = "class"'),
        ('# train = "<dataset id>"', 'train = "fmnist-1"'),
        ('public = "fashion-mnist-test"', 'public = "other"'),
        ("every_steps = 200", "every_steps = 201"),
        ("every_steps = 500", "every_steps = 501"),
        ('key_id = "alias/hermetic-model-owner"', 'key_id = "alias/other"'),
    ],
)
def test_any_value_changes_the_hash(old: str, new: str) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    changed = JobSpec.from_toml(text.replace(old, new, 1))
    assert changed.sha256 != EXAMPLE_SHA256


def test_optional_sections_and_defaults() -> None:
    spec = JobSpec.from_toml(MINIMAL)
    assert spec.data.train == () and (spec.data.features, spec.data.label) == ("image", "label")
    assert spec.optimizer.momentum is None and spec.optimizer.weight_decay == 0.0
    assert spec.privacy.accountant == "prv" and spec.privacy.target_epsilon is None
    assert (spec.eval.public, spec.eval.every_steps) == (None, 200)
    assert spec.checkpoint.every_steps is None
    sgd = JobSpec.from_mapping({**base(), "optimizer": {"name": "sgd", "lr": 1}})
    assert sgd.optimizer.momentum == 0.0


# -- steps and sampling rate ------------------------------------------------------------
def test_steps_for_epochs() -> None:
    spec = example()
    assert spec.sampling_rate(60_000) == 2048 / 60_000
    assert spec.steps_for(60_000) == 1172  # ceil(40 * 60000 / 2048) = ceil(1171.875)
    exact = JobSpec.from_mapping({**base(), "privacy": {**base()["privacy"], "expected_batch_size": 100}})
    assert exact.steps_for(1000) == 20  # 2 epochs at q = 0.1


def test_steps_for_is_exact_where_floats_round_up() -> None:
    # 1 / (1 / 107) is 107.00000000000001 in floating point: a naive ceil gives 108.
    assert math.ceil(1 / (1 / 107)) == 108
    spec = JobSpec.from_mapping({**base(), "privacy": {**base()["privacy"], "epochs": 1, "expected_batch_size": 1}})
    assert spec.steps_for(107) == 107


def test_steps_given_directly() -> None:
    spec = JobSpec.from_toml(MINIMAL)
    assert spec.steps_for(10_000) == 100
    assert spec.sampling_rate(1024) == 0.25


@pytest.mark.parametrize("records", [0, -5, 255, True, 2.5])
def test_steps_for_rejects_bad_record_counts(records: Any) -> None:
    spec = JobSpec.from_toml(MINIMAL)  # B = 256
    with pytest.raises(SpecError):
        spec.steps_for(records)
    with pytest.raises(SpecError):
        spec.sampling_rate(records)


# -- validation errors ---------------------------------------------------------------------
def _set(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base())
    *parents, last = path.split(".")
    node = doc
    for name in parents:
        node = node.setdefault(name, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()

INVALID = [
    # sections
    ("extra", {"x": 1}, "unknown section 'extra'"),
    ("job", _DELETE, "lacks the [job] section"),
    ("model", _DELETE, "lacks the [model] section"),
    ("optimizer", _DELETE, "lacks the [optimizer] section"),
    ("privacy", _DELETE, "lacks the [privacy] section"),
    ("checkpoint", _DELETE, "lacks the [checkpoint] section"),
    ("job", "fashion", "job must be a table"),
    ("data", [1], "data must be a table"),
    # job / model
    ("job.name", _DELETE, "job.name is required"),
    ("job.name", "", "job.name must not be empty"),
    ("job.name", "has space", "job.name must be 1..128"),
    ("job.name", "x" * 129, "job.name is longer than 128"),
    ("job.name", 5, "job.name must be a string, got an integer"),
    ("job.owner", "me", "unknown key 'job.owner'"),
    ("model.name", _DELETE, "model.name is required"),
    ("model.name", ["mlp"], "model.name must be a string, got an array"),
    ("model.name", " mlp", "model.name must be printable without surrounding spaces"),
    ("model.layers", 3, "model.name (a preset) and model.layers (an inline model) exclude each other"),
    ("model.weights", 3, "unknown key 'model.weights'"),
    ("model.weights_sha256", "0" * 64,
     "model.name (a preset) and model.weights_sha256 (an inline model) exclude each other"),
    # data
    ("data.train", "", "data.train must not be empty"),
    ("data.train", 7, "data.train must be a string"),
    ("data.features", "label", "data.features and data.label must name different columns"),
    ("data.label", "a\nb", "data.label must be printable"),
    ("data.test", "x", "unknown key 'data.test'"),
    # optimizer
    ("optimizer.name", "rmsprop", "optimizer.name must be one of sgd, adam"),
    ("optimizer.name", _DELETE, "optimizer.name is required"),
    ("optimizer.lr", _DELETE, "optimizer.lr is required"),
    ("optimizer.lr", 0, "optimizer.lr must be in (0, inf)"),
    ("optimizer.lr", -1.0, "optimizer.lr must be in (0"),
    ("optimizer.lr", float("nan"), "optimizer.lr must be finite"),
    ("optimizer.lr", float("inf"), "optimizer.lr must be finite"),
    ("optimizer.lr", True, "optimizer.lr must be a number, got a boolean"),
    ("optimizer.lr", "4", "optimizer.lr must be a number, got a string"),
    ("optimizer.lr", 2**60, "optimizer.lr is too large"),
    ("optimizer.momentum", 1.0, "optimizer.momentum must be in [0, 1)"),
    ("optimizer.momentum", -0.1, "optimizer.momentum must be in [0, 1)"),
    ("optimizer.weight_decay", -1e-4, "optimizer.weight_decay must be in [0, inf)"),
    ("optimizer.nesterov", True, "unknown key 'optimizer.nesterov'"),
    # privacy
    ("privacy.expected_batch_size", _DELETE, "privacy.expected_batch_size is required"),
    ("privacy.expected_batch_size", 0, "privacy.expected_batch_size must be in [1, 10000000]"),
    ("privacy.expected_batch_size", 10**8, "privacy.expected_batch_size must be in [1, 10000000]"),
    ("privacy.expected_batch_size", 256.0, "privacy.expected_batch_size must be an integer, got a float"),
    ("privacy.expected_batch_size", False, "privacy.expected_batch_size must be an integer, got a boolean"),
    ("privacy.epochs", _DELETE, "exactly one of epochs and steps"),
    ("privacy.steps", 10, "exactly one of epochs and steps"),
    ("privacy.epochs", 0, "privacy.epochs must be in (0, 100000]"),
    ("privacy.epochs", 1e6, "privacy.epochs must be in (0, 100000]"),
    ("privacy.max_grad_norm", _DELETE, "privacy.max_grad_norm is required"),
    ("privacy.max_grad_norm", 0.0, "privacy.max_grad_norm must be in (0"),
    ("privacy.delta", _DELETE, "privacy.delta is required"),
    ("privacy.delta", 0, "privacy.delta must be in (0, 1)"),
    ("privacy.delta", 1, "privacy.delta must be in (0, 1)"),
    ("privacy.target_epsilon", _DELETE, "exactly one of target_epsilon and noise_multiplier"),
    ("privacy.noise_multiplier", 1.0, "exactly one of target_epsilon and noise_multiplier"),
    ("privacy.target_epsilon", 0.0, "privacy.target_epsilon must be in (0"),
    ("privacy.target_epsilon", float("-inf"), "privacy.target_epsilon must be finite"),
    ("privacy.accountant", "gdp", "privacy.accountant must be one of prv, rdp"),
    ("privacy.accountant", 1, "privacy.accountant must be a string"),
    ("privacy.sigma", 1.0, "unknown key 'privacy.sigma'"),
    # eval / checkpoint
    ("eval.every_steps", 0, "eval.every_steps must be in [1,"),
    ("eval.public", "", "eval.public must not be empty"),
    ("eval.private", "x", "unknown key 'eval.private'"),
    ("checkpoint.key_id", _DELETE, "checkpoint.key_id is required"),
    ("checkpoint.key_id", "k" * 2049, "checkpoint.key_id is longer than 2048"),
    ("checkpoint.every_steps", -1, "checkpoint.every_steps must be in [1,"),
    ("checkpoint.every_steps", 1.5, "checkpoint.every_steps must be an integer, got a float"),
    ("checkpoint.path", "/tmp", "unknown key 'checkpoint.path'"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID])
def test_validation_errors(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        JobSpec.from_mapping(_set(path, value))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_base_is_valid() -> None:
    # Guards the table above: every failure comes from its one change.
    assert JobSpec.from_mapping(base()).name == "j"


def test_momentum_is_sgd_only() -> None:
    doc = _set("optimizer.name", "adam")
    with pytest.raises(SpecError, match="optimizer.momentum applies to sgd only"):
        JobSpec.from_mapping(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[job\nname = 1", "not valid TOML"),
        ("[job]\nname = \"a\"\nname = \"b\"", "not valid TOML"),
        ("x = ", "not valid TOML"),
        ("", "lacks the [job] section"),
    ],
)
def test_toml_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        JobSpec.from_toml(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_error_is_a_config_error() -> None:
    assert issubclass(SpecError, ConfigError)
    with pytest.raises(SpecError):
        JobSpec.from_toml(b"[job]")  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        JobSpec.from_mapping(["not", "a", "table"])


# -- properties ---------------------------------------------------------------------------
_scalars = (
    st.text(max_size=12)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["job", "model", "data", "optimizer", "privacy", "eval", "checkpoint", "name", "lr", "x"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys | st.text(max_size=6), _values, max_size=8))
def test_random_documents_only_raise_spec_error(doc: dict[str, Any]) -> None:
    try:
        JobSpec.from_mapping(doc)
    except SpecError:
        pass


_PATHS = [
    "job.name", "model.name", "data.train", "data.features", "data.label", "optimizer.name",
    "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "privacy.expected_batch_size",
    "privacy.epochs", "privacy.steps", "privacy.max_grad_norm", "privacy.delta",
    "privacy.target_epsilon", "privacy.noise_multiplier", "privacy.accountant", "eval.public",
    "eval.every_steps", "checkpoint.every_steps", "checkpoint.key_id",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _values | st.just(_DELETE)), min_size=1, max_size=4))
def test_mutated_valid_specs_parse_or_raise_spec_error(changes: list[tuple[str, Any]]) -> None:
    doc = base()
    for path, value in changes:
        section, key = path.split(".")
        table = doc.setdefault(section, {})
        if value is _DELETE:
            table.pop(key, None)
        else:
            table[key] = value
    try:
        spec = JobSpec.from_mapping(doc)
    except SpecError:
        return
    # Whatever parses has a stable, finite canonical form.
    assert spec.sha256 == JobSpec.from_mapping(doc).sha256
    for section in ("optimizer", "privacy"):
        for value in spec.to_canonical()[section].values():
            if isinstance(value, float):
                assert math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_spec_error(text: str) -> None:
    try:
        JobSpec.from_toml(text)
    except SpecError:
        pass


@pytest.mark.parametrize(("train", "expected", "canonical"), [
    ("a-v1", ("a-v1",), "a-v1"),
    (["a-v1"], ("a-v1",), "a-v1"),
    (["a-v1", "b-v1"], ("a-v1", "b-v1"), ["a-v1", "b-v1"]),
])
def test_data_train_names_one_dataset_or_lists_several(train: Any, expected: tuple[str, ...], canonical: Any) -> None:
    spec = JobSpec.from_mapping({**base(), "data": {"train": train}})
    assert spec.data.train == expected and spec.to_canonical()["data"]["train"] == canonical


@pytest.mark.parametrize(("train", "message"), [
    ([], "data.train must list 1..16 dataset ids, got 0"),
    (["a"] * 17, "data.train must list 1..16 dataset ids, got 17"),
    (["a", 3], "data.train[1] must be a string, got an integer"),
    (["a", ""], "data.train[1] must not be empty"),
    (["a", "b", "a"], "data.train names a dataset more than once: 'a', 'b', 'a'"),
])
def test_bad_data_train_lists_are_refused(train: Any, message: str) -> None:
    with pytest.raises(SpecError) as err:
        JobSpec.from_mapping({**base(), "data": {"train": train}})
    assert str(err.value) == message


def test_an_inline_model_binds_its_initial_weights_into_both_hashes() -> None:
    inline = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear" }]'
    text = EXAMPLE.read_text().replace('name = "tanh_cnn"', inline)
    plain = JobSpec.from_toml(text)
    named = JobSpec.from_toml(text.replace(inline, f'{inline}\nweights_sha256 = "{"0f" * 32}"'))
    assert plain.model.weights_sha256 is None and named.model.weights_sha256 == "0f" * 32
    assert named.to_canonical()["model"] == {**plain.to_canonical()["model"], "weights_sha256": "0f" * 32}
    assert named.model_sha256 != plain.model_sha256 and named.sha256 != plain.sha256
    assert JobSpec.from_toml(EXAMPLE.read_text()).model.weights_sha256 is None
