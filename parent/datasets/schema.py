"""The public schema the data owner declares at sealing, and the row checks that enforce it.

What the owner declares (flags of `hermetic seal`, or a TOML schema file) and what
the dataset's Arrow schema shows are planned into one `enclave.sealed.public_schema`
column per input column. A column the owner did not declare is inferred only where
the inference reads nothing but the input's type: integers and floats are numeric
without bounds, booleans numeric uint8 in [0, 1]; fixed-size lists of numbers are tensors of the shape NPZ and IDX
record (else one dimension). A string or variable-length list column must be
declared: a vocabulary or a class list read from the data would make private
values public. Integer labels without a declared class count keep the old rule
(the largest label + 1, shown to the owner as their choice).

Every row is converted (vocabulary or hash to category index, sequence padding,
string label to class index) and checked before it is written; refusals name the
row (counted from 0) and the column, never the value. `SealPlan.scan` runs the
checks over the whole dataset before any key exists, and the writer runs them again
on what it writes, since the input may change in between.

The TOML schema file (`--schema FILE.toml`)::

    drop = ["patient_id"]            # columns left out of the sealed file

    [label]
    column = "diagnosis"
    classes = ["benign", "malignant"]  # or num_classes = 2 (integer labels)
    # task = "regression", with optional lo = 0.0, hi = 1.0

    [columns.age]
    kind = "numeric"                 # optional lo, hi
    lo = 0
    hi = 120

    [columns.smoker]
    kind = "categorical"
    vocabulary = ["no", "yes"]       # or buckets = 1024

    [columns.photo]
    kind = "tensor"
    shape = [32, 32, 3]

    [columns.notes]
    kind = "sequence"
    vocab_size = 30000
    max_len = 128
    pad_id = 0                       # optional, default 0
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from enclave.errors import ConfigError, DatasetError, SealedDataError
from enclave.sealed.public_schema import (
    MAX_CATEGORIES,
    MAX_SEQUENCE_LENGTH,
    MAX_VOCAB_SIZE,
    Bound,
    CategoricalColumn,
    ClassLabel,
    Column,
    NumericColumn,
    PublicSchema,
    RegressionTarget,
    SequenceColumn,
    TensorColumn,
    bucket_of,
)
from enclave.sealed.records import MAX_NUM_CLASSES, field_shape
from parent.datasets.base import MalformedDataset
from parent.datasets.labels import DEFAULT_LABEL_COLUMN, LabelOutOfRange, check_batch, label_type_problem

Task = Literal["classification", "regression"]


class SchemaViolation(MalformedDataset):
    """A row does not fit the public schema: the message names the row and the column, never the value."""


@dataclass(frozen=True)
class NumericDecl:
    lo: Bound | None = None
    hi: Bound | None = None


@dataclass(frozen=True)
class CategoricalDecl:
    vocabulary: tuple[str, ...] | None = None
    buckets: int | None = None


@dataclass(frozen=True)
class TensorDecl:
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SequenceDecl:
    vocab_size: int
    max_len: int
    pad_id: int = 0


Decl: TypeAlias = NumericDecl | CategoricalDecl | TensorDecl | SequenceDecl


@dataclass(frozen=True)
class LabelDecl:
    column: str | None = None  # None: "label", when the dataset has such a column
    task: Task | None = None  # None: classification
    classes: tuple[str, ...] | None = None
    num_classes: int | None = None
    lo: Bound | None = None  # regression bounds
    hi: Bound | None = None


@dataclass(frozen=True)
class SchemaDeclaration:
    """What the data owner declared; every other column is inferred from its type or refused."""

    columns: Mapping[str, Decl] = field(default_factory=dict)
    label: LabelDecl = LabelDecl()
    drop: tuple[str, ...] = ()

    def merged(self, other: SchemaDeclaration) -> SchemaDeclaration:
        """Both declarations; a column or label setting declared in both is a ConfigError."""
        both = sorted(set(self.columns) & set(other.columns))
        if both:
            raise ConfigError(f"column {both[0]!r} is declared twice")
        label = self.label
        for name in ("column", "task", "classes", "num_classes", "lo", "hi"):
            mine, theirs = getattr(label, name), getattr(other.label, name)
            if mine is not None and theirs is not None and mine != theirs:
                raise ConfigError(f"the label's {name} is declared twice, differently")
            if mine is None:
                label = replace(label, **{name: theirs})
        return SchemaDeclaration({**self.columns, **other.columns}, label, tuple(dict.fromkeys(self.drop + other.drop)))


# -- declarations from flags ---------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")


def parse_number(text: str, what: str) -> Bound:
    """An integer if `text` is written as one, else a finite float; ConfigError otherwise."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what}: a bound must be finite, got {text!r}")
    return value


