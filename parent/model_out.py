"""Models out: a decrypted checkpoint as a model directory, and predictions from one.

A model directory holds two files, both written atomically with mode 0600:

- `model.safetensors`: the weights, the module's `state_dict()` and nothing else. It is
  read with safetensors only, never with `torch.load`, so opening a model runs no pickle;
- `model.json` (`ModelCard`): what rebuilds and feeds the module, namely the model format's
  canonical form and hash, the job spec's TOML and hash, the sealed dataset's Arrow schema
  (base64 IPC: the exact input of `enclave.training.jobmodel.job_model_for_schema`), and,
  for people and other tools, the input layout, the task, the classes or the target's
  bounds and the public schema as JSON.

Prediction uses the enclave's own code: the job model, tabular layout and target the
trainer built from the same spec and schema, the same `outputs_of` and `public_metrics`,
so the metrics of a public file equal the released ones on the same data.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from enclave.errors import ConfigError
from enclave.sealed.public_schema import (
    CategoricalColumn,
    ClassLabel,
    MalformedSchema,
    PublicSchema,
    parse_schema,
)
from enclave.sealed.records import header_schema
from enclave.sealed.stream import read_header
from enclave.training.checkpoint import CheckpointState
from enclave.training.jobmodel import JobModel, job_model_for_schema
from enclave.training.models import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from enclave.training.spec import JobSpec
from enclave.training.tabular import Numeric, Tokens
from enclave.training.trainer import outputs_of, public_metrics, table_arrays
from parent.datasets import CsvReader, ParquetReader, open_dataset
from parent.datasets.schema import public_plan
from parent.sources import open_source
from parent.storage import write_atomic

log = logging.getLogger(__name__)

CARD_FORMAT = "hermetic-model/1"
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
FILE_MODE = 0o600


class ModelDirError(ConfigError):
    """A model directory that is missing, malformed or inconsistent."""


class SpecMismatch(ConfigError):
    """The checkpoint was made under another job spec than the one given."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _schema_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.serialize().to_pybytes())


