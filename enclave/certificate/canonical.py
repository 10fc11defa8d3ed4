"""Deterministic CBOR for certificate files: one byte string per value.

Canonical CBOR (RFC 7049 section 3.9, cbor2 `canonical=True`: shortest integer
and length heads, map keys sorted length-first then bytewise, no indefinite
lengths) with one deliberate exception: every float is written as float64.
cbor2's canonical mode would shrink 0.5 to a float16, which makes a value's
width depend on the value; a fixed width keeps the format trivially
re-implementable by auditors in other languages.

Decoding is strict: no tags, no duplicate keys, no indefinite lengths, bounded
depth, nothing trailing, and the bytes must re-encode to themselves so a body
has exactly one encoding (and so exactly one SHA-384).
"""
from __future__ import annotations

import io
import struct
from typing import Any

import cbor2

from enclave.certificate.errors import MalformedCertificate

# body -> datasets -> record -> encryption_context -> value is the deepest path.
MAX_DEPTH = 8


def _float64(encoder: cbor2.CBOREncoder, value: float) -> None:
    encoder.write(b"\xfb" + struct.pack(">d", value))


def _no_tags(tag: cbor2.CBORTag, immutable: bool) -> Any:
    del immutable
    raise ValueError(f"unexpected CBOR tag {tag.tag}")


def _no_semantic(value: Any, immutable: bool) -> Any:
    del value, immutable
    raise ValueError("semantic CBOR tags are not allowed")


# cbor2 turns these tags into plain Python values before tag_hook sees them.
_SEMANTIC = {tag: _no_semantic for tag in (0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 36, 37,
                                           100, 256, 258, 260, 261, 1004, 55799)}


def canonical_dumps(value: Any) -> bytes:
    """Canonical CBOR of `value` (dict/list/tuple/str/bytes/int/float/bool/None), floats as float64."""
    stream = io.BytesIO()
    encoder = cbor2.CBOREncoder(stream, canonical=True, encoders={float: _float64})
    encoder.encode(value)
    return stream.getvalue()


def strict_loads(data: bytes, *, what: str) -> Any:
    """Decode one canonical CBOR item filling `data`; MalformedCertificate otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedCertificate(f"{what} is not a byte string")
    data = bytes(data)
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=_no_tags,
        semantic_decoders=_SEMANTIC,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        item = decoder.decode()
    except Exception as err:  # noqa: BLE001 - every decoder failure is the same verdict
        raise MalformedCertificate(f"{what} is not valid CBOR ({type(err).__name__})") from None
    if stream.tell() != len(data):
        raise MalformedCertificate(f"{what} has {len(data) - stream.tell()} trailing bytes")
    try:
        again = canonical_dumps(item)
    except Exception as err:  # noqa: BLE001 - e.g. unhashable oddities cbor2 produced
        raise MalformedCertificate(f"{what} cannot be re-encoded ({type(err).__name__})") from None
    if again != data:
        raise MalformedCertificate(f"{what} is not in canonical CBOR form")
    return item
