"""Public evaluation data: read like any dataset, sent to the enclave as plain Arrow IPC.

Metrics on public data are post-processing of a DP model and may leave the enclave;
the certificate records the SHA-256 of exactly the bytes the enclave evaluated on.

A CSV or Parquet file given with the sealed dataset's public schema is re-encoded by
that schema first (`parent.datasets.schema.public_plan`: category and class indices,
bounds and the other row checks of sealing), so a tabular job's public file holds
what the sealed records hold. Other formats (NPZ, IDX) are sent as read.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

from enclave.sealed.public_schema import PublicSchema
from parent.datasets import CsvReader, ParquetReader, open_dataset
from parent.datasets.schema import public_plan


@dataclass(frozen=True)
class PublicDataset:
    name: str
    ipc: bytes
    records: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.ipc).hexdigest()


def load_public_dataset(name: str, path: Path, batch_rows: int = 8192,
                        schema: PublicSchema | None = None) -> PublicDataset:
    """The public file at `path` as Arrow IPC; re-encoded by `schema` (a sealed file's) if CSV or Parquet."""
    reader = open_dataset(path)
    plan = None
    if schema is not None and not schema.legacy and isinstance(reader, (CsvReader, ParquetReader)):
        plan = public_plan(reader.schema(), schema)
    sink = pa.BufferOutputStream()
    records = 0
    with pa.ipc.new_stream(sink, reader.schema() if plan is None else plan.schema) as writer:
        for batch in reader.iter_batches(batch_rows):
            writer.write_batch(batch if plan is None else plan.convert(batch, records))
            records += batch.num_rows
    return PublicDataset(name=name, ipc=sink.getvalue().to_pybytes(), records=records)
