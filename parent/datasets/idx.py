"""IDX files (the MNIST format), plain or gzip-compressed, read in blocks.

An IDX file is: two zero bytes, a type code, the number of dimensions n, then n
big-endian u32 dimensions, then the values in C order, big-endian. MNIST images
are 0x00000803 (uint8, 3-D: count x rows x cols), labels 0x00000801 (uint8, 1-D).

An images/labels pair becomes one dataset with columns `image`
(fixed_size_list<uint8>[rows*cols], field metadata shape b"ROWSxCOLS") and
`label` (uint8). A lone IDX file that is not an images file becomes one
column named `data`.
"""
from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    BadIdxMagic,
    DatasetNotFound,
    DatasetReader,
    DimensionMismatch,
    MalformedDataset,
    TruncatedDataset,
    check_batch_rows,
    tensor_array,
    tensor_field,
)

# type code -> big-endian numpy dtype
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_DIMS = 8
# One record may not exceed this many bytes: guards against absurd headers.
MAX_RECORD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class IdxHeader:
    type_code: int
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.type_code not in IDX_TYPES:
            raise BadIdxMagic(f"unknown IDX type code 0x{self.type_code:02x}")
        if not 1 <= len(self.dims) <= MAX_IDX_DIMS:
            raise BadIdxMagic(f"IDX files have 1..{MAX_IDX_DIMS} dimensions, got {len(self.dims)}")
        if any(not 0 <= d < 2**32 for d in self.dims):
            raise MalformedDataset("IDX dimensions must be unsigned 32-bit integers")
        if any(d == 0 for d in self.dims[1:]):
            raise DimensionMismatch("IDX record dimensions must be positive")
        if self.record_bytes > MAX_RECORD_BYTES:
            raise DimensionMismatch(f"IDX records of {self.record_bytes} bytes are too large")

    @property
    def dtype(self) -> np.dtype:
        return IDX_TYPES[self.type_code]

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def record_shape(self) -> tuple[int, ...]:
        return self.dims[1:]

    @property
    def record_bytes(self) -> int:
        return int(np.prod(self.record_shape, dtype=object)) * self.dtype.itemsize

    @property
    def size(self) -> int:
        """Bytes of the encoded header."""
        return 4 + 4 * len(self.dims)

    @property
    def data_bytes(self) -> int:
        return self.count * self.record_bytes

    def encode(self) -> bytes:
        return bytes((0, 0, self.type_code, len(self.dims))) + struct.pack(
            f">{len(self.dims)}I", *self.dims
        )


def parse_idx_header(data: bytes) -> IdxHeader:
    """Parse an IDX header from the start of `data` (which may hold more bytes)."""
    if len(data) < 4:
        raise TruncatedDataset(f"IDX header needs 4 bytes, got {len(data)}")
    if data[0] != 0 or data[1] != 0:
        raise BadIdxMagic(f"bad IDX magic 0x{bytes(data[:4]).hex()}")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES or not 1 <= ndim <= MAX_IDX_DIMS:
        raise BadIdxMagic(f"bad IDX magic 0x{bytes(data[:4]).hex()}")
    need = 4 + 4 * ndim
    if len(data) < need:
        raise TruncatedDataset(f"IDX header needs {need} bytes, got {len(data)}")
    return IdxHeader(type_code, struct.unpack_from(f">{ndim}I", data, 4))


def _is_gz(path: Path) -> bool:
    return path.name.endswith(".gz")


def _open_raw(path: Path) -> BinaryIO:
    try:
        if _is_gz(path):
            return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile in "rb" mode
        return open(path, "rb")
    except FileNotFoundError:
        raise DatasetNotFound(f"no such file: {path}") from None
    except OSError as err:
        raise MalformedDataset(f"cannot open {path}: {err.strerror or err}") from None


def _read(stream: BinaryIO, n: int, path: Path) -> bytes:
    """Read up to n bytes, turning decompression failures into typed errors."""
    try:
        parts = []
        got = 0
        while got < n:
            block = stream.read(n - got)
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)
    except EOFError:
        raise TruncatedDataset(f"{path.name}: compressed stream is truncated") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise MalformedDataset(f"{path.name}: corrupt gzip data ({err})") from None
    except OSError as err:
        raise MalformedDataset(f"{path.name}: read failed ({err})") from None


def read_idx_header(stream: BinaryIO, path: Path) -> IdxHeader:
    head = _read(stream, 4, path)
    if len(head) == 4 and head[:2] == b"\0\0" and 1 <= head[3] <= MAX_IDX_DIMS:
        head += _read(stream, 4 * head[3], path)
    try:
        return parse_idx_header(head)
    except MalformedDataset as err:
        raise type(err)(f"{path.name}: {err}") from None