def _count(text: str, what: str, lo: int, hi: int) -> int:
    if not _INT.fullmatch(text.strip()) or not lo <= int(text) <= hi:
        raise ConfigError(f"{what}: {text!r} is not an integer in [{lo}, {hi}]")
    return int(text)


def _column_name(name: str, flag: str, spec: str) -> str:
    if not name:
        raise ConfigError(f"{flag} {spec!r}: no column name")
    return name


def parse_numeric_flag(spec: str, flag: str = "--numeric") -> tuple[str, NumericDecl]:
    """`COL`, `COL:LO:HI`, `COL:LO:` or `COL::HI`."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 1:
        return _column_name(spec, flag, spec), NumericDecl()
    if len(parts) != 3:
        raise ConfigError(f"{flag} {spec!r}: write COL or COL:LO:HI (either bound may be empty)")
    name, lo, hi = parts
    what = f"{flag} {spec!r}"
    return _column_name(name, flag, spec), _bounds(
        parse_number(lo, what) if lo.strip() else None, parse_number(hi, what) if hi.strip() else None, what)


def _bounds(lo: Bound | None, hi: Bound | None, what: str) -> NumericDecl:
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{what}: the lower bound {lo} is above the upper bound {hi}")
    return NumericDecl(lo, hi)


def _vocabulary(values: list[Any], what: str) -> tuple[str, ...]:
    if not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{what}: a vocabulary is a non-empty list of strings")
    if len(values) > MAX_CATEGORIES:
        raise ConfigError(f"{what}: at most {MAX_CATEGORIES} values")
    if len(set(values)) != len(values):
        dup = next(v for i, v in enumerate(values) if v in values[:i])
        raise ConfigError(f"{what}: {dup[:40]!r} is listed twice")
    return tuple(values)


def parse_categorical_flag(spec: str) -> tuple[str, CategoricalDecl]:
    """`COL=a|b|c` (a vocabulary, in index order) or `COL#BUCKETS`."""
    what = f"--categorical {spec!r}"
    name, eq, vocab = spec.partition("=")
    if eq:
        vocabulary = _vocabulary(vocab.split("|"), what)
        return _column_name(name, "--categorical", spec), CategoricalDecl(vocabulary=vocabulary)
    name, hash_, buckets = spec.rpartition("#")
    if hash_:
        return _column_name(name, "--categorical", spec), CategoricalDecl(
            buckets=_count(buckets, what, 1, MAX_CATEGORIES))
    raise ConfigError(f"{what}: write COL=A|B|C (a vocabulary) or COL#BUCKETS (hashed)")


def _shape(values: Iterable[Any], what: str) -> tuple[int, ...]:
    shape = tuple(values)
    if not shape or len(shape) > 32 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ConfigError(f"{what}: a shape is 1..32 positive integers")
    return shape


def parse_tensor_flag(spec: str) -> tuple[str, TensorDecl]:
    """`COL=32x32x3`."""
    what = f"--tensor {spec!r}"
    name, eq, shape = spec.rpartition("=")
    if not eq or not re.fullmatch(r"\d+(x\d+)*", shape.strip()):
        raise ConfigError(f"{what}: write COL=DIMxDIM..., e.g. image=32x32x3")
    return _column_name(name, "--tensor", spec), TensorDecl(_shape((int(d) for d in shape.split("x")), what))


def _sequence(vocab: int, max_len: int, pad: int, what: str) -> SequenceDecl:
    if not 0 <= pad < vocab:
        raise ConfigError(f"{what}: the pad id {pad} is not an id in [0, {vocab})")
    return SequenceDecl(vocab, max_len, pad)


def parse_sequence_flag(spec: str) -> tuple[str, SequenceDecl]:
    """`COL:VOCAB:MAXLEN` or `COL:VOCAB:MAXLEN:PAD` (pad id 0 by default)."""
    what = f"--sequence {spec!r}"
    parts = spec.rsplit(":", 3)
    if len(parts) == 4 and not _INT.fullmatch(parts[1].strip()):
        parts = [f"{parts[0]}:{parts[1]}", *parts[2:]]  # a column name with a colon, no pad id
    if len(parts) not in (3, 4):
        raise ConfigError(f"{what}: write COL:VOCAB_SIZE:MAX_LEN[:PAD_ID]")
    name, vocab, max_len, *pad = parts
    vocab_size = _count(vocab, what, 1, MAX_VOCAB_SIZE)
    return _column_name(name, "--sequence", spec), _sequence(
        vocab_size, _count(max_len, what, 1, MAX_SEQUENCE_LENGTH),
        _count(pad[0], what, 0, MAX_VOCAB_SIZE) if pad else 0, what)


def parse_classes_flag(spec: str) -> tuple[str, ...]:
    """`a,b,c`: the class names, in index order."""
    classes = _vocabulary(spec.split(","), f"--classes {spec!r}")
    if len(classes) > MAX_NUM_CLASSES:
        raise ConfigError(f"--classes: at most {MAX_NUM_CLASSES} classes")
    return classes


def parse_target_flag(spec: str) -> LabelDecl:
    """`COL`, `COL:LO:HI`, `COL:LO:` or `COL::HI`: a regression target."""
    name, bounds = parse_numeric_flag(spec, "--target")
    return LabelDecl(column=name, task="regression", lo=bounds.lo, hi=bounds.hi)


# -- declarations from a TOML file ----------------------------------------------------------

_COLUMN_KEYS: dict[str, frozenset[str]] = {
    "numeric": frozenset({"kind", "lo", "hi"}),
    "categorical": frozenset({"kind", "vocabulary", "buckets"}),
    "tensor": frozenset({"kind", "shape"}),
    "sequence": frozenset({"kind", "vocab_size", "max_len", "pad_id"}),
}
_LABEL_KEYS = frozenset({"column", "task", "classes", "num_classes", "lo", "hi"})


def _toml_int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what}: must be an integer in [{lo}, {hi}]")
    return value


def _toml_bound(value: Any, what: str) -> Bound | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what}: must be a finite number")
    return value


def _unknown(table: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{what}: unknown key {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def _toml_column(name: str, table: Any) -> Decl:
    what = f"schema file: columns.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{what} must be a table")
    kind = table.get("kind")
    if kind not in _COLUMN_KEYS:
        raise ConfigError(f"{what}: kind must be one of {', '.join(_COLUMN_KEYS)}")
    _unknown(table, _COLUMN_KEYS[kind], what)
    if kind == "numeric":
        return _bounds(_toml_bound(table.get("lo"), f"{what}.lo"), _toml_bound(table.get("hi"), f"{what}.hi"), what)
    if kind == "categorical":
        if ("vocabulary" in table) == ("buckets" in table):
            raise ConfigError(f"{what}: give a vocabulary or a bucket count (buckets), not both")
        if "vocabulary" in table:
            vocab = table["vocabulary"]
            return CategoricalDecl(vocabulary=_vocabulary(vocab if isinstance(vocab, list) else [], what))
        return CategoricalDecl(buckets=_toml_int(table["buckets"], f"{what}.buckets", 1, MAX_CATEGORIES))
    if kind == "tensor":
        shape = table.get("shape")
        return TensorDecl(_shape(shape if isinstance(shape, list) else [], f"{what}.shape"))
    for key in ("vocab_size", "max_len"):
        if key not in table:
            raise ConfigError(f"{what}: a sequence needs {key}")
    vocab = _toml_int(table["vocab_size"], f"{what}.vocab_size", 1, MAX_VOCAB_SIZE)
    return _sequence(vocab, _toml_int(table["max_len"], f"{what}.max_len", 1, MAX_SEQUENCE_LENGTH),
                     _toml_int(table.get("pad_id", 0), f"{what}.pad_id", 0, MAX_VOCAB_SIZE), what)


def _toml_label(table: Any) -> LabelDecl:
    what = "schema file: label"
    if not isinstance(table, dict):
        raise ConfigError(f"{what} must be a table")
    _unknown(table, _LABEL_KEYS, what)
    column = table.get("column")
    if column is not None and (not isinstance(column, str) or not column):
        raise ConfigError(f"{what}.column must be a column name")
    task = table.get("task")
    if task not in (None, "classification", "regression"):
        raise ConfigError(f"{what}.task must be 'classification' or 'regression'")
    classes = table.get("classes")
    if classes is not None:
        classes = _vocabulary(classes if isinstance(classes, list) else [], f"{what}.classes")
    num_classes = table.get("num_classes")
    if num_classes is not None:
        num_classes = _toml_int(num_classes, f"{what}.num_classes", 1, MAX_NUM_CLASSES)
    bounds = _bounds(_toml_bound(table.get("lo"), f"{what}.lo"), _toml_bound(table.get("hi"), f"{what}.hi"), what)
    return LabelDecl(column, task, classes, num_classes, bounds.lo, bounds.hi)


def load_schema_file(path: str | os.PathLike[str]) -> SchemaDeclaration:
    """The declaration in a TOML schema file (format in the module docstring)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such schema file: {p}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the schema file {p}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"schema file {p.name} is not valid TOML: {err}") from None
    _unknown(doc, frozenset({"label", "columns", "drop"}), "schema file")
    columns = doc.get("columns", {})
    if not isinstance(columns, dict):
        raise ConfigError("schema file: columns must be a table of tables")
    drop = doc.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(d, str) and d for d in drop):
        raise ConfigError("schema file: drop must be a list of column names")
    label = _toml_label(doc["label"]) if "label" in doc else LabelDecl()
    return SchemaDeclaration({name: _toml_column(name, t) for name, t in columns.items()}, label, tuple(drop))


