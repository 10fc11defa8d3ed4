"""The plaintext payload of a sealed file: an Arrow IPC stream of record batches.

Tensor-valued columns (images, feature vectors) are stored as
fixed_size_list<T>[prod(shape)] with the per-record shape in the field
metadata under SHAPE_METADATA_KEY, written as dimensions joined by "x"
(e.g. b"28x28"). `field_shape` reads it back.

The label column carries the number of classes K the data owner declared when
sealing under NUM_CLASSES_METADATA_KEY (decimal ASCII): every label is an integer in
[0, K), checked by the sealer row by row. `field_num_classes` reads it back; a job
whose model has another class count is refused before any key is used.

The schema's IPC serialisation without schema-level metadata (`schema_bytes`) is
public: the sealed header carries it and the encryption context binds its SHA-256
(`schema_sha256`), so `header_schema` gives the shape of the records before any key
is used, and `verify_records` holds the decrypted payload to it. What every column
is (numeric, categorical, tensor, sequence, label or target, with its public bounds,
vocabulary, shape or classes) is read from that schema by `enclave.sealed.public_schema`.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import NoReturn

import pyarrow as pa
import pyarrow.ipc

from enclave.errors import SealedDataError
from enclave.sealed.errors import EncryptionContextMismatch, MalformedHeader, MalformedPayload
from enclave.sealed.format import PAYLOAD, SealedHeader

SHAPE_METADATA_KEY = b"shape"
NUM_CLASSES_METADATA_KEY = b"hermetic.num_classes"
# Far above any classifier's class count; keeps the declared value a small number.
MAX_NUM_CLASSES = 1 << 20


def format_shape(shape: tuple[int, ...]) -> bytes:
    return "x".join(str(int(d)) for d in shape).encode("ascii")


def field_shape(field: pa.Field) -> tuple[int, ...] | None:
    """The per-record tensor shape of a column, or None for a scalar column."""
    meta = field.metadata or {}
    raw = meta.get(SHAPE_METADATA_KEY)
    if raw is None:
        return None
    try:
        shape = tuple(int(part) for part in raw.decode("ascii").split("x"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedPayload(f"column {field.name!r} has a malformed shape {raw!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise MalformedPayload(f"column {field.name!r} has a malformed shape {raw!r}")
    return shape


def field_num_classes(field: pa.Field) -> int | None:
    """The class count a label column declares, or None when it declares none."""
    raw = (field.metadata or {}).get(NUM_CLASSES_METADATA_KEY)
    if raw is None:
        return None
    text = raw.decode("ascii", errors="replace")
    if not text.isdigit() or text != str(int(text)) or not 1 <= int(text) <= MAX_NUM_CLASSES:
        raise MalformedPayload(f"column {field.name!r} declares a malformed class count {raw[:20]!r}")
    return int(text)


def declare_num_classes(schema: pa.Schema, column: str, num_classes: int) -> pa.Schema:
    """`schema` with `column` declaring `num_classes` classes in its field metadata."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise MalformedPayload(f"a class count must be an integer in [1, {MAX_NUM_CLASSES}], got {num_classes!r}")
    index = schema.get_field_index(column)
    if index < 0:
        raise MalformedPayload(f"the dataset has no single column {column!r}")
    field = schema.field(index)
    metadata = {**(field.metadata or {}), NUM_CLASSES_METADATA_KEY: str(num_classes).encode("ascii")}
    return schema.set(index, field.with_metadata(metadata))


def schema_bytes(schema: pa.Schema) -> bytes:
    """The schema's IPC serialization without schema-level metadata: the header's `schema`.

    Schema-level metadata (e.g. pandas' from Parquet files) is dropped because it
    says nothing about the records; field metadata stays because it carries
    tensor shapes.
    """
    return bytes(schema.remove_metadata().serialize().to_pybytes())


def schema_sha256(schema: pa.Schema) -> str:
    """Hex SHA-256 of `schema_bytes(schema)`: the context's schema_sha256."""
    return hashlib.sha256(schema_bytes(schema)).hexdigest()


