from __future__ import annotations

import io
import struct
from itertools import pairwise

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import SealedDataError
from enclave.sealed.errors import (
    ChunkAuthenticationFailed,
    ChunkTooLarge,
    InvalidDataKey,
    MalformedChunk,
    TrailingData,
    TruncatedSealedFile,
)
from enclave.sealed.stream import SealWriter, iter_plaintext, read_header, seal_stream

from .conftest import KEY, make_header, seal_bytes
from .test_format import KAT_HEADER_HASH, KAT_PREAMBLE

PAYLOAD = b"hermetic known answer"  # 21 bytes: one full 16-byte chunk + a 5-byte final chunk
KAT_CHUNKS = bytes.fromhex(
    "0000002066d9c7b3d058eade28c3c75a6f42b1f86e0be726a6533c5d9e0ae65dec3d632d"
    "00000015067ef713b8ccdc12706566a6880d3430fe48724be0"
)


def open_all(data: bytes, key: bytes = KEY) -> list[bytes]:
    stream = io.BytesIO(data)
    header = read_header(stream)
    return list(iter_plaintext(stream, header, key))


def collect_until_error(data: bytes, key: bytes = KEY) -> tuple[list[bytes], BaseException | None]:
    stream = io.BytesIO(data)
    header = read_header(stream)
    got: list[bytes] = []
    try:
        for chunk in iter_plaintext(stream, header, key):
            got.append(chunk)
    except SealedDataError as err:
        return got, err
    return got, None


def split_frames(data: bytes) -> tuple[bytes, list[bytes]]:
    pos = len(KAT_PREAMBLE)
    frames = []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos : pos + 4 + n])
        pos += 4 + n
    return data[: len(KAT_PREAMBLE)], frames


def test_known_answer_chunks() -> None:
    assert seal_bytes(PAYLOAD) == KAT_PREAMBLE + KAT_CHUNKS


def test_known_answer_decrypts_per_spec_without_the_module() -> None:
    # Nonce and AAD built straight from the format description.
    aead = AESGCM(KEY)
    hh = bytes.fromhex(KAT_HEADER_HASH)
    n0 = struct.unpack_from(">I", KAT_CHUNKS)[0]
    ct0 = KAT_CHUNKS[4 : 4 + n0]
    ct1 = KAT_CHUNKS[8 + n0 :]
    assert struct.unpack_from(">I", KAT_CHUNKS, 4 + n0)[0] == len(ct1)
    pt0 = aead.decrypt((0).to_bytes(11, "big") + b"\x00", ct0, b"hermetic-sealed-v1" + hh + (0).to_bytes(8, "big") + b"\x00")
    pt1 = aead.decrypt((1).to_bytes(11, "big") + b"\x01", ct1, b"hermetic-sealed-v1" + hh + (1).to_bytes(8, "big") + b"\x01")
    assert pt0 + pt1 == PAYLOAD and len(pt0) == 16


def test_round_trip() -> None:
    assert open_all(seal_bytes(PAYLOAD)) == [PAYLOAD[:16], PAYLOAD[16:]]


def test_empty_payload_is_one_empty_final_chunk() -> None:
    data = seal_bytes(b"")
    assert len(data) == len(KAT_PREAMBLE) + 4 + 16
    assert open_all(data) == [b""]