# -- planning and checking ------------------------------------------------------------------


def _refuse(row: int, column: str, problem: str) -> SchemaViolation:
    return SchemaViolation(f"row {row}: column {column!r} {problem}")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _decoded(array: pa.Array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _is_text(kind: pa.DataType) -> bool:
    kind = _value_type(kind)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _no_nulls(array: pa.Array, first_row: int, column: str) -> None:
    if array.null_count:
        raise _refuse(first_row + _first(array.is_null().to_numpy(zero_copy_only=False)), column, "is missing")


def _check_numbers(values: np.ndarray, lo: Bound | None, hi: Bound | None, first_row: int, column: str) -> None:
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise _refuse(first_row + _first(bad), column, "is not a finite number")
    for bound, mask, side in ((lo, values < lo if lo is not None else None, "below"),
                              (hi, values > hi if hi is not None else None, "above")):
        if bound is not None and mask is not None and mask.any():
            raise _refuse(first_row + _first(mask), column, f"is {side} its declared bound {bound}")


def _typed_bound(value: Bound | None, kind: pa.DataType, column: str) -> Bound | None:
    """The bound as the column's type holds it: an integer for integer columns."""
    if value is None:
        return None
    if pa.types.is_integer(kind):
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"column {column!r} holds integers: give it integer bounds, not {value}")
        value = int(value)
        info = np.iinfo(kind.to_pandas_dtype())
        if not info.min <= value <= info.max:
            raise ConfigError(f"column {column!r} is {kind}: the bound {value} is outside its range")
        return value
    return float(value)


