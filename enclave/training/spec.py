"""The job spec: a TOML file that selects a model and its hyper-parameters.

No code comes with a job: a spec names a preset model of the image or describes one
as data in the closed declarative format (`enclave.training.modelfmt`), and sets
numbers. Schema (unknown sections and keys are refused; every message names the key)::

    [job]        name = "fashion-mnist-dp"          # 1..128 of [A-Za-z0-9._-]
    [model]      name = "tanh_cnn"                  # a preset (modelfmt.presets), checked by the job check
      or         format = 1                         # an inline model, parsed strictly here:
                 layers = [{ type = "linear", out = 128 }, ...]   # a chain, or
                 graph = [{ name = "a", type = ..., inputs = [...] }, ...] and output = "a"
                 weights_sha256 = "<64 hex>"        # optional: start from this public safetensors file
    [data]       train = "<dataset id>" | ["<id>", ...]  # optional: default the job's only sealed dataset;
                                                    # a list trains on the union, streamed in its order
                 features = "image"                 # optional, default "image": one tensor or sequence column,
                   or ["age", "city", ...]          # or numeric and categorical columns, assembled in order
                 label = "label"                    # optional, default "label": a class label or a target
                 categorical = "one_hot" | "ids"    # optional, default "one_hot" (listed features only)
    [data.scale] age = { lo = 0, hi = 120 }         # optional: public min-max constants for a numeric
                                                    # feature or the target (default: the schema's bounds)
    [task]       kind = "classification" | "regression"   # optional section, default classification
                 loss = "cross_entropy" | "mse" | "huber" # optional: cross_entropy, or mse for regression
    [optimizer]  name = "sgd" | "adam"
                 lr = 4.0                           # finite, > 0
                 momentum = 0.9                     # sgd only, [0, 1), default 0.0
                 weight_decay = 0.0                 # finite, >= 0, default 0.0
    [privacy]    expected_batch_size = 2048         # B; the sampling rate is q = B / N
                 epochs = 40 | steps = N            # exactly one
                 max_grad_norm = 0.1                # C
                 delta = 1e-5
                 target_epsilon = 3.0 | noise_multiplier = 1.2   # exactly one
                 accountant = "prv" | "rdp"         # optional, default "prv"
    [eval]       public = "<public dataset name>"   # optional section; public is optional
                 every_steps = 200                  # optional, default 200
    [checkpoint] every_steps = 500                  # optional: default only the final checkpoint
                 key_id = "<model owner KMS key id, ARN or alias>"
    [tuning]     lr = [0.5, 1.0, 2.0]               # optional section: a private hyper-parameter search,
                 max_grad_norm = [...]              # candidate lists (1..16 values) for any of lr,
                 expected_batch_size = [...]        # max_grad_norm, expected_batch_size and one of
                 epochs = [...] | steps = [...]     # epochs and steps; the grid is their product
                 trials = { distribution = "logarithmic" | "geometric" | "poisson"
                            | "truncated_negative_binomial", mean = 10.0, shape = 0.5 }  # shape: TNB only
                 select = { metric = "accuracy/<eval.public>" }  # maximised; rmse and mae minimised

A search (`enclave.training.tuning`) runs a random number of trials, each on a candidate
drawn uniformly from the grid, and releases only the best one; it is accounted as one
repeat-and-select mechanism (`enclave.privacy.repeat_select`). It needs accountant =
"rdp" because that analysis is an RDP bound; it scores on the public evaluation set
only, since scoring on a private holdout would need its own accounting; it takes no
intermediate checkpoints (checkpoint.every_steps), which would release unselected trials.

The hash that goes into the privacy certificate, `JobSpec.sha256`, is SHA-256 over
the canonical CBOR (RFC 8949 core deterministic encoding, cbor2 ``canonical=True``)
of `to_canonical()`: every section and key always present, defaults filled in,
absent optional values as null, integers as integers and real-valued settings as
floats (``lr = 4`` and ``lr = 4.0`` are the same spec). TOML formatting, comments,
key order and number spelling (``1e-5`` vs ``0.00001``) therefore do not change
the hash; any value does. The `[model]` section is `{"name": ...}` for a preset (as
before inline models existed, so those specs keep their hash) and the inline model's
own canonical form (`ModelFormat.to_canonical`) otherwise. Likewise the keys that came
with tabular jobs (data.categorical, data.scale, the [task] section) are in the
canonical form only when the spec gives them, so the specs written before keep their
hash; a list of features is a list, one feature column a string. The [tuning] section
is in the canonical form only when given, for the same reason.

Tabular features (`enclave.training.tabular`): a numeric column is clipped to public
bounds and min-max scaled to [0, 1]; a categorical column becomes a one-hot block of
its vocabulary or bucket count, or with categorical = "ids" its category index offset
by the sizes of the listed columns before it, for one embedding over all of them.
"""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import cbor2

