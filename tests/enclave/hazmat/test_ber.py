from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import CmsError
from enclave.hazmat.ber import (
    CLASS_CONTEXT,
    CLASS_UNIVERSAL,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    Tlv,
    decode,
    integer_value,
    null_value,
    octet_string_bytes,
    oid_value,
)
from enclave.kms.errors import BerEncodingError, BerLimitError


# --- known answers -----------------------------------------------------------------
def test_definite_sequence_of_integer_and_octets() -> None:
    tlv = decode(bytes.fromhex("3007020105040268 69".replace(" ", "")))
    assert tlv.matches(CLASS_UNIVERSAL, TAG_SEQUENCE) and tlv.constructed and not tlv.indefinite
    assert integer_value(tlv.children[0]) == 5
    assert octet_string_bytes(tlv.children[1]) == b"hi"


def test_indefinite_sequence_with_eoc() -> None:
    tlv = decode(bytes.fromhex("30800201070000"))
    assert tlv.indefinite
    assert [integer_value(c) for c in tlv.children] == [7]


def test_nested_indefinite_and_context_tag() -> None:
    # [0] { SEQUENCE(indef) { NULL } } with both levels indefinite.
    tlv = decode(bytes.fromhex("a080308005000000" "0000"))
    inner = tlv.children[0]
    assert tlv.matches(CLASS_CONTEXT, 0) and inner.indefinite
    null_value(inner.children[0])


def test_constructed_octet_string_chunks_join() -> None:
    # X.690 8.7.3: constructed OCTET STRING of primitive segments, indefinite length.
    blob = bytes.fromhex("2480" "0402aabb" "0401cc" "0000")
    assert octet_string_bytes(decode(blob)) == b"\xaa\xbb\xcc"


def test_implicit_constructed_content_with_nested_segments() -> None:
    # [0] IMPLICIT OCTET STRING, constructed, one segment itself constructed.
    blob = bytes.fromhex("a080" "2406" "0401aa" "0401bb" "0401cc" "0000")
    assert octet_string_bytes(decode(blob)) == b"\xaa\xbb\xcc"


def test_segment_that_is_not_octet_string_rejected() -> None:
    with pytest.raises(BerEncodingError, match="segment"):
        octet_string_bytes(decode(bytes.fromhex("2480" "020101" "0000")))


def test_long_form_length() -> None:
    body = b"\x01" * 300
    tlv = decode(b"\x04\x82\x01\x2c" + body)
    assert tlv.content == body


def test_high_tag_number() -> None:
    tlv = decode(bytes.fromhex("9f2101ff"))  # [33] primitive
    assert tlv.matches(CLASS_CONTEXT, 33) and tlv.content == b"\xff"


def test_oid_and_integer_values() -> None:
    assert oid_value(decode(bytes.fromhex("06092a864886f70d010703"))) == "1.2.840.113549.1.7.3"
    assert oid_value(decode(bytes.fromhex("0609608648016503040201"))) == "2.16.840.1.101.3.4.2.1"
    assert integer_value(decode(bytes.fromhex("020200ff"))) == 255
    assert integer_value(decode(bytes.fromhex("0201ff"))) == -1


# --- rejections ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hex_blob", "message"),
    [
        ("", "truncated before its tag"),
        ("30", "truncated before its length"),
        ("3005020101", "runs past the end"),
        ("04800000", "indefinite length on a primitive"),
        ("3080020101", "no end-of-contents"),
        ("300400000000", "end-of-contents inside a definite"),
        ("0000", "starts with end-of-contents"),
        ("0001ff", "end-of-contents"),
        ("040100ff", "trailing bytes"),
        ("04ff", "reserved"),
        ("0482ff", "length field truncated"),
        ("1f0100", "high tag form used for a low tag number"),
        ("1f8001 00", "not minimally encoded"),
        ("1f81", "high tag number truncated"),
        ("2203020100", "must be primitive"),  # constructed INTEGER
        ("1000", "must be constructed"),  # primitive SEQUENCE
    ],
)
def test_malformed_encodings(hex_blob: str, message: str) -> None:
    with pytest.raises(BerEncodingError, match=message):
        decode(bytes.fromhex(hex_blob.replace(" ", "")))


def test_value_accessors_reject_bad_primitives() -> None:
    with pytest.raises(BerEncodingError, match="empty INTEGER"):
        integer_value(Tlv(CLASS_UNIVERSAL, False, 2, b""))
    with pytest.raises(BerEncodingError, match="minimally"):
        integer_value(Tlv(CLASS_UNIVERSAL, False, 2, b"\x00\x05"))
    with pytest.raises(BerEncodingError, match="truncated inside an arc"):
        oid_value(Tlv(CLASS_UNIVERSAL, False, 6, b"\x2a\x86"))
    with pytest.raises(BerEncodingError, match="not minimally"):
        oid_value(Tlv(CLASS_UNIVERSAL, False, 6, b"\x2a\x80\x01"))
    with pytest.raises(BerEncodingError, match="expected NULL"):
        null_value(Tlv(CLASS_UNIVERSAL, False, 5, b"\x00"))


def test_depth_limit() -> None:
    depth = 40
    blob = b"\x30\x80" * depth + b"\x00\x00" * depth
    with pytest.raises(BerLimitError, match="nesting"):
        decode(blob)
    # The same shape within the limit decodes.
    decode(b"\x30\x80" * 10 + b"\x00\x00" * 10)


def test_size_and_element_limits() -> None:
    with pytest.raises(BerLimitError, match="larger than"):
        decode(b"\x04\x01\x00", max_bytes=2)
    many = b"\x30\x80" + b"\x05\x00" * 100 + b"\x00\x00"
    with pytest.raises(BerLimitError, match="elements"):
        decode(many, max_elements=50)
    with pytest.raises(BerLimitError, match="longer than 4 octets"):
        decode(b"\x04\x85\x00\x00\x00\x00\x01\x00")


# --- properties --------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_cms_errors(blob: bytes) -> None:
    try:
        tlv = decode(blob)
    except CmsError:
        return
    assert isinstance(tlv, Tlv)


def _encode(tree: object, indefinite: bool) -> bytes:
    if isinstance(tree, bytes):
        return b"\x04" + _len(len(tree)) + tree
    body = b"".join(_encode(child, indefinite) for child in tree)  # type: ignore[union-attr]
    if indefinite:
        return b"\x30\x80" + body + b"\x00\x00"
    return b"\x30" + _len(len(body)) + body


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _shape(tlv: Tlv) -> object:
    if tlv.matches(CLASS_UNIVERSAL, TAG_OCTET_STRING):
        return octet_string_bytes(tlv)
    return [_shape(c) for c in tlv.children]


_trees = st.recursive(
    st.binary(max_size=140),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_trees, st.booleans())
def test_round_trip_definite_and_indefinite(tree: object, indefinite: bool) -> None:
    wrapped = [tree]  # the outer element is always a SEQUENCE
    assert _shape(decode(_encode(wrapped, indefinite))) == wrapped
