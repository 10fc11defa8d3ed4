"""The job's model on its data: input layout from the public schema, build, inputs, fixed front end.

A job's model is a declarative model (`enclave.training.modelfmt`): a preset's or the
spec's inline one. What it is built for comes from the sealed header's public Arrow
schema, never from the records:

- the input: the feature column is fixed_size_list<uint8>[F] of C-order records with
  an optional per-record shape (`hermetic.shape`). A preset takes its registered shape
  (`PRESET_INPUT_SHAPES`: the job check holds the column to it). An inline model takes
  the record as the sealer stored it: flat [F] without a shape or with a 1-D one; an
  image H x W as [1, H, W]; a 3-D record H x W x C (numpy's image layout, as the
  sealer writes an (N, H, W, C) array) as [C, H, W], channels first as conv2d takes
  them; a 4-D record as it is;
- the class count: a preset's 10, an inline model's the label column's declared
  `hermetic.num_classes` (the sealer refused every label outside [0, K)); one output
  for a regression job;
- a tabular job (data.features a list of numeric and categorical columns) takes the
  vector, or the ids, `enclave.training.tabular` assembles from the public schema; a
  sequence job (one sequence column) its int64 token ids [max_len], assembled there too.

Pixels become float32 as `models.preprocess` makes them (scaled to [0, 1], then
standardised with fixed public constants, never statistics of the private data), or
int64 token ids when an id-taking layer (embedding, padding_mask) reads the input.

A model may start with a fixed front end: layers without parameters, buffers or
randomness (dropout), each mapping one record on its own, that include a scattering
transform. `FixedFront` applies it once to a whole table; DP-SGD then trains the rest,
which holds every parameter (the same tensors), so `model.state_dict()` stays the
checkpoint. Computing it for the private table once releases nothing and costs no budget.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from enclave.errors import DatasetError, SealedDataError
from enclave.sealed.format import SealedHeader
from enclave.sealed.public_schema import parse_schema
from enclave.sealed.records import field_num_classes, field_shape, header_schema
from enclave.training.modelfmt.build import build_model, parameter_shapes
from enclave.training.modelfmt.layers import GraphModel
from enclave.training.modelfmt.ops import OPS
from enclave.training.modelfmt.plan import ModelPlan, plan_model
from enclave.training.modelfmt.presets import PRESET_CLASSES, PRESET_INPUT_SHAPES
from enclave.training.modelfmt.spec import MODEL_INPUT, ModelFormat
from enclave.training.models import FASHION_MNIST_MEAN, FASHION_MNIST_STD, CsprngDropout, InputFormatError
from enclave.training.spec import JobSpec
from enclave.training.tabular import TabularLayout, Target, input_layout, job_target, sequence_feature

__all__ = [
    "FixedFront",
    "JobModel",
    "ModelInput",
    "SchemaUnusable",
    "fixed_front",
    "inline_input",
    "job_model",
    "job_model_for_schema",
]


class SchemaUnusable(DatasetError):
    """The header's schema gives no input shape or class count (the job check names why)."""