@dataclass(frozen=True)
class _Plan:
    """One output column: its public description, its stored field, how rows become it."""

    source: str
    column: Column
    input_type: pa.DataType

    @property
    def field(self) -> pa.Field:
        return pa.field(self.column.name, self.stored_type, nullable=False, metadata=self.column.metadata())

    @property
    def stored_type(self) -> pa.DataType:
        col = self.column
        if isinstance(col, (CategoricalColumn,)):
            return pa.int32()
        if isinstance(col, SequenceColumn):
            return pa.list_(pa.int32(), col.max_len)
        if isinstance(col, TensorColumn):
            return pa.list_(_value_type(self.input_type).value_type, col.size)
        if isinstance(col, ClassLabel) and not pa.types.is_integer(_value_type(self.input_type)):
            return pa.int32()
        if pa.types.is_boolean(self.input_type):
            return pa.uint8()
        return _value_type(self.input_type)

    def convert(self, array: pa.Array, first_row: int) -> pa.Array:
        """The stored column for `array` (rows from `first_row`), or SchemaViolation."""
        col, name = self.column, self.column.name
        array = _decoded(array)
        _no_nulls(array, first_row, name)
        if isinstance(col, (NumericColumn, RegressionTarget)):
            if pa.types.is_boolean(array.type):
                return pc.cast(array, pa.uint8())  # 0 or 1: its bounds hold by construction
            _check_numbers(array.to_numpy(zero_copy_only=False), col.lo, col.hi, first_row, name)
            return array
        if isinstance(col, CategoricalColumn):
            return self._categorical(col, array, first_row)
        if isinstance(col, TensorColumn):
            return self._tensor(col, array, first_row)
        if isinstance(col, SequenceColumn):
            return self._sequence(col, array, first_row)
        return self._label(col, array, first_row)

    def _categorical(self, col: CategoricalColumn, array: pa.Array, first_row: int) -> pa.Array:
        strings = array if _is_text(array.type) else pc.cast(array, pa.string())
        if col.vocabulary is not None:
            index = pc.index_in(strings, value_set=pa.array(col.vocabulary, strings.type))
            if index.null_count:
                row = first_row + _first(index.is_null().to_numpy(zero_copy_only=False))
                raise _refuse(row, col.name, "holds a value outside its declared vocabulary")
            return pc.cast(index, pa.int32())
        buckets = int(col.buckets or 1)
        return pa.array([bucket_of(v, buckets) for v in strings.to_pylist()], pa.int32())

    def _tensor(self, col: TensorColumn, array: pa.Array, first_row: int) -> pa.Array:
        size = col.size
        fixed = pa.types.is_fixed_size_list(array.type)
        if fixed and array.type.list_size != size:
            raise ConfigError(f"column {col.name!r} holds {array.type.list_size} values per row, "
                              f"its declared shape {col.shape} has {size}")
        if not fixed:
            bad = pc.list_value_length(array).to_numpy(zero_copy_only=False) != size
            if bad.any():
                raise _refuse(first_row + _first(bad), col.name, f"does not hold {size} values (shape {col.shape})")
        values = array.flatten()
        if values.null_count:
            row = _first(values.is_null().to_numpy(zero_copy_only=False)) // size
            raise _refuse(first_row + row, col.name, "holds a missing value")
        flat = values.to_numpy(zero_copy_only=False)
        if flat.dtype.kind == "f":
            bad = ~np.isfinite(flat)
            if bad.any():
                raise _refuse(first_row + _first(bad) // size, col.name, "holds a value that is not finite")
        stored = self.stored_type
        if fixed:
            # Same values; only the list's child field may be named differently (Parquet's "element").
            return array if array.type == stored else array.cast(stored)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, stored.value_type), size)

    def _sequence(self, col: SequenceColumn, array: pa.Array, first_row: int) -> pa.Array:
        rows = _token_rows(array, first_row, col.name)
        out = np.full((len(rows), col.max_len), col.pad_id, dtype=np.int32)
        for i, ids in enumerate(rows):
            where = first_row + i
            if len(ids) > col.max_len:
                # A sequence past max_len would be truncated: the owner decides how, before sealing.
                raise _refuse(where, col.name, f"holds {len(ids)} ids, more than its max_len {col.max_len}")
            if len(ids) and (ids.min() < 0 or ids.max() >= col.vocab_size):
                raise _refuse(where, col.name, f"holds an id outside [0, {col.vocab_size})")
            pads = np.flatnonzero(ids == col.pad_id)
            if pads.size and not (ids[pads[0]:] == col.pad_id).all():
                raise _refuse(where, col.name, f"holds the pad id {col.pad_id} before its last id")
            out[i, : len(ids)] = ids
        return pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1), pa.int32()), col.max_len)

    def _label(self, col: ClassLabel, array: pa.Array, first_row: int) -> pa.Array:
        if pa.types.is_integer(array.type):
            batch = pa.record_batch([array], names=[col.name])
            check_batch(batch, col.name, col.num_classes, first_row)
            return array
        assert col.classes is not None  # planned so: string labels need declared classes
        index = pc.index_in(array, value_set=pa.array(col.classes, array.type))
        if index.null_count:
            row = first_row + _first(index.is_null().to_numpy(zero_copy_only=False))
            raise LabelOutOfRange(f"row {row}: column {col.name!r} holds a label that is not one of its "
                                  f"{col.num_classes} declared classes")
        return pc.cast(index, pa.int32())


