"""Public evaluation data: read like any dataset, sent to the enclave as plain Arrow IPC.

Accuracy on public data is post-processing of a DP model and may leave the enclave;
the certificate records the SHA-256 of exactly the bytes the enclave evaluated on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

from parent.datasets import open_dataset


@dataclass(frozen=True)
class PublicDataset:
    name: str
    ipc: bytes
    records: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.ipc).hexdigest()


def load_public_dataset(name: str, path: Path, batch_rows: int = 8192) -> PublicDataset:
    reader = open_dataset(path)
    sink = pa.BufferOutputStream()
    records = 0
    with pa.ipc.new_stream(sink, reader.schema()) as writer:
        for batch in reader.iter_batches(batch_rows):
            writer.write_batch(batch)
            records += batch.num_rows
    return PublicDataset(name=name, ipc=sink.getvalue().to_pybytes(), records=records)