@dataclass(frozen=True)
class ModelInput:
    """How records of the feature column become the model's input tensor."""

    #: One record as the sealer stored it (C order); (F,) without a declared shape.
    record_shape: tuple[int, ...]
    #: One example as the model takes it.
    shape: tuple[int, ...]
    #: The record is H x W x C and the model takes [C, H, W].
    channels_last: bool = False
    #: An id-taking layer reads the input: int64 values, not standardised floats.
    ids: bool = False

    @property
    def features(self) -> int:
        return math.prod(self.shape)

    def tensor(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 rows [N, F] -> the model input [N, *shape] (float32 standardised, or int64 ids)."""
        pixels = _uint8_rows(rows)
        if pixels.ndim != 2 or pixels.shape[1] != self.features:
            raise InputFormatError(f"the model expects records of {self.features} values, got {list(pixels.shape)}")
        count = pixels.shape[0]
        if self.ids:
            out = torch.from_numpy(pixels.astype(np.int64))
        else:
            scaled = pixels.astype(np.float32)
            scaled *= np.float32(1.0 / 255.0)
            scaled -= np.float32(FASHION_MNIST_MEAN)
            scaled /= np.float32(FASHION_MNIST_STD)
            out = torch.from_numpy(scaled)
        if self.channels_last:
            return out.reshape(count, *self.record_shape).permute(0, 3, 1, 2).contiguous()
        return out.reshape(count, *self.shape)


def _uint8_rows(rows: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        if rows.dtype != torch.uint8:
            raise InputFormatError(f"expected uint8 pixels, got {rows.dtype}")
        return rows.detach().cpu().numpy()
    if isinstance(rows, np.ndarray):
        if rows.dtype != np.uint8:
            raise InputFormatError(f"expected uint8 pixels, got {rows.dtype}")
        return rows
    raise InputFormatError(f"expected a numpy array or tensor, got {type(rows).__name__}")


def inline_input(size: int, declared: tuple[int, ...] | None, model: ModelFormat) -> ModelInput:
    """The input an inline model takes from records of `size` values shaped `declared` (or flat)."""
    ids = any(OPS[node.op].takes_ids and node.inputs[0] == MODEL_INPUT for node in model.nodes)
    record = declared if declared is not None and math.prod(declared) == size else (size,)
    if len(record) == 2:
        return ModelInput(record, (1, *record), ids=ids)
    if len(record) == 3:
        height, width, channels = record
        return ModelInput(record, (channels, height, width), channels_last=True, ids=ids)
    return ModelInput(record, record, ids=ids)


@dataclass(frozen=True)
class JobModel:
    """The job's declarative model with the input and class count its data gives it."""

    format: ModelFormat
    input: ModelInput
    #: The model's outputs: the classes, or 1 for a regression target.
    num_classes: int
    #: A tabular or sequence job: how the columns become the input (None: one tensor column).
    tabular: TabularLayout | None = None
    #: How the label becomes what the loss compares with (None: class indices, as before).
    target: Target | None = None

    def plan(self) -> ModelPlan:
        return plan_model(self.format, input_shape=self.input.shape, num_outputs=self.num_classes)

    def build(self, generator: torch.Generator) -> nn.Module:
        """The model, every parameter drawn from `generator` (a preset: its registered model's weights)."""
        return build_model(self.format, input_shape=self.input.shape, num_outputs=self.num_classes,
                           generator=generator)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """What `build` would name and shape in its state_dict (what initial weights must hold), allocating none."""
        return parameter_shapes(self.format, input_shape=self.input.shape, num_outputs=self.num_classes)


def job_model(spec: JobSpec, header: SealedHeader) -> JobModel:
    """The model `spec` trains on the dataset of `header` (the job check passed on it)."""
    schema = header_schema(header)
    return job_model_for_schema(spec, schema)


def job_model_for_schema(spec: JobSpec, schema: pa.Schema) -> JobModel:
    model = spec.model_format
    target = None
    if spec.data.tabular or spec.task.regression or sequence_feature(spec, schema):
        try:
            public = parse_schema(schema)
            target = job_target(spec, public)
            layout = input_layout(spec, public)
            if layout is not None:
                shape = layout.input_shape
                return JobModel(model, ModelInput(shape, shape, ids=layout.ids), target.outputs, layout, target)
        except (DatasetError, SealedDataError) as err:
            raise SchemaUnusable(str(err)) from None
    try:
        features = schema.field(spec.data.columns[0])
        label = schema.field(spec.data.label)
    except KeyError:
        raise SchemaUnusable("the dataset lacks the spec's feature or label column") from None
    if not pa.types.is_fixed_size_list(features.type):
        raise SchemaUnusable(f"column {spec.data.features!r} is not fixed_size_list<uint8>")
    size = int(features.type.list_size)
    if spec.model.name is not None:
        shape = PRESET_INPUT_SHAPES[spec.model.name]
        return JobModel(model, ModelInput((size,), shape), PRESET_CLASSES)
    classes = target.outputs if target is not None else field_num_classes(label)
    if classes is None:
        raise SchemaUnusable(f"column {spec.data.label!r} declares no class count")
    return JobModel(model, inline_input(size, field_shape(features), model), classes, None, target)


@dataclass(frozen=True)
class FixedFront:
    """The fixed front end of a built model and the trainable rest (`head`), sharing its modules."""

    front: nn.Module
    head: nn.Module
    feature_shape: tuple[int, ...]

    def features(self, model_input: ModelInput, rows: np.ndarray | torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
        """uint8 rows [N, F] -> float32 front-end features [N, *feature_shape], no autograd."""
        out = torch.empty((len(rows), *self.feature_shape), dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, len(rows), chunk):
                stop = min(start + chunk, len(rows))
                out[start:stop] = self.front(model_input.tensor(rows[start:stop]))
        return out


def _fixed(module: nn.Module) -> bool:
    # Dropout has no parameters but draws a fresh mask each step: it cannot be computed once.
    return (
        not isinstance(module, CsprngDropout)
        and not any(True for _ in module.parameters())
        and not any(True for _ in module.buffers())
    )


def fixed_front(spec: ModelFormat, model: nn.Module, plan: ModelPlan) -> FixedFront | None:
    """The longest fixed leading part of `model` that holds a scattering transform, or None."""
    fixed = 0
    for module in _node_modules(model):
        if not _fixed(module):
            break
        fixed += 1
    cut = _cut(spec, fixed)
    if cut == 0 or not any(node.op == "scatter" for node in spec.nodes[:cut]):
        return None
    feature_shape = plan.nodes[cut - 1].out.shape
    if isinstance(model, nn.Sequential):
        return FixedFront(model[:cut], model[cut:], feature_shape)
    assert isinstance(model, GraphModel)
    front = GraphModel(list(model.nodes)[:cut], model.sources[:cut], cut - 1)
    # In the head, position 0 is the last front node's output, j > cut the old node j - 1.
    remap = [tuple(0 if s == cut else s - cut for s in sources) for sources in model.sources[cut:]]
    head = GraphModel(list(model.nodes)[cut:], remap, model.output - cut)
    return FixedFront(front, head, feature_shape)


def _node_modules(model: nn.Module) -> Sequence[nn.Module]:
    if isinstance(model, GraphModel):
        return list(model.nodes)
    assert isinstance(model, nn.Sequential)
    return list(model)


def _cut(spec: ModelFormat, fixed: int) -> int:
    """The largest c <= fixed such that nothing from node c on reads the input or a node before c - 1."""
    for cut in range(fixed, 0, -1):
        position = {MODEL_INPUT: -1} | {node.name: i for i, node in enumerate(spec.nodes)}
        if all(position[name] >= cut - 1 for node in spec.nodes[cut:] for name in node.inputs) and (
            position[spec.output] >= cut
        ):
            return cut
    return 0
