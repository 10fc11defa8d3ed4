"""NumPy .npz archives: each array is a column, its first axis the records.

A column whose records are multi-dimensional (array shape (n, *shape)) becomes
fixed_size_list<T>[prod(shape)] of the C-order flattened record, with the
shape in the field metadata (see enclave.sealed.records). Members stored
uncompressed are memory-mapped; compressed members are decompressed as a
stream. Either way memory stays bounded by one batch. Object arrays are
refused: loading them would unpickle untrusted data.
"""
from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa

from parent.datasets.base import (
    DEFAULT_BATCH_ROWS,
    DatasetNotFound,
    DimensionMismatch,
    FileDatasetReader,
    MalformedDataset,
    TruncatedDataset,
    UnsupportedDataset,
    check_batch_rows,
    tensor_array,
    tensor_field,
)

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class _Member:
    name: str  # column name
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int  # offset of the array data inside the member


def _read_npy_header(fp: IO[bytes], label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            return npformat.read_array_header_1_0(fp)
        if version == (2, 0):
            return npformat.read_array_header_2_0(fp)
    except ValueError as err:
        raise MalformedDataset(f"{label}: bad .npy header ({err})") from None
    raise UnsupportedDataset(f"{label}: .npy format version {version} is not supported")


class NpzReader(FileDatasetReader):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        members: list[_Member] = []
        with self._zip() as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                label = f"{self._path.name}:{info.filename}"
                if not info.filename.endswith(".npy"):
                    raise UnsupportedDataset(f"{label}: npz members must be .npy arrays")
                with zf.open(info) as fp:
                    shape, fortran, dtype = _read_npy_header(fp, label)
                    offset = fp.tell()
                if not shape:
                    raise DimensionMismatch(f"{label}: 0-d arrays have no records")
                if fortran and int(np.prod(shape[1:], dtype=np.int64)) > 1:
                    # Records of a Fortran-order array are not contiguous.
                    raise UnsupportedDataset(f"{label}: Fortran-order arrays are not supported")
                members.append(_Member(info.filename[:-4], info, tuple(shape), dtype, offset))
        if not members:
            raise MalformedDataset(f"{self._path.name}: the archive holds no arrays")
        counts = {m.shape[0] for m in members}
        if len(counts) != 1:
            detail = ", ".join(f"{m.name}={m.shape[0]}" for m in members)
            raise DimensionMismatch(f"{self._path.name}: arrays disagree on the first axis ({detail})")
        self._members = members
        self._count = counts.pop()
        self._schema = pa.schema([tensor_field(m.name, m.dtype, m.shape[1:]) for m in members])

    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self._path)
        except FileNotFoundError:
            raise DatasetNotFound(f"no such file: {self._path}") from None
        except (zipfile.BadZipFile, OSError) as err:
            raise MalformedDataset(f"{self._path.name}: not a readable .npz archive ({err})") from None

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        check_batch_rows(batch_rows)
        with ExitStack() as stack:
            zf = stack.enter_context(self._zip())
            sources = [stack.enter_context(_ColumnSource.open(self._path, zf, m)) for m in self._members]
            for start in range(0, self._count, batch_rows):
                rows = min(batch_rows, self._count - start)
                arrays = [
                    tensor_array(src.records(start, rows), field)
                    for src, field in zip(sources, self.schema(), strict=True)
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=self._schema)
            for src in sources:
                src.finish()


class _ColumnSource:
    """Sequential record access to one member: a memmap if stored, else a decompressing stream."""

    def __init__(self, member: _Member, label: str) -> None:
        self.member = member
        self.label = label
        self.record_shape = member.shape[1:]
        self.record_bytes = int(np.prod(self.record_shape, dtype=np.int64)) * member.dtype.itemsize
        self._mmap: np.ndarray | None = None
        self._fp: IO[bytes] | None = None

    @classmethod
    def open(cls, path: Path, zf: zipfile.ZipFile, member: _Member) -> _ColumnSource:
        src = cls(member, f"{path.name}:{member.info.filename}")
        info = member.info
        if info.compress_type == zipfile.ZIP_STORED and info.flag_bits & 0x1 == 0 and member.shape[0]:
            expected = member.data_offset + member.shape[0] * src.record_bytes
            if expected > info.file_size:
                raise TruncatedDataset(f"{src.label}: data ends before the announced records")
            if expected < info.file_size:
                raise MalformedDataset(f"{src.label}: data continues after the announced records")
            src._mmap = np.memmap(
                path, dtype=member.dtype, mode="r", offset=_data_start(path, info) + member.data_offset,
                shape=member.shape,
            )
        else:
            fp = zf.open(info)
            _read_npy_header(fp, src.label)
            src._fp = fp
        return src

    def records(self, start: int, rows: int) -> np.ndarray:
        if self._mmap is not None:
            return self._mmap[start : start + rows]
        assert self._fp is not None
        want = rows * self.record_bytes
        try:
            block = self._fp.read(want)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise MalformedDataset(f"{self.label}: corrupt member data ({err})") from None
        if len(block) < want:
            raise TruncatedDataset(f"{self.label}: data ends before the announced records")
        return np.frombuffer(block, dtype=self.member.dtype).reshape((rows, *self.record_shape))

    def finish(self) -> None:
        if self._fp is not None:
            try:
                extra = self._fp.read(1)  # reaching EOF makes zipfile check the CRC
            except (zipfile.BadZipFile, EOFError, OSError) as err:
                raise MalformedDataset(f"{self.label}: corrupt member data ({err})") from None
            if extra:
                raise MalformedDataset(f"{self.label}: data continues after the announced records")

    def __enter__(self) -> _ColumnSource:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fp is not None:
            self._fp.close()
        self._mmap = None


def _data_start(path: Path, info: zipfile.ZipInfo) -> int:
    """Absolute offset of a stored member's bytes: past its local file header."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) < _LOCAL_HEADER.size:
        raise TruncatedDataset(f"{path.name}: archive ends inside a local header")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
    if signature != _LOCAL_SIGNATURE:
        raise MalformedDataset(f"{path.name}: bad local header for {info.filename}")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > path.stat().st_size:
        raise TruncatedDataset(f"{path.name}: member {info.filename} runs past the end of the archive")
    return int(start)
