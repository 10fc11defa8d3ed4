"""A minimal, strict BER/DER reader (X.690) for the CMS blobs KMS returns.

KMS answers `CiphertextForRecipient` in BER with indefinite lengths and chunked
(constructed) OCTET STRINGs, so a DER-only parser will not do. This reader accepts
exactly what X.690 BER allows for the types CMS uses and nothing more: definite
and indefinite lengths (indefinite only on constructed encodings), constructed
OCTET STRINGs whose segments are OCTET STRINGs, high tag numbers in minimal form.
It enforces limits on input size, nesting depth and element count, and every
failure is a CmsError subclass (BerEncodingError / BerLimitError) -- no other
exception escapes for any input.
"""
from __future__ import annotations

from dataclasses import dataclass

from enclave.kms.errors import BerEncodingError, BerLimitError

MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_ELEMENTS = 65_536

CLASS_UNIVERSAL = 0
CLASS_APPLICATION = 1
CLASS_CONTEXT = 2
CLASS_PRIVATE = 3

TAG_BOOLEAN = 1
TAG_INTEGER = 2
TAG_BIT_STRING = 3
TAG_OCTET_STRING = 4
TAG_NULL = 5
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17

# X.690 8.x: these universal types have only one permitted form.
_MUST_BE_PRIMITIVE = frozenset({TAG_BOOLEAN, TAG_INTEGER, TAG_NULL, TAG_OID})
_MUST_BE_CONSTRUCTED = frozenset({TAG_SEQUENCE, TAG_SET})
_CLASS_NAMES = ("universal", "application", "context", "private")


@dataclass(frozen=True, slots=True)
class Tlv:
    """One decoded element. `content` is set for primitive, `children` for constructed."""

    tag_class: int
    constructed: bool
    number: int
    content: bytes = b""
    children: tuple[Tlv, ...] = ()
    indefinite: bool = False

    def matches(self, tag_class: int, number: int) -> bool:
        return self.tag_class == tag_class and self.number == number

    def describe(self) -> str:
        form = "constructed" if self.constructed else "primitive"
        if self.tag_class == CLASS_CONTEXT:
            return f"[{self.number}] {form}"
        return f"{_CLASS_NAMES[self.tag_class]} tag {self.number} {form}"


@dataclass(frozen=True, slots=True)
class _Eoc:
    """End-of-contents marker (00 00) terminating an indefinite-length element."""


_EOC = _Eoc()


class _Reader:
    def __init__(self, data: bytes, max_depth: int, max_elements: int) -> None:
        self._data = data
        self._max_depth = max_depth
        self._max_elements = max_elements
        self._elements = 0

    def element(self, pos: int, limit: int, depth: int) -> tuple[Tlv | _Eoc, int]:
        if depth > self._max_depth:
            raise BerLimitError(f"BER nesting deeper than {self._max_depth} levels")
        self._elements += 1
        if self._elements > self._max_elements:
            raise BerLimitError(f"BER input has more than {self._max_elements} elements")
        data = self._data
        if pos >= limit:
            raise BerEncodingError("BER element truncated before its tag")
        first = data[pos]
        pos += 1
        tag_class = first >> 6
        constructed = bool(first & 0x20)
        number = first & 0x1F
        if number == 0x1F:
            number, pos = self._high_tag(pos, limit)
        length, pos = self._length(pos, limit)
        if tag_class == CLASS_UNIVERSAL and number == 0:
            if first != 0 or length != 0:
                raise BerEncodingError("malformed BER end-of-contents marker")
            return _EOC, pos
        if tag_class == CLASS_UNIVERSAL:
            if constructed and number in _MUST_BE_PRIMITIVE:
                raise BerEncodingError(f"BER universal tag {number} must be primitive")
            if not constructed and number in _MUST_BE_CONSTRUCTED:
                raise BerEncodingError(f"BER universal tag {number} must be constructed")
        if length is None:
            if not constructed:
                raise BerEncodingError("indefinite length on a primitive BER element")
            children, pos = self._children_until_eoc(pos, limit, depth)
            return Tlv(tag_class, True, number, children=children, indefinite=True), pos
        end = pos + length
        if end > limit:
            raise BerEncodingError("BER element length runs past the end of its container")
        if not constructed:
            return Tlv(tag_class, False, number, content=bytes(data[pos:end])), end
        children_list: list[Tlv] = []
        while pos < end:
            child, pos = self.element(pos, end, depth + 1)
            if isinstance(child, _Eoc):
                raise BerEncodingError("end-of-contents inside a definite-length BER element")
            children_list.append(child)
        return Tlv(tag_class, True, number, children=tuple(children_list)), end

    def _children_until_eoc(self, pos: int, limit: int, depth: int) -> tuple[tuple[Tlv, ...], int]:
        children: list[Tlv] = []
        while True:
            if pos >= limit:
                raise BerEncodingError("indefinite-length BER element has no end-of-contents")
            child, pos = self.element(pos, limit, depth + 1)
            if isinstance(child, _Eoc):
                return tuple(children), pos
            children.append(child)

    def _high_tag(self, pos: int, limit: int) -> tuple[int, int]:
        data = self._data
        number = 0
        for count in range(4):
            if pos >= limit:
                raise BerEncodingError("BER high tag number truncated")
            byte = data[pos]
            pos += 1
            if count == 0 and byte == 0x80:
                raise BerEncodingError("BER high tag number not minimally encoded")
            number = (number << 7) | (byte & 0x7F)
            if not byte & 0x80:
                if number < 0x1F:
                    raise BerEncodingError("BER high tag form used for a low tag number")
                return number, pos
        raise BerLimitError("BER tag number too large")

    def _length(self, pos: int, limit: int) -> tuple[int | None, int]:
        data = self._data
        if pos >= limit:
            raise BerEncodingError("BER element truncated before its length")
        first = data[pos]
        pos += 1
        if first < 0x80:
            return first, pos
        if first == 0x80:
            return None, pos
        if first == 0xFF:
            raise BerEncodingError("reserved BER length octet 0xFF")
        count = first & 0x7F
        if count > 4:
            raise BerLimitError("BER length field longer than 4 octets")
        if pos + count > limit:
            raise BerEncodingError("BER length field truncated")
        return int.from_bytes(data[pos : pos + count], "big"), pos + count


