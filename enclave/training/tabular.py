"""Tabular and sequence jobs: columns assembled into one input per record by the public schema, and targets.

Everything here is fixed by public things alone, the sealed header's public schema
(`enclave.sealed.public_schema`) and the job spec, never by the records:

- a numeric feature is clipped to public bounds [lo, hi] and min-max scaled,
  (x - lo) / (hi - lo), to [0, 1]. The bounds are the spec's `[data.scale]` constants
  or else the bounds the owner declared in the schema (the sealer refused every value
  outside them, so clipping to them changes nothing; the spec's may be narrower).
  A column without both has none to use: the job check refuses it. Statistics of the
  private data (a mean, a range) would need a DP estimate and a share of the budget,
  which jobs do not do;
- a categorical feature becomes, with `[data] categorical = "one_hot"` (the default),
  a one-hot block as wide as its vocabulary or bucket count; with "ids", its category
  index plus the sizes of the categorical columns listed before it, so that one
  `embedding` of `vocab` = the sum of their sizes serves every column. Ids cannot be
  mixed with numeric features (the model has one input): the check refuses it;
- the input is the blocks in the order of `data.features`: float32 [N, width] with
  width = numeric count + the one-hot widths, or int64 [N, columns] ids;
- a sequence column named alone (`data.features = "tokens"`) is its token ids as the
  sealer padded them, int64 [N, max_len], every id below the column's vocab_size;
- a class label stays the int64 class index; a regression target is clipped to its
  public bounds and scaled to [0, 1] like a numeric feature, so the model predicts
  in those units and `unscale` maps a prediction back for the released metrics.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from enclave.errors import DatasetError
from enclave.sealed.public_schema import (
    KIND_KEY,
    CategoricalColumn,
    ClassLabel,
    NumericColumn,
    PublicSchema,
    RegressionTarget,
    SequenceColumn,
)
from enclave.training.spec import DataSpec, JobSpec

__all__ = [
    "Categorical",
    "Numeric",
    "TabularLayout",
    "TabularRecordsUnusable",
    "Target",
    "Tokens",
    "bounds_of",
    "input_layout",
    "job_target",
    "sequence_feature",
    "tabular_layout",
]


class TabularRecordsUnusable(DatasetError):
    """Records the tabular layout cannot encode (a fixed message: it must not depend on the values)."""


@dataclass(frozen=True)
class Numeric:
    name: str
    lo: float
    hi: float

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True)
class Categorical:
    name: str
    size: int
    ids: bool = False
    offset: int = 0  # ids only: the sizes of the categorical columns before this one

    @property
    def width(self) -> int:
        return 1 if self.ids else self.size


@dataclass(frozen=True)
class Tokens:
    """A sequence column's token ids, right-padded with `pad` to `length`."""

    name: str
    size: int  # the column's vocab_size: every id is below it
    length: int
    pad: int

    @property
    def width(self) -> int:
        return self.length


Part = Numeric | Categorical | Tokens


@dataclass(frozen=True)
class Target:
    """What the model is trained to output for a record: a class, or a scaled regression target."""

    name: str
    num_classes: int | None = None  # classification
    lo: float = 0.0  # regression: the public bounds the target is clipped and scaled to
    hi: float = 1.0

    @property
    def outputs(self) -> int:
        return 1 if self.num_classes is None else self.num_classes

    @property
    def regression(self) -> bool:
        return self.num_classes is None

    def values(self, table: pa.Table) -> torch.Tensor:
        """int64 class indices, or float32 targets clipped to [lo, hi] and scaled to [0, 1]."""
        column = _column(table, self.name)
        if self.num_classes is not None:
            if not pa.types.is_integer(column.type):
                raise DatasetError(f"column {self.name!r} must hold integer class indices, got {column.type}")
            labels = column.to_numpy(zero_copy_only=False).astype(np.int64)
            # Checked by the sealer; a defect here must not reach torch's indexing, which quotes values.
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise TabularRecordsUnusable("a label lies outside the declared class range")
            return torch.from_numpy(labels)
        return torch.from_numpy(_scaled(_numbers(column, self.name), self.lo, self.hi))

    def unscale(self, predicted: torch.Tensor) -> torch.Tensor:
        """A regression output in scaled units back in the target's own units."""
        return predicted.to(torch.float64) * (self.hi - self.lo) + self.lo


@dataclass(frozen=True)
class TabularLayout:
    """How the listed columns of a record become the model's input."""

    parts: tuple[Part, ...]
    ids: bool = False

    @property
    def width(self) -> int:
        return sum(p.width for p in self.parts)

    @property
    def vocab(self) -> int:
        """ids: how many distinct ids the input holds (the embedding's least vocab)."""
        return sum(p.size for p in self.parts if not isinstance(p, Numeric))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.width,)

    def assemble(self, tables: Sequence[pa.Table]) -> torch.Tensor:
        """The model input of every record of the tables, in order: float32 [N, width] or int64 [N, columns]."""
        parts = [self._table(t) for t in tables]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _table(self, table: pa.Table) -> torch.Tensor:
        rows = table.num_rows
        if self.ids:
            out = np.empty((rows, self.width), dtype=np.int64)
            at = 0
            for part in self.parts:
                if isinstance(part, Tokens):
                    out[:, at:at + part.width] = _tokens(table, part)
                else:
                    assert isinstance(part, Categorical)
                    out[:, at] = _categories(table, part) + part.offset
                at += part.width
            return torch.from_numpy(out)
        x = np.zeros((rows, self.width), dtype=np.float32)
        at = 0
        for part in self.parts:
            if isinstance(part, Numeric):
                x[:, at] = _scaled(_numbers(_column(table, part.name), part.name), part.lo, part.hi)
            else:
                assert isinstance(part, Categorical)
                x[np.arange(rows), at + _categories(table, part)] = 1.0
            at += part.width
        return torch.from_numpy(x)


