"""The one reader interface for input datasets, and its error types."""
from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from enclave.errors import DatasetError
from enclave.sealed.records import SHAPE_METADATA_KEY, format_shape

DEFAULT_BATCH_ROWS = 8192


class UnsupportedDataset(DatasetError):
    """The path is not in a format Hermetic reads."""


class DatasetNotFound(DatasetError):
    """The dataset path (or a file it implies, like an IDX labels file) does not exist."""


class MalformedDataset(DatasetError):
    """The file exists but its content is not valid for its format."""


class BadIdxMagic(MalformedDataset):
    """An IDX file does not start with a valid IDX magic number."""


class DimensionMismatch(MalformedDataset):
    """Columns disagree on the record count, or dimensions are inconsistent."""


class TruncatedDataset(MalformedDataset):
    """The file (or compressed stream) ends before the data its header announces."""


class DatasetReader(abc.ABC):
    """A dataset that can be described, counted and streamed in record batches.

    Implementations hold no data between calls; each `iter_batches` call
    re-reads the source, so memory stays bounded by one batch per column.
    """

    @property
    def paths(self) -> tuple[Path, ...]:
        """The files the dataset is read from (for naming and progress), if any."""
        return ()

    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """The Arrow schema every yielded batch has."""

    @abc.abstractmethod
    def count(self) -> int:
        """The number of records."""

    @abc.abstractmethod
    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Yield record batches of at most `batch_rows` rows, in order."""


class FileDatasetReader(DatasetReader):
    """A reader over one file whose schema and count are known once it is opened.

    Subclasses set `_path`, `_schema` and `_count` in their constructor.
    """

    _path: Path
    _schema: pa.Schema | None
    _count: int

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self._path,)

    def schema(self) -> pa.Schema:
        assert self._schema is not None
        return self._schema

    def count(self) -> int:
        return self._count


def check_batch_rows(batch_rows: int) -> int:
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError("batch_rows must be a positive integer")
    return batch_rows


def rebatch(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Slice batches (zero-copy) so none exceeds batch_rows; empty batches are dropped."""
    for batch in batches:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def tensor_field(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> pa.Field:
    """The Arrow field of a column whose records are arrays of `shape` (empty = scalar).

    Multi-dimensional records become fixed_size_list<T>[prod(shape)] of the
    C-order flattened record, with the shape in the field metadata.
    """
    if not shape:
        return pa.field(name, arrow_type(dtype, name, allow_text=True), nullable=False)
    size = int(np.prod(shape))
    return pa.field(
        name,
        pa.list_(arrow_type(dtype, name), size),
        nullable=False,
        metadata={SHAPE_METADATA_KEY: format_shape(shape)},
    )


def tensor_array(records: np.ndarray, field: pa.Field) -> pa.Array:
    """Build the column for `records` (first axis = records) matching tensor_field."""
    native = records.astype(records.dtype.newbyteorder("="), copy=False)
    if not pa.types.is_fixed_size_list(field.type):
        return pa.array(native, type=field.type)
    flat = np.ascontiguousarray(native).reshape(-1)
    values = pa.array(flat, type=field.type.value_type)
    return pa.FixedSizeListArray.from_arrays(values, field.type.list_size)


def arrow_type(dtype: np.dtype, name: str, *, allow_text: bool = False) -> pa.DataType:
    if dtype.hasobject:
        raise UnsupportedDataset(f"column {name!r} holds Python objects; refusing to unpickle")
    if dtype.kind in "biufmM":
        try:
            return pa.from_numpy_dtype(dtype.newbyteorder("="))
        except (pa.ArrowNotImplementedError, TypeError):
            pass
    if allow_text and dtype.kind == "U":
        return pa.string()
    if allow_text and dtype.kind == "S":
        return pa.binary()
    raise UnsupportedDataset(f"column {name!r} has unsupported dtype {dtype}")
