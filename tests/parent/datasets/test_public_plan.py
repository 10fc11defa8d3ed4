"""A public CSV re-encoded by a sealed file's public schema before it is streamed (same row checks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest

from enclave.errors import ConfigError
from enclave.sealed.public_schema import CategoricalColumn, ClassLabel, NumericColumn, PublicSchema, parse_schema
from parent.datasets.schema import SchemaViolation
from parent.public_data import load_public_dataset

SCHEMA = PublicSchema((
    NumericColumn("age", "int64", 0, 120),
    CategoricalColumn("city", vocabulary=("north", "south", "east")),
    ClassLabel("diagnosis", 2, ("low", "high")),
))


def _table(ipc: bytes) -> pa.Table:
    return pa.ipc.open_stream(ipc).read_all()


def test_a_public_csv_is_encoded_as_the_sealed_records_are(tmp_path: Path) -> None:
    path = tmp_path / "holdout.csv"
    path.write_text("id,age,city,diagnosis\n1,30,east,high\n2,90,north,low\n")
    public = load_public_dataset("holdout", path, schema=SCHEMA)
    table = _table(public.ipc)
    assert table.column_names == ["age", "city", "diagnosis"] and public.records == 2
    assert table.column("city").to_pylist() == [2, 0] and table.column("diagnosis").to_pylist() == [1, 0]
    assert parse_schema(table.schema) == SCHEMA  # the same public schema as the sealed file's header


@pytest.mark.parametrize(("text", "error", "fragment"), [
    ("age,city,diagnosis\n30,west,high\n", SchemaViolation, "row 0: column 'city'"),
    ("age,city,diagnosis\n130,east,high\n", SchemaViolation, "row 0: column 'age'"),
    ("age,diagnosis\n30,high\n", ConfigError, "lacks column 'city'"),
])
def test_a_public_csv_that_breaks_the_schema_is_refused(tmp_path: Path, text: str, error: type[Exception],
                                                        fragment: str) -> None:
    path = tmp_path / "holdout.csv"
    path.write_text(text)
    with pytest.raises(error, match=fragment):
        load_public_dataset("holdout", path, schema=SCHEMA)


def test_npz_public_data_is_sent_as_read(tmp_path: Path) -> None:
    path = tmp_path / "holdout.npz"
    np.savez(path, image=np.zeros((3, 4), np.uint8), label=np.zeros(3, np.uint8))
    assert load_public_dataset("h", path, schema=SCHEMA).ipc == load_public_dataset("h", path).ipc
