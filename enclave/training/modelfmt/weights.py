"""Initial weights for a declarative model: a strict reader of the safetensors format.

A job that fine-tunes names a public weights file by its SHA-256 in the spec
(`model.weights_sha256`); the parent streams the file, the enclave checks its hash,
reads it here and loads it into the model it built. The `safetensors` package stays
outside the measured enclave (an import contract), so this module reads the format
itself, and the host's `hermetic job check` reads files with this same code.

The format: an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (and an
optional "__metadata__" object of strings), then the data buffer, which the tensors'
offsets (relative to its start) cover exactly, without holes or overlaps; values are
row-major, little-endian. Only floating dtypes are accepted (F32, F64, F16, BF16), and
all become float32, the trainer's type; a value that is not finite there is refused.

Nothing here runs code from the file: the JSON is plain data (duplicate keys refused),
values are read with `np.frombuffer` at explicit little-endian dtypes. Every failure
is one `MalformedWeights` with a one-line, bounded message; names quoted from the
file are public (the model owner chose the file) and cut short.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from enclave.training.modelfmt.errors import MalformedWeights, WeightsMismatch
from enclave.training.modelfmt.limits import (
    MAX_PARAMETERS,
    MAX_WEIGHTS_BYTES,
    MAX_WEIGHTS_HEADER_BYTES,
    MAX_WEIGHTS_NAME,
    MAX_WEIGHTS_RANK,
    MAX_WEIGHTS_TENSORS,
)

__all__ = ["DTYPES", "Weights", "check_weights", "load_weights", "open_weights", "read_weights", "shapes_of"]

#: dtype -> the little-endian numpy type its values are read as (BF16: the raw 16 bits).
DTYPES: Mapping[str, str] = MappingProxyType({"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2"})
_METADATA = "__metadata__"
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_SHOWN = 64

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Weights:
    """A weights file's tensors (float32, by name) and metadata, and the file's SHA-256 (hex)."""

    tensors: Mapping[str, torch.Tensor]
    metadata: Mapping[str, str]
    sha256: str

    def shapes(self) -> dict[str, Shape]:
        return {name: tuple(tensor.shape) for name, tensor in self.tensors.items()}


def open_weights(data: bytes, expected_sha256: str) -> Weights:
    """The weights the spec names by `expected_sha256`, read from `data`; refused unless the hash matches."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        # Fixed: the file is the model owner's choice, the spec binds it, nothing else to say.
        raise WeightsMismatch("the weights file does not hash to the spec's model.weights_sha256")
    return _read(data, digest)


def read_weights(data: bytes) -> Weights:
    """Parse a safetensors file strictly; MalformedWeights (one line) for anything off the format or its bounds."""
    return _read(data, hashlib.sha256(data).hexdigest())


def _read(data: bytes, digest: str) -> Weights:
    if len(data) > MAX_WEIGHTS_BYTES:
        raise MalformedWeights(f"the weights file exceeds {MAX_WEIGHTS_BYTES} bytes")
    if len(data) < 8:
        raise MalformedWeights("the weights file is shorter than its 8-byte header length")
    length = int.from_bytes(data[:8], "little")
    if length > MAX_WEIGHTS_HEADER_BYTES:
        raise MalformedWeights(f"the weights file's header of {length} bytes exceeds {MAX_WEIGHTS_HEADER_BYTES}")
    if 8 + length > len(data):
        raise MalformedWeights(f"the weights file's header of {length} bytes runs past the end of the file")
    header = _header(data[8 : 8 + length])
    buffer = memoryview(data)[8 + length :]
    metadata = _metadata(header.pop(_METADATA, {}))
    if len(header) > MAX_WEIGHTS_TENSORS:
        raise MalformedWeights(f"the weights file holds {len(header)} tensors, more than {MAX_WEIGHTS_TENSORS}")
    entries = {name: _entry(name, raw) for name, raw in header.items()}
    _check_parameters(entries)
    _check_coverage(entries, len(buffer))
    tensors = {name: _tensor(name, entry, buffer) for name, entry in sorted(entries.items())}
    return Weights(MappingProxyType(tensors), MappingProxyType(metadata), digest)


