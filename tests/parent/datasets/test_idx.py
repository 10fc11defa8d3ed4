from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import DatasetError
from enclave.sealed.records import field_shape
from parent.datasets import (
    BadIdxMagic,
    DatasetNotFound,
    DimensionMismatch,
    IdxHeader,
    MalformedDataset,
    TruncatedDataset,
    open_dataset,
    parse_idx_header,
)
from parent.datasets import idx as idx_module
from parent.datasets.idx import IDX_TYPES

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes((0, 0, type_code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_TYPES[type_code]).tobytes()


def write_pair(directory: Path, prefix: str, n: int = 7, gz: bool = True, rows: int = 3, cols: int = 2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    img_path = directory / f"{prefix}-images-idx3-ubyte{suffix}"
    lbl_path = directory / f"{prefix}-labels-idx1-ubyte{suffix}"
    with opener(img_path, "wb") as fh:
        fh.write(idx_bytes(images, 0x08))
    with opener(lbl_path, "wb") as fh:
        fh.write(idx_bytes(labels, 0x08))
    return img_path, lbl_path, images, labels


def test_mnist_magic_known_answer() -> None:
    images = parse_idx_header(bytes.fromhex("00000803" "0000ea60" "0000001c" "0000001c"))
    assert images == IdxHeader(0x08, (60000, 28, 28))
    assert images.record_bytes == 784 and images.count == 60000 and images.size == 16
    labels = parse_idx_header(bytes.fromhex("00000801" "00002710"))
    assert labels.dims == (10000,) and labels.dtype == np.dtype("u1")


@settings(max_examples=200, deadline=None)
@given(
    type_code=st.sampled_from(sorted(IDX_TYPES)),
    dims=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=4),
    first=st.integers(min_value=0, max_value=2**32 - 1),
    extra=st.binary(max_size=16),
)
def test_header_round_trip(type_code: int, dims: list[int], first: int, extra: bytes) -> None:
    header = IdxHeader(type_code, (first, *dims[1:]))
    parsed = parse_idx_header(header.encode() + extra)  # bytes after the header are data
    assert parsed == header
    assert parsed.size == len(header.encode())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_header_parser_raises_only_dataset_errors(data: bytes) -> None:
    try:
        header = parse_idx_header(data)
    except DatasetError:
        return
    assert data[:2] == b"\0\0" and data[2] in IDX_TYPES
    assert header.encode() == data[: header.size]


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"\x01\x00\x08\x01\0\0\0\1", BadIdxMagic),
        (b"\x00\x00\x07\x01\0\0\0\1", BadIdxMagic),  # unknown type code
        (b"\x00\x00\x08\x00", BadIdxMagic),  # zero dimensions
        (b"\x00\x00\x08\x09" + b"\0\0\0\1" * 9, BadIdxMagic),  # too many dimensions
        (b"\x00\x00\x08\x03\0\0\0\1", TruncatedDataset),
        (b"\x00\x00", TruncatedDataset),
        (b"\x00\x00\x08\x02\0\0\0\1\0\0\0\0", DimensionMismatch),  # zero-size record
        (b"\x00\x00\x0e\x03\0\0\0\1\xff\xff\xff\xff\xff\xff\xff\xff", DimensionMismatch),  # huge record
    ],
)
def test_bad_headers(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_idx_header(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_pair_by_images_file_prefix_and_directory(tmp_path: Path, gz: bool) -> None:
    img, _, images, labels = write_pair(tmp_path, "train", gz=gz)
    for target in (img, tmp_path / "train", tmp_path):
        reader = open_dataset(target)
        assert reader.count() == 7
        schema = reader.schema()
        assert schema.names == ["image", "label"]
        assert field_shape(schema.field("image")) == (3, 2)
        batches = list(reader.iter_batches(3))
        assert [b.num_rows for b in batches] == [3, 3, 1]
        got_images = np.concatenate(
            [b.column("image").flatten().to_numpy().reshape(-1, 3, 2) for b in batches]
        )
        got_labels = np.concatenate([b.column("label").to_numpy() for b in batches])
        assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)


def test_directory_with_two_datasets_is_ambiguous(tmp_path: Path) -> None:
    write_pair(tmp_path, "train")
    write_pair(tmp_path, "t10k")
    with pytest.raises(MalformedDataset, match="several"):
        open_dataset(tmp_path)


def test_missing_labels(tmp_path: Path) -> None:
    img, lbl, _, _ = write_pair(tmp_path, "train")
    lbl.unlink()
    with pytest.raises(DatasetNotFound, match="labels"):
        open_dataset(img)


def test_lone_labels_file_is_one_column(tmp_path: Path) -> None:
    _, lbl, _, labels = write_pair(tmp_path, "train")
    reader = open_dataset(lbl)
    assert reader.schema().names == ["data"]
    assert np.array_equal(next(reader.iter_batches(100)).column("data").to_numpy(), labels)


def test_count_mismatch(tmp_path: Path) -> None:
    img, lbl, _, labels = write_pair(tmp_path, "train")
    with gzip.open(lbl, "wb") as fh:
        fh.write(idx_bytes(labels[:5], 0x08))
    with pytest.raises(DimensionMismatch, match="record count"):
        open_dataset(img)


def test_bad_magic_file(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 20)  # a gzip file without .gz
    (tmp_path / "x-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(1, np.uint8), 0x08))
    with pytest.raises(BadIdxMagic):
        open_dataset(path)


def test_uncompressed_size_checked_at_open(tmp_path: Path) -> None:
    img, lbl, _, _ = write_pair(tmp_path, "train", gz=False)
    data = img.read_bytes()
    img.write_bytes(data[:-1])
    with pytest.raises(TruncatedDataset):
        open_dataset(img)
    img.write_bytes(data + b"\0")
    with pytest.raises(MalformedDataset, match="after the data"):
        open_dataset(img)


def test_truncated_gzip_detected_while_streaming(tmp_path: Path) -> None:
    img, _, _, _ = write_pair(tmp_path, "train", n=200, rows=28, cols=28)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) * 2 // 3])
    reader = open_dataset(img)  # the header is intact
    with pytest.raises(TruncatedDataset):
        for _ in reader.iter_batches(16):
            pass


def test_corrupt_gzip_crc(tmp_path: Path) -> None:
    img, _, _, _ = write_pair(tmp_path, "train")
    data = bytearray(img.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    img.write_bytes(bytes(data))
    reader = open_dataset(img)
    with pytest.raises(MalformedDataset):
        list(reader.iter_batches(100))


def test_gzip_extra_data_after_records(tmp_path: Path) -> None:
    img, _, images, _ = write_pair(tmp_path, "train")
    with gzip.open(img, "wb") as fh:
        fh.write(idx_bytes(images, 0x08) + b"\0\0")
    with pytest.raises(MalformedDataset, match="continues"):
        list(open_dataset(img).iter_batches(100))


def test_big_endian_types(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.0], [3.25, 1e9]], dtype=np.float32)
    path = tmp_path / "feat.idx"
    path.write_bytes(idx_bytes(values, 0x0D))
    reader = open_dataset(path)
    col = next(reader.iter_batches()).column("data")
    assert np.array_equal(col.flatten().to_numpy().reshape(2, 2), values)


