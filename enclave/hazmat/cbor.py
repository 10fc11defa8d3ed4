"""The one strict CBOR decoder, and the two canonical encoders it checks against.

Every CBOR input the enclave reads (NSM responses, attestation documents, COSE
headers, sealed-file headers, transport messages, certificate files) goes through
`strict_loads`, under one policy:

* exactly one item fills the input: no trailing bytes;
* no duplicate map keys, depth at most `max_depth`, size at most `max_size`;
* no tags but the ones the caller names (returned as `cbor2.CBORTag`); in particular
  none of the semantic tags cbor2 would silently turn into Python values (bignums,
  dates, embedded CBOR, self-describe...);
* with `canonical=` an encoder, no indefinite lengths and the bytes must re-encode to
  themselves, so the input has exactly one encoding (and so exactly one hash).

Any decoder failure becomes the caller's error type with a one-line message: hostile
input makes cbor2 raise a dozen exception types, all of which mean "malformed" here.

Encoders: `dumps` is RFC 8949 core deterministic encoding (cbor2 `canonical=True`:
shortest heads, length-first sorted keys, floats in their shortest exact width);
`dumps_f64` is the same with every float written as float64, so a value's width never
depends on the value (certificate files).
"""
from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import cbor2

from enclave.errors import HermeticError

__all__ = ["DEFAULT_MAX_DEPTH", "Encoder", "dumps", "dumps_f64", "strict_loads"]

DEFAULT_MAX_DEPTH = 16

Encoder = Callable[[Any], bytes]

# cbor2 turns these tags into plain Python values before a tag hook sees them.
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261,
                  1004, 55799)


class _RefusedTag(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


def _refused_tag(err: BaseException) -> int | None:
    """The tag a hook refused, however deep cbor2 wrapped that refusal."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, _RefusedTag):
            return seen.tag
        seen = seen.__cause__ or seen.__context__
    return None


def _no_semantic(value: Any, immutable: bool) -> Any:
    del value, immutable
    raise ValueError("semantic CBOR tags are not allowed")


_REFUSE_SEMANTIC = {tag: _no_semantic for tag in _SEMANTIC_TAGS}


def _float64(encoder: cbor2.CBOREncoder, value: float) -> None:
    encoder.write(b"\xfb" + struct.pack(">d", value))


def dumps(value: Any) -> bytes:
    """Deterministic CBOR of `value` (cbor2 canonical mode)."""
    return cbor2.dumps(value, canonical=True)


def dumps_f64(value: Any) -> bytes:
    """Deterministic CBOR of `value` with every float as float64."""
    stream = io.BytesIO()
    cbor2.CBOREncoder(stream, canonical=True, encoders={float: _float64}).encode(value)
    return stream.getvalue()


def strict_loads(
    data: bytes | bytearray | memoryview,
    *,
    what: str,
    error: type[HermeticError],
    canonical: Encoder | None = None,
    tags: frozenset[int] = frozenset(),
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int | None = None,
) -> Any:
    """Decode the one CBOR item filling `data` under the policy in the module docstring."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{what} is not a byte string")
    raw = bytes(data)
    if max_size is not None and len(raw) > max_size:
        raise error(f"{what} is {len(raw)} bytes, more than {max_size}")

    def tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
        del immutable
        if tag.tag not in tags:
            raise _RefusedTag(tag.tag)
        return tag

    stream = io.BytesIO(raw)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=tag_hook,
        semantic_decoders=_REFUSE_SEMANTIC,
        max_depth=max_depth,
        allow_indefinite=canonical is None,
        allow_duplicate_keys=False,
    )
    try:
        item = decoder.decode()
    except Exception as err:  # noqa: BLE001 - every decoder failure is the same verdict
        refused = _refused_tag(err)
        if refused is not None:
            raise error(f"{what} has CBOR tag {refused}, which is not allowed here") from None
        raise error(f"{what} is not valid CBOR ({type(err).__name__})") from None
    if stream.tell() != len(raw):
        raise error(f"{what} has {len(raw) - stream.tell()} trailing bytes")
    if canonical is not None:
        try:
            again = canonical(item)
        except Exception as err:  # noqa: BLE001 - e.g. unhashable oddities cbor2 produced
            raise error(f"{what} cannot be re-encoded ({type(err).__name__})") from None
        if again != raw:
            raise error(f"{what} is not in canonical CBOR form")
    return item