def _token_rows(array: pa.Array, first_row: int, column: str) -> list[np.ndarray]:
    """Each row's token ids: from a list of integers, or a string of whitespace-separated integers."""
    if _is_text(array.type):
        rows = []
        for i, text in enumerate(array.to_pylist()):
            parts = text.split()
            if not all(_INT.fullmatch(p) for p in parts):
                raise _refuse(first_row + i, column, "is not whitespace-separated integer ids")
            try:
                rows.append(np.array([int(p) for p in parts], dtype=np.int64))
            except OverflowError:
                raise _refuse(first_row + i, column, "holds an id outside the int64 range") from None
        return rows
    values = array.flatten()
    if values.null_count:
        raise _refuse(first_row + _first(_list_rows_with_nulls(array)), column, "holds a missing id")
    flat = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if pa.types.is_fixed_size_list(array.type):
        n = array.type.list_size
        return [flat[i * n : (i + 1) * n] for i in range(len(array))]
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    return [flat[e - ln : e] for e, ln in zip(ends, lengths, strict=True)]


def _list_rows_with_nulls(array: pa.Array) -> np.ndarray:
    return np.array([any(v is None for v in row) for row in array.to_pylist()], dtype=bool)


@dataclass(frozen=True)
class SealPlan:
    """How each input column becomes a public-schema column of the sealed file."""

    plans: tuple[_Plan, ...]
    label_derived: bool = False  # the class count is max(label) + 1, found by `scan`

    @property
    def public(self) -> PublicSchema:
        return PublicSchema(tuple(p.column for p in self.plans))

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([p.field for p in self.plans])

    def convert(self, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        """The batch as it is sealed; SchemaViolation (or LabelOutOfRange) naming the first bad row."""
        arrays = [p.convert(batch.column(batch.schema.get_field_index(p.source)), first_row) for p in self.plans]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def scan(self, batches: Iterable[pa.RecordBatch]) -> tuple[SealPlan, int]:
        """Check every row (before any key exists); the plan with a derived class count fixed, and the row count."""
        plan = self
        label = next((p for p in self.plans if isinstance(p.column, ClassLabel)), None)
        if self.label_derived:
            assert label is not None
            # Any label above the bound is refused too: the count derived below could not hold it.
            plan = self._with_label(ClassLabel(label.column.name, MAX_NUM_CLASSES))
        largest, rows = -1, 0
        for batch in batches:
            converted = plan.convert(batch, rows)
            if self.label_derived and batch.num_rows:
                assert label is not None
                largest = max(largest, int(pc.max(converted.column(label.column.name)).as_py()))
            rows += batch.num_rows
        if not self.label_derived:
            return self, rows
        assert label is not None
        if largest < 0:
            raise ConfigError(f"label column {label.column.name!r} holds no labels: "
                              "give the class count with --num-classes")
        return replace(self._with_label(ClassLabel(label.column.name, largest + 1)), label_derived=True), rows

    def _with_label(self, column: ClassLabel) -> SealPlan:
        return replace(self, plans=tuple(replace(p, column=column) if isinstance(p.column, ClassLabel) else p
                                         for p in self.plans))


def _undeclared(name: str, kind: pa.DataType, field: pa.Field) -> Column:
    value = _value_type(kind)
    if _is_number(value):
        return NumericColumn(name, str(value))
    if pa.types.is_boolean(value):
        return NumericColumn(name, "uint8", 0, 1)  # the type alone says so: nothing read from the rows
    if pa.types.is_fixed_size_list(value) and _is_number(value.value_type):
        try:
            shape = field_shape(field) or (value.list_size,)
        except SealedDataError as err:
            raise DatasetError(str(err)) from None
        return TensorColumn(name, str(value.value_type), shape)
    if _is_text(value):
        raise ConfigError(f"column {name!r} holds strings, which would be public if read into the schema: "
                          f"declare it (--categorical {name}=A|B|C, --categorical {name}#BUCKETS, "
                          f"--sequence {name}:VOCAB:MAXLEN) or leave it out (--drop {name})")
    if _is_list(value):
        raise ConfigError(f"column {name!r} is {value}: declare it (--tensor {name}=SHAPE or "
                          f"--sequence {name}:VOCAB:MAXLEN) or leave it out (--drop {name})")
    raise ConfigError(f"column {name!r} is {value}, which no public schema describes: "
                      f"convert it to numbers or leave it out (--drop {name})")


def _declared(name: str, decl: Decl, kind: pa.DataType, field: pa.Field) -> Column:
    value = _value_type(kind)
    if isinstance(decl, NumericDecl):
        if not _is_number(value):
            raise ConfigError(f"column {name!r} is {value}: --numeric needs integers or floats")
        return NumericColumn(name, str(value), _typed_bound(decl.lo, value, name), _typed_bound(decl.hi, value, name))
    if isinstance(decl, CategoricalDecl):
        if not (_is_text(value) or pa.types.is_integer(value)):
            raise ConfigError(f"column {name!r} is {value}: a categorical column holds strings or integers")
        return CategoricalColumn(name, decl.vocabulary, decl.buckets)
    if isinstance(decl, TensorDecl):
        if not (_is_list(value) and _is_number(value.value_type)):
            raise ConfigError(f"column {name!r} is {value}: a tensor column holds lists of numbers")
        if pa.types.is_fixed_size_list(value) and value.list_size != math.prod(decl.shape):
            raise ConfigError(f"column {name!r} holds {value.list_size} values per row, the declared shape "
                              f"{'x'.join(map(str, decl.shape))} has {math.prod(decl.shape)}")
        return TensorColumn(name, str(value.value_type), decl.shape)
    if not (_is_text(value) or (_is_list(value) and pa.types.is_integer(value.value_type))):
        raise ConfigError(f"column {name!r} is {value}: a sequence column holds lists of integer ids "
                          "or strings of whitespace-separated ids")
    return SequenceColumn(name, decl.vocab_size, decl.max_len, decl.pad_id)


def _label(schema: pa.Schema, decl: LabelDecl, drop: tuple[str, ...]) -> tuple[Column, bool] | None:
    """The label column, and whether its class count is still to be derived; None without one."""
    name = DEFAULT_LABEL_COLUMN if decl.column is None else decl.column
    declared = decl.column is not None or decl.num_classes is not None or decl.classes is not None
    if not declared and decl.task is None and (name not in schema.names or name in drop):
        return None
    if len(schema.get_all_field_indices(name)) != 1:
        raise DatasetError(f"the dataset has no single column {name!r} to take labels from")
    kind = _value_type(schema.field(name).type)
    if decl.task == "regression":
        if decl.classes is not None or decl.num_classes is not None:
            raise ConfigError("a regression target has no classes: drop --classes/--num-classes or --task regression")
        if not _is_number(kind):
            raise ConfigError(f"target column {name!r} is {kind}: a regression target is a number")
        lo, hi = _typed_bound(decl.lo, kind, name), _typed_bound(decl.hi, kind, name)
        return RegressionTarget(name, str(kind), lo, hi), False
    if decl.lo is not None or decl.hi is not None:
        raise ConfigError("bounds apply to a regression target: use --target COL:LO:HI or --task regression")
    classes = decl.classes
    if classes is not None and decl.num_classes is not None and decl.num_classes != len(classes):
        raise ConfigError(f"--num-classes {decl.num_classes} but --classes names {len(classes)} classes")
    if _is_text(kind):
        if classes is None:
            raise ConfigError(f"label column {name!r} holds strings: declare the classes in order with "
                              "--classes A,B,C (the class names become public; they are never read from the data)")
        return ClassLabel(name, len(classes), classes), False
    problem = label_type_problem(schema, name)
    if problem is not None:
        raise DatasetError(f"{problem} (or --task regression for a numeric target)")
    num_classes = len(classes) if classes is not None else decl.num_classes
    if num_classes is not None and not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ConfigError(f"the class count must be an integer in [1, {MAX_NUM_CLASSES}], got {num_classes!r}")
    bits = kind.bit_width - (1 if pa.types.is_signed_integer(kind) else 0)
    if num_classes is not None and num_classes - 1 > (1 << bits) - 1:
        raise ConfigError(f"label column {name!r} is {kind}, which cannot hold {num_classes} classes")
    if num_classes is None:
        return ClassLabel(name, MAX_NUM_CLASSES), True  # the count is fixed by SealPlan.scan
    return ClassLabel(name, num_classes, classes), False


def plan_schema(schema: pa.Schema, declaration: SchemaDeclaration) -> SealPlan:
    """The plan for a dataset of `schema` under `declaration`; ConfigError for what cannot be sealed."""
    names = schema.names
    for name in (*declaration.columns, *declaration.drop):
        if name not in names:
            raise ConfigError(f"column {name!r} is declared but the dataset has no such column "
                              f"(columns: {', '.join(repr(n) for n in names[:8])})")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DatasetError(f"the dataset has {names.count(duplicated[0])} columns named {duplicated[0]!r}")
    label_plan = _label(schema, declaration.label, declaration.drop)
    label_name = label_plan[0].name if label_plan else None
    if label_name is not None and label_name in declaration.drop:
        raise ConfigError(f"column {label_name!r} is the label: it cannot also be dropped")
    if label_name is not None and label_name in declaration.columns:
        raise ConfigError(f"column {label_name!r} is the label: declare it with the label flags only")
    plans = []
    for f in schema:
        if f.name in declaration.drop:
            continue
        if f.name == label_name:
            assert label_plan is not None
            column = label_plan[0]
        elif f.name in declaration.columns:
            column = _declared(f.name, declaration.columns[f.name], f.type, f)
        else:
            column = _undeclared(f.name, f.type, f)
        plans.append(_Plan(f.name, column, f.type))
    if not plans:
        raise ConfigError("no column is left to seal")
    return SealPlan(tuple(plans), label_derived=bool(label_plan and label_plan[1]))


def public_plan(schema: pa.Schema, public: PublicSchema) -> SealPlan:
    """How a public file of `schema` becomes records of a sealed dataset's `public` schema.

    Public evaluation data is encoded as the sealed data was (vocabulary indices,
    bucket hashes, class indices of string labels) under the same row checks, so the
    enclave reads both alike; columns the sealed schema lacks are left out.
    """
    missing = next((c.name for c in public if c.name not in schema.names), None)
    if missing is not None:
        raise ConfigError(f"the public file lacks column {missing!r} of the sealed dataset's public schema "
                          f"(columns: {', '.join(repr(n) for n in schema.names[:8])})")
    duplicated = next((c.name for c in public if schema.names.count(c.name) > 1), None)
    if duplicated is not None:
        raise DatasetError(f"the public file has {schema.names.count(duplicated)} columns named {duplicated!r}")
    return SealPlan(tuple(_Plan(c.name, c, schema.field(c.name).type) for c in public))


def declaration_from_flags(
    *,
    numeric: Iterable[str] = (),
    categorical: Iterable[str] = (),
    tensor: Iterable[str] = (),
    sequence: Iterable[str] = (),
    drop: Iterable[str] = (),
    label: str | None = None,
    target: str | None = None,
    task: Task | None = None,
    classes: str | None = None,
    num_classes: int | None = None,
    schema_file: str | os.PathLike[str] | None = None,
) -> SchemaDeclaration:
    """The declaration `hermetic seal`'s flags (and its --schema file) make; ConfigError on a bad one."""
    columns: dict[str, Decl] = {}
    parsers = ((numeric, parse_numeric_flag), (categorical, parse_categorical_flag),
               (tensor, parse_tensor_flag), (sequence, parse_sequence_flag))
    for specs, parse in parsers:
        for spec in specs:
            name, decl = parse(spec)
            if name in columns:
                raise ConfigError(f"column {name!r} is declared twice")
            columns[name] = decl
    label_decl = LabelDecl(column=label, task=task, num_classes=num_classes,
                           classes=parse_classes_flag(classes) if classes is not None else None)
    if target is not None:
        wanted = parse_target_flag(target)
        if label is not None and label != wanted.column:
            raise ConfigError(f"--target {wanted.column!r} and --label {label!r}: a dataset has one label")
        if task == "classification":
            raise ConfigError("--target is a regression target: drop --task classification")
        label_decl = replace(label_decl, column=wanted.column, task="regression", lo=wanted.lo, hi=wanted.hi)
    declaration = SchemaDeclaration(columns, label_decl, tuple(dict.fromkeys(drop)))
    if schema_file is not None:
        declaration = declaration.merged(load_schema_file(schema_file))
    return declaration
