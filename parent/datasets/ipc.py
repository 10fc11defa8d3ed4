"""Arrow IPC files (Feather v2 is the same format), memory-mapped; IPC streams too."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    DatasetNotFound,
    FileDatasetReader,
    MalformedDataset,
    check_batch_rows,
    rebatch,
)


class IpcReader(FileDatasetReader):
    """An Arrow IPC file (random access, counted from its footer) or, failing that, an IPC stream."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise DatasetNotFound(f"no such file: {self._path}")
        try:
            with pa.memory_map(str(self._path)) as source:
                reader = pa.ipc.open_file(source)
                self._schema = reader.schema
                self._count = sum(
                    reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches)
                )
            self._is_file = True
        except pa.ArrowInvalid:
            self._is_file = False
            self._schema, self._count = self._scan_stream()

    def _scan_stream(self) -> tuple[pa.Schema, int]:
        # A stream has no footer: counting is one pass over the batches.
        count = 0
        schema = None
        try:
            with pa.memory_map(str(self._path)) as source:
                reader = pa.ipc.open_stream(source)
                schema = reader.schema
                for batch in reader:
                    count += batch.num_rows
        except pa.ArrowException as err:
            raise MalformedDataset(
                f"{self._path.name}: not an Arrow IPC file or stream (Feather v1 is not supported): {err}"
            ) from None
        return schema, count

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        check_batch_rows(batch_rows)
        try:
            with pa.memory_map(str(self._path)) as source:
                if self._is_file:
                    reader = pa.ipc.open_file(source)
                    batches = (reader.get_record_batch(i) for i in range(reader.num_record_batches))
                else:
                    batches = pa.ipc.open_stream(source)
                yield from rebatch(batches, batch_rows)
        except pa.ArrowException as err:
            raise MalformedDataset(f"{self._path.name}: corrupt Arrow IPC data ({err})") from None