def test_exact_multiple_has_no_empty_trailing_chunk() -> None:
    data = seal_bytes(b"x" * 48)
    _, frames = split_frames(data)
    assert len(frames) == 3
    assert open_all(data) == [b"x" * 16] * 3


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=300),
    chunk_size=st.integers(min_value=16, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_round_trip_any_write_pattern(payload: bytes, chunk_size: int, cuts: list[int]) -> None:
    header = make_header(chunk_size=chunk_size)
    bounds = sorted({0, len(payload), *(c for c in cuts if c <= len(payload))})
    pieces = [payload[a:b] for a, b in pairwise(bounds)]
    out = io.BytesIO()
    seal_stream(pieces, header, KEY, out)
    chunks = open_all(out.getvalue())
    assert b"".join(chunks) == payload
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert (0 < len(chunks[-1]) <= chunk_size) or (payload == b"" and chunks == [b""])


def test_wrong_key_fails_first_chunk() -> None:
    with pytest.raises(ChunkAuthenticationFailed) as info:
        open_all(seal_bytes(PAYLOAD), key=bytes(32))
    assert info.value.index == 0


def test_bad_key_length() -> None:
    with pytest.raises(InvalidDataKey):
        open_all(seal_bytes(PAYLOAD), key=b"short")
    with pytest.raises(InvalidDataKey):
        SealWriter(io.BytesIO(), make_header(), b"\0" * 16)


def test_bit_flip_names_chunk_and_yields_only_verified_chunks() -> None:
    data = bytearray(seal_bytes(b"a" * 16 + b"b" * 16 + b"c" * 16 + b"d" * 5))
    preamble, frames = split_frames(bytes(data))
    offset = len(preamble) + len(frames[0]) + len(frames[1]) + 10  # inside chunk 2's ciphertext
    data[offset] ^= 0x01
    got, err = collect_until_error(bytes(data))
    assert got == [b"a" * 16, b"b" * 16]
    assert isinstance(err, ChunkAuthenticationFailed) and err.index == 2
    assert "chunk 2" in str(err)


def test_header_change_breaks_chunk_zero() -> None:
    other = seal_bytes(PAYLOAD, header=make_header(owner="Mallory"))
    _, frames = split_frames(seal_bytes(PAYLOAD))
    other_preamble = other[: len(other) - sum(map(len, split_frames(other)[1]))]
    got, err = collect_until_error(other_preamble + b"".join(frames))
    assert got == [] and isinstance(err, ChunkAuthenticationFailed) and err.index == 0


def test_reordering_fails_at_the_moved_index() -> None:
    preamble, frames = split_frames(seal_bytes(b"a" * 16 + b"b" * 16 + b"c" * 16 + b"d"))
    swapped = preamble + frames[0] + frames[2] + frames[1] + frames[3]
    got, err = collect_until_error(swapped)
    assert got == [b"a" * 16]
    assert isinstance(err, ChunkAuthenticationFailed) and err.index == 1


def test_truncation_at_chunk_boundary() -> None:
    preamble, frames = split_frames(seal_bytes(b"a" * 16 + b"b" * 16 + b"c"))
    got, err = collect_until_error(preamble + frames[0] + frames[1])
    assert got == [b"a" * 16, b"b" * 16]  # every verified chunk, then the error
    assert isinstance(err, TruncatedSealedFile) and "final" in str(err)


@pytest.mark.parametrize("cut", [1, 3, 5, 20])
def test_truncation_inside_a_frame(cut: int) -> None:
    data = seal_bytes(b"a" * 16 + b"b" * 16 + b"c")
    _, err = collect_until_error(data[:-cut])
    assert isinstance(err, TruncatedSealedFile)


def test_no_chunks_at_all() -> None:
    with pytest.raises(TruncatedSealedFile, match="no chunks"):
        open_all(KAT_PREAMBLE)


def test_extension_after_final_chunk() -> None:
    data = seal_bytes(b"a" * 16 + b"b")
    _, frames = split_frames(data)
    got, err = collect_until_error(data + frames[0])
    assert got == [b"a" * 16] and isinstance(err, TrailingData)
    got, err = collect_until_error(data + b"\x00")
    assert isinstance(err, TrailingData)


def test_chunk_length_over_limit() -> None:
    data = bytearray(seal_bytes(PAYLOAD))
    pos = len(KAT_PREAMBLE)
    struct.pack_into(">I", data, pos, 16 + 16 + 1)
    with pytest.raises(ChunkTooLarge):
        open_all(bytes(data))
    struct.pack_into(">I", data, pos, 2**32 - 1)
    with pytest.raises(ChunkTooLarge):
        open_all(bytes(data))


def test_chunk_shorter_than_tag() -> None:
    data = bytearray(seal_bytes(PAYLOAD))
    struct.pack_into(">I", data, len(KAT_PREAMBLE), 15)
    with pytest.raises(MalformedChunk):
        open_all(bytes(data))


def test_authentic_but_short_middle_chunk_rejected() -> None:
    # Built with the real key (as a buggy writer would): non-final chunks must be full.
    header = make_header()
    aead = AESGCM(KEY)
    hh = header.header_hash
    ct0 = aead.encrypt((0).to_bytes(11, "big") + b"\0", b"short", b"hermetic-sealed-v1" + hh + bytes(8) + b"\0")
    ct1 = aead.encrypt((1).to_bytes(11, "big") + b"\1", b"end", b"hermetic-sealed-v1" + hh + (1).to_bytes(8, "big") + b"\1")
    data = header.encode() + struct.pack(">I", len(ct0)) + ct0 + struct.pack(">I", len(ct1)) + ct1
    with pytest.raises(MalformedChunk):
        open_all(data)


def test_aborted_writer_leaves_unreadable_output() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with SealWriter(out, make_header(), KEY) as writer:
            writer.write(b"x" * 40)
            raise RuntimeError("input failed")
    assert writer.closed
    with pytest.raises(ValueError):
        writer.write(b"more")
    _, err = collect_until_error(out.getvalue())
    assert isinstance(err, TruncatedSealedFile)


class CountingReader(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._inner.readinto(b)
        self.consumed += n
        return n


def test_reads_lazily_with_bounded_lookahead() -> None:
    header = make_header(chunk_size=1024)
    data = seal_bytes(b"z" * 1024 * 20, header=header)
    src = CountingReader(data)
    h = read_header(src)  # type: ignore[arg-type]
    it = iter_plaintext(src, h, KEY)  # type: ignore[arg-type]
    next(it)
    # One frame plus the next frame's 4-byte length: nothing more is buffered.
    assert src.consumed == len(header.encode()) + 4 + 1024 + 16 + 4
    assert sum(len(c) for c in it) == 1024 * 19


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(min_value=0), xor=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_is_detected(pos: int, xor: int) -> None:
    data = bytearray(seal_bytes(b"p" * 40))
    data[pos % len(data)] ^= xor
    with pytest.raises(SealedDataError):
        open_all(bytes(data))
