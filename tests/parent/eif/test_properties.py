"""Property tests: whatever the bytes, the reader answers or raises an EifError."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import HermeticError
from parent.eif import read_eif_bytes
from parent.eif.errors import EifError
from parent.eif.writer import Signer, build_eif, recompute_crc
from tests.parent.eif.helpers import self_signed

PEM, KEY = self_signed()
BASE = build_eif(b"kernel" * 8, b"console=ttyS0", [b"boot" * 4, b"app" * 4], signer=Signer(PEM, KEY))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def attempt(data: bytes) -> None:
    try:
        read_eif_bytes(data)
    except EifError as err:
        assert isinstance(err, HermeticError)
        assert "\n" not in str(err)


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    attempt(data)


@SETTINGS
@given(st.binary(max_size=1200))
def test_random_bytes_behind_a_valid_magic(data: bytes) -> None:
    attempt(b".eif" + data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.booleans())
def test_byte_mutations(edits: list[tuple[int, int]], fix_crc: bool) -> None:
    data = bytearray(BASE)
    for index, value in edits:
        data[index] = value
    # Recomputing the CRC lets mutations reach the table, section and signature checks.
    attempt(recompute_crc(bytes(data)) if fix_crc else bytes(data))


@SETTINGS
@given(st.integers(0, 31), st.integers(0, 2**64 - 1), st.booleans())
def test_table_mutations(index: int, value: int, size_field: bool) -> None:
    data = bytearray(BASE)
    struct.pack_into(">Q", data, 28 + (256 if size_field else 0) + 8 * index, value)
    attempt(recompute_crc(bytes(data)))


@SETTINGS
@given(st.integers(0, len(BASE)), st.binary(min_size=1, max_size=64))
def test_insertions_and_truncations(at: int, extra: bytes) -> None:
    attempt(recompute_crc(BASE[:at] + extra + BASE[at:]) if at >= 548 else BASE[:at] + extra)
    attempt(BASE[:at])