def shapes_of(model: nn.Module) -> dict[str, Shape]:
    """The shape of every tensor of the model's state_dict, by name: what a weights file must hold."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_weights(expected: Mapping[str, Shape], weights: Weights) -> None:
    """Refuse, naming the first mismatch, unless `weights` holds exactly the tensors `expected` names, shaped so."""
    for name, shape in expected.items():
        given = weights.tensors.get(name)
        if given is None:
            raise WeightsMismatch(f"the weights file lacks tensor {_shown(name)} (the model's is {_shape(shape)})")
        if tuple(given.shape) != tuple(shape):
            raise WeightsMismatch(f"tensor {_shown(name)} is {_shape(tuple(given.shape))} in the weights file, "
                                  f"the model's is {_shape(shape)}")
    extra = next((name for name in weights.tensors if name not in expected), None)
    if extra is not None:
        raise WeightsMismatch(f"the weights file holds tensor {_shown(extra)}, which the model does not have")


def load_weights(model: nn.Module, weights: Weights) -> None:
    """Set every parameter of `model` from `weights` (strict: exactly its tensors, in its shapes)."""
    check_weights(shapes_of(model), weights)
    with torch.no_grad():
        model.load_state_dict(dict(weights.tensors), strict=True)


# ------------------------------------------------------------------ header


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: Shape
    begin: int
    end: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedWeights(f"the weights file's header has key {_shown(key)} twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise MalformedWeights(f"the weights file's header holds {name}, which is not JSON")


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise MalformedWeights("the weights file's header is not UTF-8") from None
    except (ValueError, RecursionError):
        # ValueError: not JSON (or an integer too long to parse); RecursionError: nested too deep.
        raise MalformedWeights("the weights file's header is not a JSON object") from None
    if not isinstance(header, dict):
        raise MalformedWeights("the weights file's header is not a JSON object")
    return header


def _metadata(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise MalformedWeights(f"the weights file's {_METADATA} is not an object of strings")
    return dict(raw)


def _entry(name: str, raw: object) -> _Entry:
    if not name or len(name) > MAX_WEIGHTS_NAME:
        raise MalformedWeights(f"the weights file names a tensor {_shown(name)}: names are 1..{MAX_WEIGHTS_NAME} "
                               "characters")
    where = f"tensor {_shown(name)} of the weights file"
    if not isinstance(raw, dict) or set(raw) != _ENTRY_KEYS:
        raise MalformedWeights(f"{where} is not an object of exactly dtype, shape and data_offsets")
    dtype = raw["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        shown = _shown(dtype) if isinstance(dtype, str) else type(dtype).__name__
        raise MalformedWeights(f"{where} has dtype {shown}; only {', '.join(DTYPES)} are accepted")
    shape = raw["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_WEIGHTS_RANK or not all(
        _integer(d) and 0 <= d <= MAX_PARAMETERS for d in shape
    ):
        raise MalformedWeights(f"{where} has a shape that is not a list of at most {MAX_WEIGHTS_RANK} "
                               f"integers in [0, {MAX_PARAMETERS}]")
    offsets = raw["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_integer(o) and o >= 0 for o in offsets):
        raise MalformedWeights(f"{where} has data_offsets that are not two non-negative integers")
    entry = _Entry(dtype, tuple(shape), offsets[0], offsets[1])
    size = entry.count * np.dtype(DTYPES[dtype]).itemsize
    if entry.end - entry.begin != size:
        raise MalformedWeights(f"{where} spans {entry.end - entry.begin} bytes; {_shape(entry.shape)} of {dtype} "
                               f"takes {size}")
    return entry


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_parameters(entries: Mapping[str, _Entry]) -> None:
    total = 0
    for entry in entries.values():
        total += entry.count
        if total > MAX_PARAMETERS:
            raise MalformedWeights(f"the weights file holds more than the limit of {MAX_PARAMETERS:,} values")


def _check_coverage(entries: Mapping[str, _Entry], size: int) -> None:
    # Sorted by where they start, each tensor must begin where the one before ends.
    covered = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end, item[0])):
        if entry.begin != covered:
            raise MalformedWeights(f"tensor {_shown(name)} of the weights file starts at byte {entry.begin} of "
                                   f"the data, expected {covered}: tensors must cover it without holes or overlaps")
        covered = entry.end
    if covered != size:
        raise MalformedWeights(f"the weights file's data holds {size} bytes, its tensors cover {covered}")


def _tensor(name: str, entry: _Entry, buffer: memoryview) -> torch.Tensor:
    if entry.count == 0:
        return torch.zeros(entry.shape, dtype=torch.float32)
    raw = np.frombuffer(buffer, dtype=DTYPES[entry.dtype], count=entry.count, offset=entry.begin)
    if entry.dtype == "BF16":
        # bfloat16 is the top half of a float32: shift its bits into place.
        values = (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        with np.errstate(over="ignore"):
            values = raw.astype(np.float32)
    if not np.isfinite(values).all():
        raise MalformedWeights(f"tensor {_shown(name)} of the weights file holds a value that is not finite "
                               "as float32")
    return torch.from_numpy(values.reshape(entry.shape))


# ------------------------------------------------------------------ messages


def _shown(name: str) -> str:
    return repr(name[:_SHOWN] + "...") if len(name) > _SHOWN else repr(name)


def _shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