from enclave.errors import ConfigError
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.accountants import PRIMARY as DEFAULT_ACCOUNTANT
from enclave.training.modelfmt.errors import ModelFormatError
from enclave.training.modelfmt.presets import preset_format
from enclave.training.modelfmt.spec import ModelFormat, parse_model

SPEC_FORMAT = "hermetic-job-spec-v1"
OPTIMIZERS = ("sgd", "adam")
DEFAULT_FEATURES = "image"
DEFAULT_LABEL = "label"
DEFAULT_EVAL_EVERY = 200
ENCODINGS = ("one_hot", "ids")
DEFAULT_ENCODING = "one_hot"
TASKS = ("classification", "regression")
LOSSES = {"classification": ("cross_entropy",), "regression": ("mse", "huber")}
DEFAULT_LOSS = {"classification": "cross_entropy", "regression": "mse"}
# The keys a search may vary, in the grid's (and the canonical form's) order.
TUNABLE = ("lr", "max_grad_norm", "expected_batch_size", "epochs", "steps")
MAX_CANDIDATES = 16
METRICS = ("accuracy", "auc", "rmse", "mae")
MINIMISED = ("rmse", "mae")
TRIAL_DISTRIBUTIONS = ("logarithmic", "geometric", "poisson", "truncated_negative_binomial")
MAX_TRIALS_MEAN = 1000.0
MAX_TRIALS_SHAPE = 1000.0
# A table has at most this many columns worth listing; the header bounds the real count.
MAX_FEATURES = 4096

# Bounds that keep a spec sane without restricting any real job.
MAX_BATCH_SIZE = 10_000_000
MAX_STEPS = 100_000_000
MAX_EPOCHS = 100_000.0
MAX_EVERY_STEPS = MAX_STEPS
MAX_KEY_ID = 2048
MAX_NAME = 128
MAX_TEXT = 256
# Each dataset costs a ledger read, a key and a stream; a handful of owners is the use.
MAX_TRAIN_DATASETS = 16

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SECTIONS = ("job", "model", "data", "task", "optimizer", "privacy", "eval", "checkpoint", "tuning")
_REQUIRED_SECTIONS = ("job", "model", "optimizer", "privacy", "checkpoint")
_MODEL_KEYS = ("name", "format", "layers", "graph", "output", "weights_sha256")


class SpecError(ConfigError):
    """The job spec is not valid TOML or violates the schema."""


# -- sections -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """The job's model: a preset's name or an inline declarative model, exactly one of them."""

    name: str | None = None
    inline: ModelFormat | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.inline is None):
            raise SpecError("model needs exactly one of name (a preset) and an inline format")

    @property
    def format(self) -> ModelFormat:
        """The declarative model: the inline one, or the preset's; UnknownPreset for an unknown name."""
        if self.inline is not None:
            return self.inline
        assert self.name is not None
        return preset_format(self.name)

    @property
    def weights_sha256(self) -> str | None:
        """The initial weights file's hash an inline model names (a preset never names one)."""
        return None if self.inline is None else self.inline.weights_sha256


@dataclass(frozen=True)
class Scale:
    """Public min-max constants of a numeric column: values are clipped to [lo, hi], then mapped to [0, 1]."""

    lo: float
    hi: float