class IdxReader(DatasetReader):
    """Columns from IDX files that share their first dimension (the record count)."""

    def __init__(self, columns: Sequence[tuple[str, str | os.PathLike[str]]]) -> None:
        if not columns:
            raise MalformedDataset("an IDX dataset needs at least one file")
        self._columns = [(name, Path(p)) for name, p in columns]
        self._headers = []
        for _, path in self._columns:
            with _open_raw(path) as stream:
                header = read_idx_header(stream, path)
            if not _is_gz(path):
                expected = header.size + header.data_bytes
                actual = path.stat().st_size
                if actual < expected:
                    raise TruncatedDataset(f"{path.name}: {actual} bytes, header announces {expected}")
                if actual > expected:
                    raise MalformedDataset(f"{path.name}: {actual - expected} bytes after the data")
            self._headers.append(header)
        counts = {h.count for h in self._headers}
        if len(counts) != 1:
            detail = ", ".join(f"{p.name}={h.count}" for (_, p), h in zip(self._columns, self._headers, strict=True))
            raise DimensionMismatch(f"IDX files disagree on the record count ({detail})")
        self._schema = pa.schema(
            [
                tensor_field(name, h.dtype, h.record_shape)
                for (name, _), h in zip(self._columns, self._headers, strict=True)
            ]
        )

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for _, p in self._columns)

    def schema(self) -> pa.Schema:
        return self._schema

    def count(self) -> int:
        return self._headers[0].count

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        check_batch_rows(batch_rows)
        with ExitStack() as stack:
            streams = []
            for (_, path), header in zip(self._columns, self._headers, strict=True):
                stream = stack.enter_context(_open_raw(path))
                # Headers may change between construction and now; re-check.
                if read_idx_header(stream, path) != header:
                    raise MalformedDataset(f"{path.name} changed while being read")
                streams.append(stream)
            remaining = self.count()
            while remaining:
                rows = min(batch_rows, remaining)
                arrays = []
                for stream, (_, path), header, field in zip(
                    streams, self._columns, self._headers, self._schema, strict=True
                ):
                    want = rows * header.record_bytes
                    block = _read(stream, want, path)
                    if len(block) < want:
                        raise TruncatedDataset(f"{path.name}: data ends before the announced records")
                    records = np.frombuffer(block, dtype=header.dtype).reshape(
                        (rows, *header.record_shape)
                    )
                    arrays.append(tensor_array(records, field))
                remaining -= rows
                yield pa.RecordBatch.from_arrays(arrays, schema=self._schema)
            # Reading to the end makes gzip verify its CRC and length trailer.
            for stream, (_, path) in zip(streams, self._columns, strict=True):
                if _read(stream, 1, path):
                    raise MalformedDataset(f"{path.name}: data continues after the announced records")


_IDX_NAME = re.compile(r"(idx[1-9]-ubyte|\.idx)(\.gz)?$")


def is_idx_name(name: str) -> bool:
    """MNIST-style names (…-idx3-ubyte[.gz]) or an explicit .idx[.gz] extension."""
    return _IDX_NAME.search(name) is not None


def _suffixes(kind: str, ndim: int) -> tuple[str, ...]:
    # MNIST's own names use "-"; some mirrors use "." before "idx".
    return tuple(f"-{kind}{dot}idx{ndim}-ubyte{gz}" for dot in "-." for gz in ("", ".gz"))


def _pair_candidates(prefix: str) -> tuple[list[Path], list[Path]]:
    images = [Path(prefix + s) for s in _suffixes("images", 3)]
    labels = [Path(prefix + s) for s in _suffixes("labels", 1)]
    return [p for p in images if p.is_file()], [p for p in labels if p.is_file()]


def open_idx_pair(images: Path) -> IdxReader:
    """The `image`/`label` dataset for an images file and the labels file beside it."""
    name = images.name
    for marker in ("-images-idx3-ubyte", "-images.idx3-ubyte"):
        if marker in name:
            prefix = str(images.parent / name[: name.index(marker)])
            break
    else:
        raise MalformedDataset(f"{name} is not named like an IDX images file")
    _, labels = _pair_candidates(prefix)
    if not labels:
        raise DatasetNotFound(f"no labels file (…-labels-idx1-ubyte[.gz]) beside {name}")
    # Prefer the labels file with the same compression as the images file.
    labels.sort(key=lambda p: _is_gz(p) != _is_gz(images))
    return IdxReader([("image", images), ("label", labels[0])])


def open_idx_prefix(prefix: str) -> IdxReader | None:
    """The pair `<prefix>-images-idx3-ubyte[.gz]` + labels, or None if no images file exists."""
    images, _ = _pair_candidates(prefix)
    if not images:
        return None
    images.sort(key=_is_gz)  # uncompressed first: cheaper to read
    return open_idx_pair(images[0])


def open_idx_directory(directory: Path) -> IdxReader | None:
    """The single images/labels pair in a directory, or None if it has none."""
    images = sorted(p for p in directory.iterdir() if p.is_file() and _is_images_name(p.name))
    prefixes = sorted({str(p)[: str(p).index("-images")] for p in images})
    if not prefixes:
        return None
    if len(prefixes) > 1:
        names = ", ".join(Path(p).name for p in prefixes)
        raise MalformedDataset(
            f"{directory} holds several IDX datasets ({names}); pass a prefix such as {prefixes[0]}"
        )
    return open_idx_prefix(prefixes[0])


def _is_images_name(name: str) -> bool:
    return "-images-idx3-ubyte" in name or "-images.idx3-ubyte" in name


def open_idx(path: Path) -> IdxReader:
    if _is_images_name(path.name):
        return open_idx_pair(path)
    return IdxReader([("data", path)])
