"""Pick the reader for a dataset path."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from parent.datasets.base import DatasetNotFound, DatasetReader, UnsupportedDataset
from parent.datasets.csv import CsvReader
from parent.datasets.idx import is_idx_name, open_idx, open_idx_directory, open_idx_prefix
from parent.datasets.ipc import IpcReader
from parent.datasets.npz import NpzReader
from parent.datasets.parquet import ParquetReader

READERS_BY_SUFFIX: dict[str, Callable[[Path], DatasetReader]] = {
    ".parquet": ParquetReader,
    ".pq": ParquetReader,
    ".arrow": IpcReader,
    ".feather": IpcReader,
    ".ipc": IpcReader,
    ".arrows": IpcReader,
    ".csv": CsvReader,
    ".npz": NpzReader,
}


def open_dataset(path: str | os.PathLike[str]) -> DatasetReader:
    """The reader for `path`, chosen by extension.

    IDX (MNIST) data may be named by its images file (the labels file beside it
    is found), by a prefix such as `.../t10k`, or by a directory holding one
    images/labels pair.
    """
    p = Path(path)
    if p.is_dir():
        reader = open_idx_directory(p)
        if reader is None:
            raise UnsupportedDataset(f"{p} is a directory without an IDX images/labels pair")
        return reader
    if not p.exists():
        reader = open_idx_prefix(str(p))
        if reader is None:
            raise DatasetNotFound(f"no such file: {p}")
        return reader
    if is_idx_name(p.name):
        return open_idx(p)
    cls = READERS_BY_SUFFIX.get(p.suffix.lower())
    if cls is None:
        known = ", ".join(sorted(READERS_BY_SUFFIX))
        raise UnsupportedDataset(f"{p.name}: unknown dataset type (known: {known}, IDX[.gz])")
    return cls(p)
