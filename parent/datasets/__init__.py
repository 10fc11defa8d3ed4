"""Input dataset readers: Parquet, Arrow IPC/Feather, CSV, NPZ, IDX (MNIST), one interface."""
from __future__ import annotations

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    BadIdxMagic,
    DatasetNotFound,
    DatasetReader,
    DimensionMismatch,
    MalformedDataset,
    TruncatedDataset,
    UnsupportedDataset,
)
from parent.datasets.csv import CsvReader
from parent.datasets.idx import IdxHeader, IdxReader, parse_idx_header
from parent.datasets.ipc import IpcReader
from parent.datasets.npz import NpzReader
from parent.datasets.open import open_dataset
from parent.datasets.parquet import ParquetReader

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "BadIdxMagic",
    "CsvReader",
    "DatasetNotFound",
    "DatasetReader",
    "DimensionMismatch",
    "IdxHeader",
    "IdxReader",
    "IpcReader",
    "MalformedDataset",
    "NpzReader",
    "ParquetReader",
    "TruncatedDataset",
    "UnsupportedDataset",
    "open_dataset",
    "parse_idx_header",
]