def header_schema(header: SealedHeader) -> pa.Schema:
    """The public schema a dataset header carries, parsed; MalformedHeader if it is not one.

    The header already checked that these bytes hash to the context's schema_sha256;
    here they must also be one canonical Arrow schema: the bytes `schema_bytes` gives
    for what they parse to, so no schema-level metadata and nothing else.
    """
    if header.payload != PAYLOAD:
        raise EncryptionContextMismatch(f"sealed file holds a {header.payload!r} payload, not a dataset")
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(header.schema))
        canonical = schema_bytes(schema)
    except (pa.ArrowException, ValueError, OSError) as err:
        raise MalformedHeader(f"header schema is not an Arrow schema: {_first_line(err)}") from None
    if canonical != header.schema:
        raise MalformedHeader("header schema is not in the canonical form schema_bytes gives")
    return schema


def verify_records(header: SealedHeader, schema: pa.Schema, count: int) -> None:
    """Raise EncryptionContextMismatch unless count and schema match the header."""
    if count != header.record_count:
        raise EncryptionContextMismatch(
            f"payload holds {count} records, encryption context says {header.record_count}"
        )
    actual = schema_sha256(schema)
    if actual != header.schema_sha256:
        raise EncryptionContextMismatch(
            f"payload schema hash {actual[:16]}... differs from the encryption context"
        )


class _ChunkFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks; read(n) is exact except at EOF."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._it = iter(chunks)
        self._cur = memoryview(b"")
        self._pos = 0
        self._eof = False
        # Errors raised by the chunk iterator while Arrow is reading are kept
        # here so the caller sees the original typed error.
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _fill(self) -> bool:
        while not self._cur:
            if self._eof:
                return False
            try:
                nxt = next(self._it)
            except StopIteration:
                self._eof = True
                return False
            except BaseException as err:
                self.error = err
                raise
            self._cur = memoryview(nxt).cast("B")
        return True

    def read(self, size: int | None = -1) -> bytes:
        parts: list[bytes] = []
        want = -1 if size is None or size < 0 else size
        got = 0
        while want < 0 or got < want:
            if not self._fill():
                break
            take = len(self._cur) if want < 0 else min(len(self._cur), want - got)
            parts.append(self._cur[:take].tobytes())
            self._cur = self._cur[take:]
            got += take
        self._pos += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # io passes memoryviews only
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> int:
        """Consume the rest of the chunks (running the final-chunk checks); return bytes left."""
        left = 0
        while self._fill():
            left += len(self._cur)
            self._cur = memoryview(b"")
        return left


def iter_record_batches(plaintext_chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
    """Decode the Arrow IPC stream carried by verified plaintext chunks.

    The chunk iterator is always run to completion, so truncation or trailing
    data in the sealed file raise here even after the Arrow end-of-stream.
    """
    source = _ChunkFile(plaintext_chunks)
    try:
        reader = _open_stream(source)
        yield from _read_batches(source, reader)
        _finish(source)
    finally:
        source.close()


def read_table(plaintext_chunks: Iterable[bytes]) -> pa.Table:
    """The whole payload as one table (with its schema even when it has no batches)."""
    source = _ChunkFile(plaintext_chunks)
    try:
        reader = _open_stream(source)
        batches = list(_read_batches(source, reader))
        _finish(source)
        return pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        source.close()


def _open_stream(source: _ChunkFile) -> pa.ipc.RecordBatchStreamReader:
    try:
        return pa.ipc.open_stream(source)
    except (pa.ArrowException, ValueError, OSError) as err:
        _reraise(source, err)
        raise  # unreachable: _reraise always raises


def _read_batches(source: _ChunkFile, reader: pa.ipc.RecordBatchStreamReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowException, ValueError, OSError) as err:
            _reraise(source, err)
        yield batch


def _finish(source: _ChunkFile) -> None:
    left = source.drain()
    if left:
        raise MalformedPayload(f"{left} bytes follow the Arrow end-of-stream marker")


def _reraise(source: _ChunkFile, err: BaseException) -> NoReturn:
    if isinstance(source.error, SealedDataError):
        raise source.error from None
    if source.error is not None:
        raise source.error
    raise MalformedPayload(f"payload is not a valid Arrow IPC stream: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