def test_streams_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img, _, _, _ = write_pair(tmp_path, "train", n=100, rows=4, cols=4)
    sizes: list[int] = []
    real = idx_module._read

    def spy(stream, n, path):  # type: ignore[no-untyped-def]
        sizes.append(n)
        return real(stream, n, path)

    monkeypatch.setattr(idx_module, "_read", spy)
    list(open_dataset(img).iter_batches(10))
    assert max(sizes) == 10 * 16  # never more than one batch of images at a time


@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_t10k() -> None:
    reader = open_dataset(FMNIST / "t10k-images-idx3-ubyte.gz")
    assert reader.count() == 10000
    schema = reader.schema()
    assert str(schema.field("image").type) == "fixed_size_list<item: uint8>[784]"
    assert field_shape(schema.field("image")) == (28, 28)
    assert schema.field("label").type.bit_width == 8
    total = 0
    label_counts = np.zeros(10, dtype=np.int64)
    first = None
    for batch in reader.iter_batches(4096):
        total += batch.num_rows
        label_counts += np.bincount(batch.column("label").to_numpy(), minlength=10)
        if first is None:
            first = batch.column("image")[0].values.to_numpy()
    assert total == 10000
    assert label_counts.tolist() == [1000] * 10  # the test split is balanced
    with gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        fh.read(16)
        assert np.array_equal(first, np.frombuffer(fh.read(784), np.uint8))