def _column(table: pa.Table, name: str) -> pa.Array:
    try:
        column = table.column(name).combine_chunks()
    except KeyError:
        raise DatasetError(f"dataset lacks column {name!r}") from None
    # Types are public (the header's schema); null counts and values are not: a fixed text.
    if column.null_count:
        raise TabularRecordsUnusable("a record has a missing value")
    return column


def _numbers(column: pa.Array, name: str) -> np.ndarray:
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DatasetError(f"column {name!r} must hold numbers, got {column.type}")
    values: np.ndarray = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    if not np.isfinite(values).all():
        raise TabularRecordsUnusable("a record has a value that is not finite")
    return values


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # Clipping first bounds every input (and target) whatever the records hold.
    scaled: np.ndarray = ((np.clip(values, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    return scaled


def _categories(table: pa.Table, part: Categorical) -> np.ndarray:
    column = _column(table, part.name)
    if not pa.types.is_integer(column.type):
        raise DatasetError(f"column {part.name!r} must hold category indices, got {column.type}")
    index: np.ndarray = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= part.size):
        raise TabularRecordsUnusable("a category index lies outside the declared categories")
    return index


def _tokens(table: pa.Table, part: Tokens) -> np.ndarray:
    column = _column(table, part.name)
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) and pa.types.is_integer(kind.value_type)
            and kind.list_size == part.length):
        raise DatasetError(f"column {part.name!r} must hold fixed_size_list<int32>[{part.length}] ids, got {kind}")
    ids = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int64).reshape(-1, part.length)
    # Checked by the sealer; a defect here must not reach the embedding's indexing, which quotes values.
    if ids.size and (ids.min() < 0 or ids.max() >= part.size):
        raise TabularRecordsUnusable("a token id lies outside the declared vocabulary")
    return ids


def bounds_of(data: DataSpec, column: NumericColumn | RegressionTarget) -> tuple[float, float] | None:
    """The public [lo, hi] a numeric column is scaled by: the spec's, else the schema's; None without both."""
    given = data.scale_of(column.name)
    if given is not None:
        return given.lo, given.hi
    if column.lo is None or column.hi is None:
        return None
    return float(column.lo), float(column.hi)


def sequence_feature(spec: JobSpec, schema: pa.Schema) -> bool:
    """The spec names one feature column and the schema declares it a token sequence."""
    if spec.data.tabular:
        return False
    index = schema.get_field_index(spec.data.columns[0])
    metadata = (schema.field(index).metadata if index >= 0 else None) or {}
    return bool(metadata.get(KIND_KEY) == b"sequence")


def input_layout(spec: JobSpec, schema: PublicSchema) -> TabularLayout | None:
    """How records become the input by the public schema, or None for a tensor column's records."""
    if spec.data.tabular:
        return tabular_layout(spec, schema)
    column = schema.get(spec.data.columns[0])
    if isinstance(column, SequenceColumn):
        return TabularLayout((Tokens(column.name, column.vocab_size, column.max_len, column.pad_id),), ids=True)
    return None


def tabular_layout(spec: JobSpec, schema: PublicSchema) -> TabularLayout:
    """The layout of the spec's listed features; DatasetError for what the job check refuses."""
    data = spec.data
    ids = data.encoding == "ids"
    parts: list[Part] = []
    offset = 0
    for name in data.columns:
        column = schema.get(name)
        if isinstance(column, NumericColumn) and not ids:
            bounds = bounds_of(data, column)
            if bounds is None or not bounds[0] < bounds[1]:
                raise DatasetError(f"column {name!r} has no public bounds to scale by")
            parts.append(Numeric(name, *bounds))
        elif isinstance(column, CategoricalColumn):
            parts.append(Categorical(name, column.size, ids, offset if ids else 0))
            offset += column.size
        else:
            raise DatasetError(f"column {name!r} is not a numeric or categorical feature")
    return TabularLayout(tuple(parts), ids)


def job_target(spec: JobSpec, schema: PublicSchema) -> Target:
    """The spec's label as the task trains on it; DatasetError for what the job check refuses."""
    column = schema.get(spec.data.label)
    if spec.task.regression:
        if not isinstance(column, RegressionTarget):
            raise DatasetError(f"column {spec.data.label!r} is not a regression target")
        bounds = bounds_of(spec.data, column)
        if bounds is None or not bounds[0] < bounds[1]:
            raise DatasetError(f"column {spec.data.label!r} has no public bounds")
        return Target(spec.data.label, None, *bounds)
    if not isinstance(column, ClassLabel):
        raise DatasetError(f"column {spec.data.label!r} is not a class label")
    return Target(spec.data.label, column.num_classes)
