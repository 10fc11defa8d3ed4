"""Parquet datasets, streamed row group by row group."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    DatasetNotFound,
    FileDatasetReader,
    MalformedDataset,
    check_batch_rows,
)


class ParquetReader(FileDatasetReader):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        with self._open() as pf:
            self._schema = pf.schema_arrow
            # The footer's row count: no data pages are read to count.
            self._count = pf.metadata.num_rows

    def _open(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self._path)
        except FileNotFoundError:
            raise DatasetNotFound(f"no such file: {self._path}") from None
        except (pa.ArrowException, OSError) as err:
            raise MalformedDataset(f"{self._path.name}: not a readable Parquet file ({err})") from None

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        check_batch_rows(batch_rows)
        with self._open() as pf:
            try:
                for batch in pf.iter_batches(batch_size=batch_rows):
                    if batch.num_rows:
                        yield batch
            except (pa.ArrowException, OSError) as err:
                raise MalformedDataset(f"{self._path.name}: corrupt Parquet data ({err})") from None