@dataclass(frozen=True)
class DataSpec:
    # The sealed datasets the job trains on, in stream order; empty: the job's only one.
    train: tuple[str, ...] = ()
    # One tensor or sequence column (a string), or numeric and categorical columns (a tuple).
    features: str | tuple[str, ...] = DEFAULT_FEATURES
    label: str = DEFAULT_LABEL
    categorical: str | None = None  # None: not given (one_hot)
    scale: tuple[tuple[str, Scale], ...] = ()

    @property
    def tabular(self) -> bool:
        """The features are a list of columns, assembled into one vector (or ids) per record."""
        return isinstance(self.features, tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        """The feature columns, one for a tensor or sequence."""
        return self.features if isinstance(self.features, tuple) else (self.features,)

    @property
    def encoding(self) -> str:
        return DEFAULT_ENCODING if self.categorical is None else self.categorical

    def scale_of(self, column: str) -> Scale | None:
        return dict(self.scale).get(column)


@dataclass(frozen=True)
class TaskSpec:
    kind: str = "classification"
    loss: str = "cross_entropy"
    given: bool = False  # the spec has a [task] section (it enters the canonical form only then)

    @property
    def regression(self) -> bool:
        return self.kind == "regression"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float | None = None  # sgd only (0.0 when not given)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class PrivacySpec:
    expected_batch_size: int
    max_grad_norm: float
    delta: float
    epochs: float | None = None
    steps: int | None = None
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    accountant: str = DEFAULT_ACCOUNTANT


@dataclass(frozen=True)
class EvalSpec:
    public: str | None = None
    every_steps: int = DEFAULT_EVAL_EVERY


@dataclass(frozen=True)
class CheckpointSpec:
    key_id: str
    every_steps: int | None = None  # None: only the final checkpoint


@dataclass(frozen=True)
class TuningSpec:
    """A search: candidate values by key (in TUNABLE order), the trial count's law, the selection metric."""

    grid: tuple[tuple[str, tuple[float, ...] | tuple[int, ...]], ...]
    distribution: str
    mean: float
    shape: float | None  # given for the truncated negative binomial only
    metric: str

    @property
    def size(self) -> int:
        return math.prod(len(values) for _, values in self.grid)

    def candidate(self, index: int) -> dict[str, float | int]:
        """The grid's `index`-th point (mixed radix over the lists, the first key varying slowest)."""
        if not 0 <= index < self.size:
            raise SpecError(f"candidate index {index} is outside the grid of {self.size}")
        point: dict[str, float | int] = {}
        for key, values in reversed(self.grid):
            index, digit = divmod(index, len(values))
            point[key] = values[digit]
        return {key: point[key] for key, _ in self.grid}

    @property
    def minimise(self) -> bool:
        return self.metric.split("/", 1)[0] in MINIMISED

    def to_canonical(self) -> dict[str, Any]:
        canonical: dict[str, Any] = {key: list(values) for key, values in self.grid}
        canonical["trials"] = {"distribution": self.distribution, "mean": float(self.mean), "shape": self.shape}
        canonical["select"] = {"metric": self.metric}
        return canonical


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec; build it with `from_toml` or `from_mapping`."""

    name: str
    model: ModelSpec
    data: DataSpec
    optimizer: OptimizerSpec
    privacy: PrivacySpec
    eval: EvalSpec
    checkpoint: CheckpointSpec
    task: TaskSpec = TaskSpec()
    tuning: TuningSpec | None = None

    # -- parsing ---------------------------------------------------------------
    @classmethod
    def from_toml(cls, text: str) -> JobSpec:
        if not isinstance(text, str):
            raise SpecError("job spec must be text")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"job spec is not valid TOML: {err}") from None
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Any) -> JobSpec:
        """Validate an already parsed document (the shape tomllib returns)."""
        if not isinstance(raw, Mapping):
            raise SpecError("job spec must be a table")
        _check_keys(raw, "", _SECTIONS)
        for name in _REQUIRED_SECTIONS:
            if name not in raw:
                raise SpecError(f"job spec lacks the [{name}] section")
        sections = {name: _section(raw, name) for name in _SECTIONS}
        spec = cls(
            name=_parse_job(sections["job"]),
            model=_parse_model(sections["model"]),
            data=_parse_data(sections["data"]),
            optimizer=_parse_optimizer(sections["optimizer"]),
            privacy=_parse_privacy(sections["privacy"]),
            eval=_parse_eval(sections["eval"]),
            checkpoint=_parse_checkpoint(sections["checkpoint"]),
            task=_parse_task(sections["task"], "task" in raw),
        )
        if "tuning" not in raw:
            return spec
        return replace(spec, tuning=_parse_tuning(sections["tuning"], spec))

    def with_candidate(self, point: Mapping[str, float | int]) -> JobSpec:
        """This spec with one search candidate's values in place of the spec's own."""
        opt, priv = self.optimizer, self.privacy
        if "lr" in point:
            opt = replace(opt, lr=float(point["lr"]))
        if "max_grad_norm" in point:
            priv = replace(priv, max_grad_norm=float(point["max_grad_norm"]))
        if "expected_batch_size" in point:
            priv = replace(priv, expected_batch_size=int(point["expected_batch_size"]))
        if "epochs" in point:
            priv = replace(priv, epochs=float(point["epochs"]), steps=None)
        if "steps" in point:
            priv = replace(priv, steps=int(point["steps"]), epochs=None)
        return replace(self, optimizer=opt, privacy=priv)

    @property
    def model_format(self) -> ModelFormat:
        """The model to build: the inline one, or the named preset's (UnknownPreset if none)."""
        return self.model.format

    @property
    def model_sha256(self) -> str:
        """Hex SHA-256 of the model format's canonical CBOR: the certificate's model_spec_sha256."""
        return self.model_format.sha256

    # -- canonical form and hash ----------------------------------------------
    def to_canonical(self) -> dict[str, Any]:
        """The spec as plain containers: every key present, defaults filled in."""
        opt, priv = self.optimizer, self.privacy
        data: dict[str, Any] = {
            # One id stays a string (and none null) so specs of one dataset keep their hash.
            "train": _train_canonical(self.data.train),
            "features": list(self.data.features) if self.data.tabular else self.data.features,
            "label": self.data.label,
        }
        # Given only: specs written before tabular jobs keep their hash.
        if self.data.categorical is not None:
            data["categorical"] = self.data.categorical
        if self.data.scale:
            data["scale"] = {name: {"lo": s.lo, "hi": s.hi} for name, s in self.data.scale}
        canonical: dict[str, Any] = {
            "format": SPEC_FORMAT,
            "job": {"name": self.name},
            "model": _model_canonical(self.model),
            "data": data,
            "optimizer": {
                "name": opt.name,
                "lr": float(opt.lr),
                "momentum": None if opt.momentum is None else float(opt.momentum),
                "weight_decay": float(opt.weight_decay),
            },
            "privacy": {
                "expected_batch_size": int(priv.expected_batch_size),
                "epochs": None if priv.epochs is None else float(priv.epochs),
                "steps": priv.steps,
                "max_grad_norm": float(priv.max_grad_norm),
                "delta": float(priv.delta),
                "target_epsilon": None if priv.target_epsilon is None else float(priv.target_epsilon),
                "noise_multiplier": None if priv.noise_multiplier is None else float(priv.noise_multiplier),
                "accountant": priv.accountant,
            },
            "eval": {"public": self.eval.public, "every_steps": int(self.eval.every_steps)},
            "checkpoint": {"every_steps": self.checkpoint.every_steps, "key_id": self.checkpoint.key_id},
        }
        if self.task.given:
            canonical["task"] = {"kind": self.task.kind, "loss": self.task.loss}
        if self.tuning is not None:
            canonical["tuning"] = self.tuning.to_canonical()
        return canonical

    def canonical_cbor(self) -> bytes:
        return cbor2.dumps(self.to_canonical(), canonical=True)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of `canonical_cbor()`: the spec hash in the privacy certificate."""
        return hashlib.sha256(self.canonical_cbor()).hexdigest()

    # -- sampling --------------------------------------------------------------
    def sampling_rate(self, num_records: int) -> float:
        """q = B / N, the Poisson sampling rate for a training set of N records."""
        _check_records(num_records, self.privacy.expected_batch_size)
        return self.privacy.expected_batch_size / num_records

    def steps_for(self, num_records: int) -> int:
        """Training steps: `steps` as given, or ceil(epochs / q) = ceil(epochs * N / B)."""
        _check_records(num_records, self.privacy.expected_batch_size)
        if self.privacy.steps is not None:
            return self.privacy.steps
        assert self.privacy.epochs is not None
        # Exact rational arithmetic: float division could round 40 * N / B across an integer.
        exact = Fraction(self.privacy.epochs) * num_records / self.privacy.expected_batch_size
        return max(1, math.ceil(exact))


def _check_records(num_records: int, batch: int) -> None:
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 1:
        raise SpecError(f"the training set must hold at least one record, got {num_records!r}")
    if batch > num_records:
        raise SpecError(
            f"privacy.expected_batch_size {batch} exceeds the training set's {num_records} records"
        )


# -- field helpers ----------------------------------------------------------------
def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"{name} must be a table ([{name}])")
    return value


def _check_keys(table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            shown = f"{where}.{key}" if where else str(key)
            kind = "key" if where else "section"
            raise SpecError(f"unknown {kind} {shown!r} in job spec (allowed: {', '.join(allowed)})")


def _text(table: Mapping[str, Any], where: str, key: str, *, required: bool, default: str | None = None,
          pattern: re.Pattern[str] | None = None, max_len: int = MAX_TEXT) -> str | None:
    name = f"{where}.{key}"
    if key not in table:
        if required:
            raise SpecError(f"{name} is required")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise SpecError(f"{name} must be a string, got {_kind(value)}")
    if not value:
        raise SpecError(f"{name} must not be empty")
    if len(value) > max_len:
        raise SpecError(f"{name} is longer than {max_len} characters")
    if not value.isprintable() or value != value.strip():
        raise SpecError(f"{name} must be printable without surrounding spaces")
    if pattern is not None and not pattern.fullmatch(value):
        raise SpecError(f"{name} must be 1..{MAX_NAME} characters of [A-Za-z0-9._-], got {value!r}")
    return value


def _choice(table: Mapping[str, Any], where: str, key: str, choices: tuple[str, ...], *,
            default: str | None = None) -> str:
    value = _text(table, where, key, required=default is None, default=default)
    assert value is not None
    if value not in choices:
        raise SpecError(f"{where}.{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _int(table: Mapping[str, Any], where: str, key: str, *, low: int, high: int) -> int | None:
    if key not in table:
        return None
    value = table[key]
    name = f"{where}.{key}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise SpecError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _float(table: Mapping[str, Any], where: str, key: str, *, low: float, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> float | None:
    if key not in table:
        return None
    value = table[key]
    name = f"{where}.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name} must be a number, got {_kind(value)}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise SpecError(f"{name} is too large")
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(f"{name} must be finite, got {number}")
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open or math.isinf(high) else "]"
        raise SpecError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {number:g}")
    return number


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise SpecError(f"{name} is required")
    return value


def _kind(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a float",
             list: "an array", dict: "a table"}
    for kind, text in names.items():
        if type(value) is kind:
            return text
    return type(value).__name__


# -- sections ----------------------------------------------------------------------
def _parse_job(table: Mapping[str, Any]) -> str:
    _check_keys(table, "job", ("name",))
    value = _text(table, "job", "name", required=True, pattern=_NAME, max_len=MAX_NAME)
    assert value is not None
    return value


def _parse_model(table: Mapping[str, Any]) -> ModelSpec:
    _check_keys(table, "model", _MODEL_KEYS)
    if "name" not in table:
        if not table:
            raise SpecError("model.name is required (or an inline model: format = 1 with layers or graph)")
        try:
            return ModelSpec(inline=parse_model(table))
        except ModelFormatError as err:
            # The message already names the key (model.layers[3] ...): one line, as every spec error.
            raise SpecError(str(err)) from None
    others = sorted(key for key in table if key != "name")
    if others:
        raise SpecError(f"model.name (a preset) and model.{others[0]} (an inline model) exclude each other")
    value = _text(table, "model", "name", required=True, max_len=MAX_NAME)
    assert value is not None
    return ModelSpec(name=value)


def _model_canonical(model: ModelSpec) -> dict[str, Any]:
    if model.inline is not None:
        return model.inline.to_canonical()
    # A preset stays {"name": ...}, its form before inline models: such specs keep their hash,
    # and the image fixes what a preset name builds (the certificate states its model hash).
    return {"name": model.name}


def _parse_data(table: Mapping[str, Any]) -> DataSpec:
    _check_keys(table, "data", ("train", "features", "label", "categorical", "scale"))
    train = _parse_train(table)
    features = _parse_features(table)
    label = _text(table, "data", "label", required=False, default=DEFAULT_LABEL)
    assert label is not None
    if label in (features if isinstance(features, tuple) else (features,)):
        raise SpecError(f"data.features and data.label must name different columns, both name {label!r}")
    categorical = None
    if "categorical" in table:
        categorical = _choice(table, "data", "categorical", ENCODINGS)
        if not isinstance(features, tuple):
            raise SpecError("data.categorical applies to a list of feature columns, data.features names one column")
    scale = _parse_scale(table.get("scale"), (*(features if isinstance(features, tuple) else ()), label))
    return DataSpec(train=train, features=features, label=label, categorical=categorical, scale=scale)


def _parse_features(table: Mapping[str, Any]) -> str | tuple[str, ...]:
    raw = table.get("features")
    if not isinstance(raw, list):
        value = _text(table, "data", "features", required=False, default=DEFAULT_FEATURES)
        assert value is not None
        return value
    if not 1 <= len(raw) <= MAX_FEATURES:
        raise SpecError(f"data.features must list 1..{MAX_FEATURES} columns, got {len(raw)}")
    names = tuple(str(_text({f"features[{i}]": v}, "data", f"features[{i}]", required=True))
                  for i, v in enumerate(raw))
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise SpecError(f"data.features names column {twice!r} more than once")
    return names


def _parse_scale(raw: Any, listed: tuple[str, ...]) -> tuple[tuple[str, Scale], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise SpecError(f"data.scale must be a table of {{ lo = ..., hi = ... }} by column, got {_kind(raw)}")
    scales = []
    for name, bounds in raw.items():
        where = f"data.scale.{name}"
        if name not in listed:
            raise SpecError(f"{where}: column {name!r} is not in data.features or data.label")
        if not isinstance(bounds, Mapping):
            raise SpecError(f"{where} must be {{ lo = ..., hi = ... }}, got {_kind(bounds)}")
        _check_keys(bounds, where, ("lo", "hi"))
        lo = _required(_float(bounds, where, "lo", low=-math.inf), f"{where}.lo")
        hi = _required(_float(bounds, where, "hi", low=-math.inf), f"{where}.hi")
        if not lo < hi:
            raise SpecError(f"{where} must have lo below hi, got [{lo:g}, {hi:g}]")
        scales.append((str(name), Scale(lo, hi)))
    return tuple(sorted(scales))


def _parse_task(table: Mapping[str, Any], given: bool) -> TaskSpec:
    _check_keys(table, "task", ("kind", "loss"))
    if not given:
        return TaskSpec()
    kind = _choice(table, "task", "kind", TASKS, default="classification")
    loss = _choice(table, "task", "loss", LOSSES[kind], default=DEFAULT_LOSS[kind])
    return TaskSpec(kind=kind, loss=loss, given=True)


def _parse_train(table: Mapping[str, Any]) -> tuple[str, ...]:
    raw = table.get("train")
    if not isinstance(raw, list):
        value = _text(table, "data", "train", required=False)
        return () if value is None else (value,)
    if not 1 <= len(raw) <= MAX_TRAIN_DATASETS:
        raise SpecError(f"data.train must list 1..{MAX_TRAIN_DATASETS} dataset ids, got {len(raw)}")
    train = tuple(str(_text({f"train[{i}]": v}, "data", f"train[{i}]", required=True)) for i, v in enumerate(raw))
    if len(set(train)) != len(train):
        raise SpecError(f"data.train names a dataset more than once: {', '.join(repr(v) for v in train)}")
    return train


def _train_canonical(train: tuple[str, ...]) -> str | list[str] | None:
    if not train:
        return None
    return train[0] if len(train) == 1 else list(train)


def _parse_optimizer(table: Mapping[str, Any]) -> OptimizerSpec:
    _check_keys(table, "optimizer", ("name", "lr", "momentum", "weight_decay"))
    name = _choice(table, "optimizer", "name", OPTIMIZERS)
    lr = _required(_float(table, "optimizer", "lr", low=0.0, low_open=True), "optimizer.lr")
    momentum = _float(table, "optimizer", "momentum", low=0.0, high=1.0, high_open=True)
    if name == "sgd":
        momentum = 0.0 if momentum is None else momentum
    elif momentum is not None:
        raise SpecError(f"optimizer.momentum applies to sgd only, not {name}")
    weight_decay = _float(table, "optimizer", "weight_decay", low=0.0)
    return OptimizerSpec(
        name=name, lr=lr, momentum=momentum, weight_decay=0.0 if weight_decay is None else weight_decay
    )


def _parse_privacy(table: Mapping[str, Any]) -> PrivacySpec:
    keys = ("expected_batch_size", "epochs", "steps", "max_grad_norm", "delta",
            "target_epsilon", "noise_multiplier", "accountant")
    _check_keys(table, "privacy", keys)
    batch = _required(
        _int(table, "privacy", "expected_batch_size", low=1, high=MAX_BATCH_SIZE),
        "privacy.expected_batch_size",
    )
    epochs = _float(table, "privacy", "epochs", low=0.0, high=MAX_EPOCHS, low_open=True)
    steps = _int(table, "privacy", "steps", low=1, high=MAX_STEPS)
    if (epochs is None) == (steps is None):
        raise SpecError("privacy needs exactly one of epochs and steps")
    clip = _required(
        _float(table, "privacy", "max_grad_norm", low=0.0, low_open=True), "privacy.max_grad_norm"
    )
    delta = _required(
        _float(table, "privacy", "delta", low=0.0, high=1.0, low_open=True, high_open=True),
        "privacy.delta",
    )
    target = _float(table, "privacy", "target_epsilon", low=0.0, low_open=True)
    sigma = _float(table, "privacy", "noise_multiplier", low=0.0, low_open=True)
    if (target is None) == (sigma is None):
        raise SpecError("privacy needs exactly one of target_epsilon and noise_multiplier")
    accountant = _choice(table, "privacy", "accountant", ACCOUNTANT_NAMES, default=DEFAULT_ACCOUNTANT)
    return PrivacySpec(
        expected_batch_size=batch, max_grad_norm=clip, delta=delta, epochs=epochs, steps=steps,
        target_epsilon=target, noise_multiplier=sigma, accountant=accountant,
    )


def _parse_eval(table: Mapping[str, Any]) -> EvalSpec:
    _check_keys(table, "eval", ("public", "every_steps"))
    public = _text(table, "eval", "public", required=False, max_len=MAX_NAME)
    every = _int(table, "eval", "every_steps", low=1, high=MAX_EVERY_STEPS)
    return EvalSpec(public=public, every_steps=DEFAULT_EVAL_EVERY if every is None else every)


def _parse_checkpoint(table: Mapping[str, Any]) -> CheckpointSpec:
    _check_keys(table, "checkpoint", ("every_steps", "key_id"))
    key_id = _text(table, "checkpoint", "key_id", required=True, max_len=MAX_KEY_ID)
    assert key_id is not None
    every = _int(table, "checkpoint", "every_steps", low=1, high=MAX_EVERY_STEPS)
    return CheckpointSpec(key_id=key_id, every_steps=every)


# -- tuning ------------------------------------------------------------------------------
def _parse_tuning(table: Mapping[str, Any], spec: JobSpec) -> TuningSpec:
    _check_keys(table, "tuning", (*TUNABLE, "trials", "select"))
    grid: list[tuple[str, tuple[float, ...] | tuple[int, ...]]] = []
    for key in TUNABLE:
        if key in table:
            grid.append((key, _candidates(table[key], key)))
    if not grid:
        raise SpecError(f"tuning needs at least one candidate list ({', '.join(TUNABLE)})")
    if "epochs" in table and "steps" in table:
        raise SpecError("tuning gives candidates for epochs or for steps, not both")
    trials = table.get("trials")
    if not isinstance(trials, Mapping):
        raise SpecError("tuning.trials is required: { distribution = ..., mean = ... }")
    _check_keys(trials, "tuning.trials", ("distribution", "mean", "shape"))
    distribution = _choice(trials, "tuning.trials", "distribution", TRIAL_DISTRIBUTIONS)
    mean = _required(_float(trials, "tuning.trials", "mean", low=1.0, high=MAX_TRIALS_MEAN), "tuning.trials.mean")
    shape = _float(trials, "tuning.trials", "shape", low=0.0, high=MAX_TRIALS_SHAPE, low_open=True)
    if distribution == "truncated_negative_binomial":
        _required(shape, "tuning.trials.shape")
    elif shape is not None:
        raise SpecError(f"tuning.trials.shape applies to truncated_negative_binomial only, not {distribution} "
                        "(logarithmic is shape 0, geometric shape 1, poisson shape infinity)")
    select = table.get("select")
    if not isinstance(select, Mapping):
        raise SpecError('tuning.select is required: { metric = "accuracy/<eval.public>" }')
    _check_keys(select, "tuning.select", ("metric",))
    metric = _text(select, "tuning.select", "metric", required=True)
    assert metric is not None
    _check_tuning_job(spec, metric)
    return TuningSpec(grid=tuple(grid), distribution=distribution, mean=mean, shape=shape, metric=metric)


def _candidates(raw: Any, key: str) -> tuple[float, ...] | tuple[int, ...]:
    where = f"tuning.{key}"
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CANDIDATES:
        raise SpecError(f"{where} must be an array of 1..{MAX_CANDIDATES} values")
    table = {f"{key}[{i}]": v for i, v in enumerate(raw)}
    values: tuple[float, ...] | tuple[int, ...]
    if key in ("expected_batch_size", "steps"):
        most = MAX_BATCH_SIZE if key == "expected_batch_size" else MAX_STEPS
        values = tuple(int(_required(_int(table, "tuning", k, low=1, high=most), k)) for k in table)
    else:
        high = MAX_EPOCHS if key == "epochs" else math.inf
        values = tuple(float(_required(_float(table, "tuning", k, low=0.0, high=high, low_open=True), k))
                       for k in table)
    if len(set(values)) != len(values):
        # A repeated value would weigh its candidate twice in the uniform draw.
        raise SpecError(f"{where} lists a value more than once")
    return values


def _check_tuning_job(spec: JobSpec, metric: str) -> None:
    if spec.privacy.accountant != "rdp":
        raise SpecError('tuning needs privacy.accountant = "rdp": the repeat-and-select analysis is an RDP bound, '
                        f"not available to the {spec.privacy.accountant!r} accountant")
    if spec.eval.public is None:
        raise SpecError("tuning scores trials on the public evaluation set: it needs [eval] public; "
                        "scoring on a private holdout is not supported")
    kind, _, name = metric.partition("/")
    if kind not in METRICS or name != spec.eval.public:
        raise SpecError(f"tuning.select.metric must be one of {', '.join(f'{m}/{spec.eval.public}' for m in METRICS)}"
                        f" (a metric on the public evaluation set), got {metric!r}")
    if kind in ("accuracy", "auc") and spec.task.regression or kind in MINIMISED and not spec.task.regression:
        raise SpecError(f"tuning.select.metric {metric!r} is not released for a {spec.task.kind} job")
    if spec.checkpoint.every_steps is not None:
        raise SpecError("checkpoint.every_steps does not apply to a tuning job: only the selected trial's "
                        "final checkpoint leaves")
