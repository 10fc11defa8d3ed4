from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from enclave.sealed.records import field_shape
from parent.datasets import (
    CsvReader,
    DatasetNotFound,
    DimensionMismatch,
    IpcReader,
    MalformedDataset,
    NpzReader,
    ParquetReader,
    TruncatedDataset,
    UnsupportedDataset,
    open_dataset,
)


def sample_table(n: int = 25) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "score": pa.array(np.linspace(0, 1, n)),
            "name": [f"row{i}" for i in range(n)],
        }
    )


def read_all(reader, batch_rows: int = 7) -> pa.Table:
    batches = list(reader.iter_batches(batch_rows))
    assert all(0 < b.num_rows <= batch_rows for b in batches)
    assert all(b.schema.equals(reader.schema()) for b in batches)
    return pa.Table.from_batches(batches, schema=reader.schema())


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(sample_table(), path, row_group_size=10)
    reader = open_dataset(path)
    assert isinstance(reader, ParquetReader)
    assert reader.count() == 25
    assert read_all(reader).equals(sample_table())


@pytest.mark.parametrize("suffix", [".arrow", ".feather", ".ipc"])
def test_ipc_file_and_feather(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    if suffix == ".feather":
        feather.write_feather(sample_table(), path, chunksize=10)
    else:
        with pa.ipc.new_file(path, sample_table().schema) as writer:
            writer.write_table(sample_table(), max_chunksize=10)
    reader = open_dataset(path)
    assert isinstance(reader, IpcReader)
    assert reader.count() == 25
    assert read_all(reader, 4).equals(sample_table())


def test_ipc_stream_file(tmp_path: Path) -> None:
    path = tmp_path / "d.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, sample_table().schema) as writer:
        writer.write_table(sample_table(), max_chunksize=10)
    reader = open_dataset(path)
    assert reader.count() == 25
    assert read_all(reader).equals(sample_table())


def test_not_arrow(tmp_path: Path) -> None:
    path = tmp_path / "d.feather"
    path.write_bytes(b"FEA1" + b"\0" * 64)  # Feather v1 magic
    with pytest.raises(MalformedDataset):
        open_dataset(path)


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pacsv.write_csv(sample_table(), path)
    reader = open_dataset(path)
    assert isinstance(reader, CsvReader)
    assert reader.count() == 25
    got = read_all(reader)
    assert got.column("id").to_pylist() == list(range(25))
    assert got.column("name").to_pylist()[3] == "row3"


def test_csv_type_drift_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    # Types are inferred from the first 1 MiB block; "x" arrives in a later one.
    lines = ["a"] + [str(i) for i in range(300_000)] + ["x"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedDataset, match="inferred"):
        open_dataset(path)


def write_npz(path: Path, compressed: bool, **arrays: np.ndarray) -> None:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_columns_and_tensors(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, 3, 4)).astype(np.float32)
    y = np.arange(11, dtype=">i4")  # big-endian input is converted to native
    flags = rng.integers(0, 2, size=11).astype(bool)
    path = tmp_path / "d.npz"
    write_npz(path, compressed, x=x, y=y, flags=flags)
    reader = open_dataset(path)
    assert isinstance(reader, NpzReader)
    assert reader.count() == 11
    schema = reader.schema()
    assert schema.names == ["x", "y", "flags"]
    assert schema.field("x").type == pa.list_(pa.float32(), 12)
    assert field_shape(schema.field("x")) == (3, 4)
    assert field_shape(schema.field("y")) is None
    got = read_all(reader, 4)
    assert np.array_equal(got.column("x").combine_chunks().flatten().to_numpy().reshape(11, 3, 4), x)
    assert got.column("y").to_pylist() == list(range(11))
    assert got.column("flags").to_pylist() == flags.tolist()


def test_npz_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, False, s=np.array(["a", "bb", "ccc"]), n=np.arange(3))
    assert read_all(open_dataset(path)).column("s").to_pylist() == ["a", "bb", "ccc"]


def test_npz_refuses_objects(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, o=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UnsupportedDataset, match="unpickle"):
        open_dataset(path)


def test_npz_first_axis_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros(3), b=np.zeros(4))
    with pytest.raises(DimensionMismatch):
        open_dataset(path)


def test_npz_scalar_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.float64(1.0))
    with pytest.raises(DimensionMismatch):
        open_dataset(path)


def test_npz_truncated_member(tmp_path: Path) -> None:
    full = tmp_path / "full.npy"
    np.save(full, np.arange(100, dtype=np.int64))
    data = full.read_bytes()
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", data[:-80])  # header says 100 values, 90 present
    reader = open_dataset(path)
    with pytest.raises(TruncatedDataset):
        list(reader.iter_batches(10))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.npy", data[:-80])
    with pytest.raises(TruncatedDataset):
        list(open_dataset(path).iter_batches(10))


def test_npz_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(MalformedDataset):
        open_dataset(path)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(UnsupportedDataset, match="unknown dataset type"):
        open_dataset(path)
    with pytest.raises(DatasetNotFound):
        open_dataset(tmp_path / "missing.parquet")
    with pytest.raises(UnsupportedDataset):
        open_dataset(tmp_path)  # a directory without IDX files


def test_batch_rows_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(sample_table(), path)
    with pytest.raises(ValueError):
        list(open_dataset(path).iter_batches(0))
