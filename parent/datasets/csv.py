"""CSV datasets, parsed in streaming blocks by pyarrow.csv."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    DatasetNotFound,
    FileDatasetReader,
    MalformedDataset,
    check_batch_rows,
    rebatch,
)


class CsvReader(FileDatasetReader):
    """A header-row CSV file. Column types are inferred from the first block and
    then pinned, so every pass yields the same schema; counting is one pass."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise DatasetNotFound(f"no such file: {self._path}")
        self._schema: pa.Schema | None = None
        reader = self._open()
        self._schema = reader.schema
        count = 0
        for batch in self._guard(reader):
            count += batch.num_rows
        self._count = count

    def _open(self) -> pacsv.CSVStreamingReader:
        convert = None
        if self._schema is not None:
            convert = pacsv.ConvertOptions(column_types=self._schema)
        try:
            # Single-threaded so a type error surfaces in the block that holds it,
            # not at open time through read-ahead: errors stay deterministic.
            return pacsv.open_csv(
                self._path,
                read_options=pacsv.ReadOptions(use_threads=False),
                convert_options=convert,
            )
        except pa.ArrowException as err:
            raise MalformedDataset(f"{self._path.name}: not a readable CSV file ({err})") from None

    def _guard(self, reader: pacsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except pa.ArrowException as err:
            raise MalformedDataset(
                f"{self._path.name}: CSV rows do not match the columns inferred from the first block ({err})"
            ) from None

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        check_batch_rows(batch_rows)
        yield from rebatch(self._guard(self._open()), batch_rows)