def decode(
    data: bytes,
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> Tlv:
    """Decode exactly one BER element spanning all of `data`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BerEncodingError("BER input must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise BerLimitError(f"BER input larger than {max_bytes} bytes")
    reader = _Reader(data, max_depth, max_elements)
    try:
        tlv, end = reader.element(0, len(data), 0)
    except RecursionError as exc:  # only reachable with an absurd max_depth
        raise BerLimitError("BER nesting too deep") from exc
    if isinstance(tlv, _Eoc):
        raise BerEncodingError("BER input starts with end-of-contents")
    if end != len(data):
        raise BerEncodingError("trailing bytes after the BER element")
    return tlv


def octet_string_bytes(tlv: Tlv) -> bytes:
    """The value of an OCTET STRING (possibly implicitly tagged), joining BER segments.

    X.690 8.7.3: a constructed OCTET STRING's segments are themselves universal
    OCTET STRINGs (primitive or constructed), whatever the outer tag is.
    """
    if not tlv.constructed:
        return tlv.content
    parts: list[bytes] = []
    for child in tlv.children:
        if not child.matches(CLASS_UNIVERSAL, TAG_OCTET_STRING):
            raise BerEncodingError(f"constructed OCTET STRING segment is {child.describe()}")
        parts.append(octet_string_bytes(child))
    return b"".join(parts)


def integer_value(tlv: Tlv) -> int:
    """A universal INTEGER, rejecting empty and non-minimal encodings."""
    if not tlv.matches(CLASS_UNIVERSAL, TAG_INTEGER) or tlv.constructed:
        raise BerEncodingError(f"expected INTEGER, found {tlv.describe()}")
    raw = tlv.content
    if not raw:
        raise BerEncodingError("empty INTEGER encoding")
    if len(raw) > 1 and ((raw[0] == 0 and raw[1] < 0x80) or (raw[0] == 0xFF and raw[1] >= 0x80)):
        raise BerEncodingError("INTEGER not minimally encoded")
    if len(raw) > 64:
        raise BerLimitError("INTEGER longer than 64 octets")
    return int.from_bytes(raw, "big", signed=True)


def oid_value(tlv: Tlv) -> str:
    """A universal OBJECT IDENTIFIER as dotted text."""
    if not tlv.matches(CLASS_UNIVERSAL, TAG_OID) or tlv.constructed:
        raise BerEncodingError(f"expected OBJECT IDENTIFIER, found {tlv.describe()}")
    raw = tlv.content
    if not raw or len(raw) > 64:
        raise BerEncodingError("OBJECT IDENTIFIER has a bad length")
    if raw[-1] & 0x80:
        raise BerEncodingError("OBJECT IDENTIFIER truncated inside an arc")
    arcs: list[int] = []
    value = 0
    starting = True
    for byte in raw:
        if starting and byte == 0x80:
            raise BerEncodingError("OBJECT IDENTIFIER arc not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        starting = not byte & 0x80
        if starting:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


def null_value(tlv: Tlv) -> None:
    """A universal NULL (content must be empty)."""
    if not tlv.matches(CLASS_UNIVERSAL, TAG_NULL) or tlv.constructed or tlv.content:
        raise BerEncodingError(f"expected NULL, found {tlv.describe()}")