@dataclass(frozen=True)
class ModelCard:
    """model.json: what rebuilds the module and how inputs become its input."""

    job_id: str
    step: int
    spec_sha256: str
    spec_toml: str
    model: Mapping[str, Any]  # the model format's canonical form
    model_spec_sha256: str
    arrow_schema: bytes  # the sealed dataset's Arrow schema (IPC), metadata included
    weights_sha256: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", MappingProxyType(dict(self.model)))

    @property
    def spec(self) -> JobSpec:
        return JobSpec.from_toml(self.spec_toml)

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(self.arrow_schema))

    @property
    def public_schema(self) -> PublicSchema:
        try:
            return parse_schema(self.schema)
        except MalformedSchema:
            # Sealed before the public schema with columns its legacy rules cannot describe (a preset
            # job's image without a declared shape): the trainer never reads one, nor is input re-encoded.
            return PublicSchema((), legacy=True)

    def job_model(self) -> JobModel:
        return job_model_for_schema(self.spec, self.schema)

    def to_json(self) -> dict[str, Any]:
        spec, public = self.spec, self.public_schema
        job = job_model_for_schema(spec, self.schema)
        return {
            "format": CARD_FORMAT,
            "job_id": self.job_id,
            "step": self.step,
            "spec_sha256": self.spec_sha256,
            "spec_toml": self.spec_toml,
            "model": json.loads(json.dumps(dict(self.model))),
            "model_spec_sha256": self.model_spec_sha256,
            "input": describe_input(spec, job, public),
            "task": describe_task(spec, job, public),
            "public_schema": public.to_json(),
            "arrow_schema": base64.b64encode(self.arrow_schema).decode("ascii"),
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_json(cls, raw: object) -> ModelCard:
        if not isinstance(raw, Mapping) or raw.get("format") != CARD_FORMAT:
            raise ModelDirError(f"{CARD_FILE} is not a {CARD_FORMAT} file")
        try:
            card = cls(
                job_id=str(raw["job_id"]),
                step=int(raw["step"]),
                spec_sha256=str(raw["spec_sha256"]),
                spec_toml=str(raw["spec_toml"]),
                model=dict(raw["model"]),
                model_spec_sha256=str(raw["model_spec_sha256"]),
                arrow_schema=base64.b64decode(str(raw["arrow_schema"]), validate=True),
                weights_sha256=str(raw["weights_sha256"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelDirError(f"{CARD_FILE} is malformed: {err}") from None
        spec = card.spec
        # The hashes tie the card to the certificate (spec) and to its own model section.
        if spec.sha256 != card.spec_sha256:
            raise ModelDirError(f"{CARD_FILE}: the spec TOML does not hash to spec_sha256")
        if spec.model_sha256 != card.model_spec_sha256:
            raise ModelDirError(f"{CARD_FILE}: the spec's model does not hash to model_spec_sha256")
        return card


def describe_input(spec: JobSpec, job: JobModel, public: PublicSchema) -> dict[str, Any]:
    """The input layout for people and other tools (the module is fed by `JobModel` itself)."""
    if job.tabular is not None:
        columns: list[dict[str, Any]] = []
        for part in job.tabular.parts:
            if isinstance(part, Numeric):
                columns.append({"name": part.name, "kind": "numeric", "lo": part.lo, "hi": part.hi,
                                "encoding": "clip to [lo, hi], then (x - lo) / (hi - lo)"})
            elif isinstance(part, Tokens):
                columns.append({"name": part.name, "kind": "sequence", "vocab_size": part.size,
                                "max_len": part.length, "pad_id": part.pad})
            else:
                column = public.get(part.name)
                entry: dict[str, Any] = {"name": part.name, "kind": "categorical", "size": part.size,
                                         "encoding": "ids" if part.ids else "one_hot"}
                if part.ids:
                    entry["offset"] = part.offset
                if isinstance(column, CategoricalColumn):
                    entry["schema"] = column.to_json()
                columns.append(entry)
        sequence = any(isinstance(part, Tokens) for part in job.tabular.parts)
        return {"kind": "sequence" if sequence else "tabular", "encoding": "ids" if job.tabular.ids else "one_hot",
                "shape": list(job.input.shape), "columns": columns}
    model_input = job.input
    return {
        "kind": "tensor",
        "column": spec.data.columns[0],
        "record_shape": list(model_input.record_shape),
        "shape": list(model_input.shape),
        "channels_last": model_input.channels_last,
        "ids": model_input.ids,
        "scaling": None if model_input.ids else {"divide": 255.0, "mean": FASHION_MNIST_MEAN,
                                                 "std": FASHION_MNIST_STD},
    }


def class_names(job: JobModel, public: PublicSchema, label: str) -> tuple[str, ...]:
    column = public.get(label)
    if isinstance(column, ClassLabel) and column.classes is not None and len(column.classes) == job.num_classes:
        return column.classes
    return tuple(str(k) for k in range(job.num_classes))


def describe_task(spec: JobSpec, job: JobModel, public: PublicSchema) -> dict[str, Any]:
    target = job.target
    if target is not None and target.regression:
        return {"kind": "regression", "target": target.name, "lo": target.lo, "hi": target.hi}
    return {"kind": "classification", "label": spec.data.label, "num_classes": job.num_classes,
            "classes": list(class_names(job, public, spec.data.label))}


def sealed_arrow_schema(path: str, s3_client: Any | None = None) -> pa.Schema:
    """The Arrow schema (with its public metadata) of the sealed file at `path`."""
    with open_source(path, s3_client) as source:
        return header_schema(read_header(source))


@dataclass(frozen=True)
class ParameterList:
    """The state_dict names and shapes of the model a job spec builds on a dataset's schema."""

    model_spec_sha256: str
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes.values())

    def to_json(self) -> dict[str, Any]:
        return {"model_spec_sha256": self.model_spec_sha256, "parameters": self.parameters,
                "tensors": [{"name": name, "shape": list(shape)} for name, shape in self.shapes.items()]}


def parameter_list(spec_path: str | os.PathLike[str], sealed: str, s3_client: Any | None = None) -> ParameterList:
    """What initial weights for the job at `spec_path` must hold, on the sealed dataset `sealed`."""
    from parent.verify.subject import read_spec

    spec = read_spec(spec_path)
    job = job_model_for_schema(spec, sealed_arrow_schema(sealed, s3_client))
    return ParameterList(spec.model_sha256, MappingProxyType(job.parameter_shapes()))


def build_module(job: JobModel) -> nn.Module:
    # The draw is overwritten by the loaded weights; a fixed seed keeps the build deterministic.
    return job.build(torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class ModelDirResult:
    model_dir: Path
    job_id: str
    step: int
    spec_sha256: str
    model_spec_sha256: str
    tensors: int
    parameters: int
    weights_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir), "job_id": self.job_id, "step": self.step,
            "spec_sha256": self.spec_sha256, "model_spec_sha256": self.model_spec_sha256,
            "tensors": self.tensors, "parameters": self.parameters, "weights_sha256": self.weights_sha256,
        }


def write_model_dir(
    state: CheckpointState, spec_toml: str, schema: pa.Schema, model_dir: str | os.PathLike[str]
) -> ModelDirResult:
    """Write DIR/model.safetensors and DIR/model.json for a decrypted checkpoint of the job `spec_toml`."""
    from safetensors.torch import save

    spec = JobSpec.from_toml(spec_toml)
    if state.spec_sha256 != spec.sha256:
        raise SpecMismatch(f"the checkpoint was made under spec {state.spec_sha256[:16]}..., "
                           f"the spec given hashes to {spec.sha256[:16]}...")
    job = job_model_for_schema(spec, schema)
    module = build_module(job)
    try:
        module.load_state_dict(dict(state.model_state), strict=True)
    except (RuntimeError, KeyError) as err:
        raise ModelDirError(f"the checkpoint does not fit the spec's model: {str(err).splitlines()[0]}") from None
    tensors = {name: t.detach().contiguous() for name, t in module.state_dict().items()}
    # No safetensors metadata: its header order varies between runs, and model.json says it all.
    weights = save(tensors)
    card = ModelCard(
        job_id=state.job_id, step=state.step, spec_sha256=spec.sha256, spec_toml=spec_toml,
        model=spec.model_format.to_canonical(), model_spec_sha256=spec.model_sha256,
        arrow_schema=_schema_bytes(schema), weights_sha256=_sha256(weights),
    )
    out = Path(model_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"model directory {out} is a file")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(out / WEIGHTS_FILE, weights, FILE_MODE)
    write_atomic(out / CARD_FILE, (json.dumps(card.to_json(), indent=2, sort_keys=True) + "\n").encode(), FILE_MODE)
    log.info("wrote model of job %s step %d to %s", state.job_id, state.step, out)
    return ModelDirResult(
        model_dir=out, job_id=state.job_id, step=state.step, spec_sha256=spec.sha256,
        model_spec_sha256=spec.model_sha256, tensors=len(tensors),
        parameters=sum(int(t.numel()) for t in tensors.values()), weights_sha256=card.weights_sha256,
    )


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    job: JobModel
    module: nn.Module


def read_card(model_dir: str | os.PathLike[str]) -> ModelCard:
    path = Path(model_dir) / CARD_FILE
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ModelDirError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise ModelDirError(f"{path} is not JSON: {err}") from None
    return ModelCard.from_json(raw)


def load_model_dir(model_dir: str | os.PathLike[str]) -> LoadedModel:
    """The module of a model directory with its weights, in eval mode (safetensors only: no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    card = read_card(model_dir)
    path = Path(model_dir) / WEIGHTS_FILE
    try:
        weights = path.read_bytes()
    except OSError as err:
        raise ModelDirError(f"cannot read {path}: {err.strerror or err}") from None
    if _sha256(weights) != card.weights_sha256:
        raise ModelDirError(f"{path} does not match the weights_sha256 of {CARD_FILE}")
    job = card.job_model()
    module = build_module(job)
    try:
        module.load_state_dict(load(weights), strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise ModelDirError(f"{path} does not fit the model: {str(err).splitlines()[0]}") from None
    module.eval()
    return LoadedModel(card, job, module)


def read_input_table(path: str | os.PathLike[str], public: PublicSchema, label: str) -> tuple[pa.Table, bool]:
    """The input file re-encoded by the public schema as the host encodes public eval data; has it the label?"""
    reader = open_dataset(Path(path))
    names = reader.schema().names
    has_label = label in names
    if not has_label:
        # Predictions need no label: the schema without it encodes the rest.
        public = PublicSchema(tuple(c for c in public if c.name != label), legacy=public.legacy)
    plan = None
    if not public.legacy and isinstance(reader, (CsvReader, ParquetReader)):
        plan = public_plan(reader.schema(), public)
    batches, records = [], 0
    for batch in reader.iter_batches(8192):
        batches.append(batch if plan is None else plan.convert(batch, records))
        records += batch.num_rows
    schema = reader.schema() if plan is None else plan.schema
    return pa.Table.from_batches(batches, schema=schema), has_label


@dataclass(frozen=True)
class Prediction:
    outputs: torch.Tensor  # the module's raw outputs [N, K], float64
    labels: torch.Tensor | None  # what the trainer compares with, when the input has the label
    metrics: tuple[tuple[str, float], ...]
    regression: bool
    classes: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(self.outputs)


def predict(model: LoadedModel, input_path: str | os.PathLike[str]) -> Prediction:
    spec, job = model.card.spec, model.job
    public = model.card.public_schema
    table, has_label = read_input_table(input_path, public, spec.data.label)
    target = job.target
    labels: torch.Tensor | None = None
    if job.tabular is not None:
        x = job.tabular.assemble([table])
        outputs = outputs_of(model.module, lambda part: x[part], len(x))
        if has_label and target is not None:
            labels = target.values(table)
    else:
        rows, raw_labels = table_arrays(table, spec.data.columns[0], spec.data.label,
                                        None if target is not None else job.num_classes,
                                        read_labels=has_label and target is None)
        model_input = job.input
        outputs = outputs_of(model.module, lambda part: model_input.tensor(rows[part]), len(rows))
        if has_label:
            labels = target.values(table) if target is not None else raw_labels
    metrics = tuple(public_metrics(outputs, labels, target)) if labels is not None else ()
    regression = target is not None and target.regression
    return Prediction(outputs, labels, metrics, regression, class_names(job, public, spec.data.label))


def predictions_csv(model: LoadedModel, prediction: Prediction) -> bytes:
    """One row per input row: the class and per-class probabilities, or the value in the target's units."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if prediction.regression:
        target = model.job.target
        assert target is not None
        writer.writerow(["prediction"])
        values = target.unscale(prediction.outputs[:, 0]).numpy() if prediction.rows else np.zeros(0)
        writer.writerows([repr(float(v))] for v in values)
    else:
        writer.writerow(["prediction", *(f"p_{name}" for name in prediction.classes)])
        probabilities = torch.softmax(prediction.outputs, dim=1).numpy()
        chosen = prediction.outputs.argmax(dim=1).numpy() if prediction.rows else np.zeros(0, dtype=np.int64)
        for k, p in zip(chosen, probabilities, strict=True):
            writer.writerow([prediction.classes[int(k)], *(repr(float(v)) for v in p)])
    return buffer.getvalue().encode()


def write_predictions(model: LoadedModel, prediction: Prediction, out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"output {path} is a directory")
    write_atomic(path, predictions_csv(model, prediction), FILE_MODE)
    return path



ONNX_OPSET = 17


def export_onnx(model: LoadedModel, out: str | os.PathLike[str]) -> Path:
    """The module as ONNX (TorchScript exporter, batch axis dynamic): input `input`, output `output`.

    The input is what `model.json`'s `input` describes, already encoded: the exported graph
    holds the module only, not the schema's encoding of raw columns.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; a clear error beats torch's)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package (pip install onnx, see requirements-dev.txt)") from None
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"output {path} is a directory")
    job = model.job
    dtype = torch.int64 if job.input.ids else torch.float32
    example = torch.zeros((1, *job.input.shape), dtype=dtype)
    # torch's exporter writes to a path: a private scratch one, so the output still appears atomically.
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "model.onnx"
        model.module.eval()  # outputs_of leaves a module in training mode: dropout must not be exported
        _export(model.module, example, staged)
        data = staged.read_bytes()
    write_atomic(path, data, FILE_MODE)
    log.info("exported the model of job %s step %d to %s", model.card.job_id, model.card.step, path)
    return path


def _export(module: nn.Module, example: torch.Tensor, staged: Path) -> None:
    try:
        with warnings.catch_warnings():
            # dynamo=False is deliberate (the dynamo exporter needs onnxscript): its deprecation notice is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (example,), staged, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except (RuntimeError, TypeError, ValueError) as err:  # what the exporter raises for an unexportable op
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelDirError(f"ONNX export failed: {reason}") from None
