"""Streaming seal/open of the chunked AES-256-GCM body of a sealed file.

Chunk i (0-based) is framed as u32 big-endian ciphertext length || ciphertext,
where ciphertext = AES-256-GCM(data_key, nonce_i, plaintext_i, aad_i) with its
16-byte tag appended, and

    nonce_i = i as 11-byte big-endian || final flag (0x00 or 0x01)
    aad_i   = b"hermetic-sealed-v1" || header_hash || i as u64 big-endian || final flag

The data key comes from one GenerateDataKey call per file, so index-derived
nonces never repeat under a key. Every chunk but the last carries exactly
chunk_size plaintext bytes; the last one carries the final flag and 1..chunk_size
bytes (0 only for an empty payload, which is a single empty final chunk).
Because the flag is inside the nonce and AAD, truncation at a chunk boundary
and extension after the final chunk are both detected.

Memory is constant: at most one ciphertext chunk, its plaintext and a 4-byte
look-ahead are held while reading; one chunk of buffer plus one input piece while writing.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Protocol

from enclave.hazmat.chunk_aead import TAG_SIZE, ChunkAead
from enclave.sealed.errors import (
    BadMagic,
    ChunkAuthenticationFailed,
    ChunkTooLarge,
    MalformedChunk,
    TrailingData,
    TruncatedSealedFile,
)
from enclave.sealed.format import (
    MAGIC,
    MAX_CHUNK_SIZE,
    PREFIX_SIZE,
    SealedHeader,
    check_header_length,
    check_magic_prefix,
    check_version,
    unpack_prefix,
)

_FRAME = struct.Struct(">I")
_MAX_INDEX = 2**64 - 1  # the AAD carries the index as u64


class ByteSource(Protocol):
    """Anything read from like a raw binary stream (files, sockets' readers, BytesIO)."""

    def read(self, n: int, /) -> bytes | None: ...


class ByteSink(Protocol):
    """Anything written to like a binary stream; it must consume its argument before returning."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


def _read_exact(stream: ByteSource, n: int) -> bytes:
    """Up to n bytes; fewer only at end of stream (raw streams may return short reads)."""
    data = stream.read(n)
    if data is None:
        raise TruncatedSealedFile("sealed stream returned no data (non-blocking source?)")
    if len(data) == n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_header(stream: ByteSource) -> SealedHeader:
    """Read and validate exactly the header; the stream is left at the first chunk."""
    prefix = _read_exact(stream, PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE:
        magic = prefix[: len(MAGIC)]
        if not magic:
            raise TruncatedSealedFile("sealed file is empty")
        check_magic_prefix(magic)
        raise TruncatedSealedFile(f"sealed file ends inside its fixed prefix ({len(prefix)} bytes)")
    magic, version, length = unpack_prefix(prefix)
    if magic != MAGIC:
        raise BadMagic("not a Hermetic sealed file (bad magic)")
    check_version(version)
    check_header_length(length)
    body = _read_exact(stream, length)
    if len(body) < length:
        raise TruncatedSealedFile(f"sealed file ends inside its header ({len(body)} of {length} bytes)")
    return SealedHeader.decode(prefix + body)


def _frame_length(raw: bytes, index: int, header: SealedHeader) -> int:
    (length,) = _FRAME.unpack(raw)
    if length > header.chunk_size + TAG_SIZE or length > MAX_CHUNK_SIZE + TAG_SIZE:
        raise ChunkTooLarge(
            f"chunk {index} declares {length} bytes, limit {header.chunk_size + TAG_SIZE}"
        )
    if length < TAG_SIZE:
        raise MalformedChunk(f"chunk {index} is {length} bytes, shorter than its tag")
    return int(length)


def iter_plaintext(stream: ByteSource, header: SealedHeader, data_key: bytes) -> Iterator[bytes]:
    """Yield each chunk's plaintext once its tag verifies.

    Raises (after the last good chunk) TruncatedSealedFile if the stream ends
    without a final chunk, TrailingData if bytes follow the final chunk, and
    ChunkAuthenticationFailed naming the index of the first chunk that fails.
    The consumer must treat what it received as provisional until the
    iterator is exhausted without error.
    """
    aead = ChunkAead(data_key, header.header_hash)
    chunk_size = header.chunk_size
    index = 0
    raw = _read_exact(stream, _FRAME.size)
    if not raw:
        raise TruncatedSealedFile("sealed file has no chunks")
    while True:
        if len(raw) < _FRAME.size:
            raise TruncatedSealedFile(f"sealed file ends inside the length of chunk {index}")
        length = _frame_length(raw, index, header)
        ct = _read_exact(stream, length)
        if len(ct) < length:
            raise TruncatedSealedFile(f"sealed file ends inside chunk {index} ({len(ct)} of {length} bytes)")
        # The next frame's length tells whether this chunk must be the final one.
        raw = _read_exact(stream, _FRAME.size)
        if not raw:
            plaintext = aead.open(index, True, ct)
            if plaintext is None:
                plaintext = aead.open(index, False, ct)
                if plaintext is None:
                    raise ChunkAuthenticationFailed(index)
                _check_middle_size(plaintext, index, chunk_size)
                yield plaintext
                raise TruncatedSealedFile(f"sealed file ends after chunk {index} without a final chunk")
            if not plaintext and index != 0:
                raise MalformedChunk(f"final chunk {index} is empty but is not the only chunk")
            yield plaintext
            return
        plaintext = aead.open(index, False, ct)
        if plaintext is None:
            if aead.open(index, True, ct) is not None:
                raise TrailingData(f"bytes follow the final chunk {index}")
            raise ChunkAuthenticationFailed(index)
        _check_middle_size(plaintext, index, chunk_size)
        del ct
        yield plaintext
        if index == _MAX_INDEX:
            raise MalformedChunk("sealed file has more chunks than the format allows")
        index += 1


def _check_middle_size(plaintext: bytes, index: int, chunk_size: int) -> None:
    if len(plaintext) != chunk_size:
        raise MalformedChunk(
            f"non-final chunk {index} holds {len(plaintext)} bytes, expected {chunk_size}"
        )


class SealWriter:
    """Writes the header, then re-chunks whatever is written into sealed chunks.

    `close()` writes the final chunk; without it the output has no final chunk
    and every reader rejects it as truncated. Used as a context manager it
    closes on success and only drops the key on error. Frames are written from
    one reused buffer, so `out.write` must consume its argument before
    returning (as files and BytesIO do).
    """

    def __init__(self, out: ByteSink, header: SealedHeader, data_key: bytes) -> None:
        self._aead: ChunkAead | None = ChunkAead(data_key, header.header_hash)
        self._out = out
        self._chunk_size = header.chunk_size
        self._buf = bytearray()
        self._frame = bytearray(_FRAME.size + header.chunk_size + TAG_SIZE)
        self._index = 0
        preamble = header.encode()
        out.write(preamble)
        self.plaintext_bytes = 0
        self.bytes_written = len(preamble)

    @property
    def closed(self) -> bool:
        return self._aead is None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._aead is None:
            raise ValueError("SealWriter is closed")
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.plaintext_bytes += n
        size = self._chunk_size
        # Always keep 1..chunk_size bytes back: only close() knows which chunk is final.
        if self._buf:
            need = size - len(self._buf)
            if n <= need:
                self._buf += view
                return n
            self._buf += view[:need]
            view = view[need:]
            with memoryview(self._buf) as full:
                self._emit(full, final=False)
            self._buf.clear()
        # Whole chunks of large writes are sealed straight from the caller's buffer.
        offset = 0
        while view.nbytes - offset > size:
            self._emit(view[offset : offset + size], final=False)
            offset += size
        self._buf += view[offset:]
        return n

    def close(self) -> None:
        if self._aead is None:
            return
        with memoryview(self._buf) as rest:
            self._emit(rest, final=True)
        self.abort()

    def abort(self) -> None:
        """Forget the key and buffered plaintext without writing a final chunk."""
        self._aead = None
        self._buf = bytearray()

    def _emit(self, plaintext: memoryview, *, final: bool) -> None:
        assert self._aead is not None
        if self._index > _MAX_INDEX:
            raise MalformedChunk("too many chunks for one sealed file")
        n = len(plaintext) + TAG_SIZE
        frame = memoryview(self._frame)
        _FRAME.pack_into(frame, 0, n)
        self._aead.seal_into(self._index, final, plaintext, frame[_FRAME.size : _FRAME.size + n])
        self._out.write(frame[: _FRAME.size + n])
        self.bytes_written += _FRAME.size + n
        self._index += 1

    def __enter__(self) -> SealWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def seal_stream(
    chunks: Iterable[bytes | bytearray | memoryview], header: SealedHeader, data_key: bytes, out: ByteSink
) -> int:
    """Seal `chunks` (any sizes) into `out` as a complete sealed file; returns bytes written."""
    with SealWriter(out, header, data_key) as writer:
        for piece in chunks:
            writer.write(piece)
    return writer.bytes_written
