"""The public schema of a sealed dataset: what each column holds, read from the header.

The data owner declares (or the sealer infers, where that reveals nothing private)
what every column is; the sealer checks every row against it before any key exists
and writes it into the Arrow field metadata of the header's schema. The header's
schema is hashed into the encryption context (`schema_sha256`), so this schema is
public, bound to the file, and holds for every record an authentic file carries:
a job can be checked against it without a key.

Encoding: every field of a dataset sealed with a public schema carries
`hermetic.kind`; the other keys a kind allows are listed in `_KEYS`. Values are
ASCII decimal integers, bounds in the form `format_bound` gives (`str(int)` for
integer columns, `repr(float)` for float columns), and string lists as compact JSON
(`json.dumps(..., ensure_ascii=False, separators=(",", ":"))`, UTF-8). Every field
is non-nullable: the sealer refuses missing values.

    kind         stored Arrow type                      keys
    numeric      any integer or float type             hermetic.lo, hermetic.hi (each optional)
    categorical  int32, index in [0, n)                hermetic.vocab (JSON list) or hermetic.buckets
    tensor       fixed_size_list<int|float>[prod]      shape (b"32x32x3", as enclave.sealed.records)
    sequence     fixed_size_list<int32>[max_len]       hermetic.vocab_size, hermetic.max_len, hermetic.pad_id
    label        any integer type, index in [0, K)     hermetic.num_classes, hermetic.classes (JSON list, optional)
    target       any integer or float type             hermetic.lo, hermetic.hi (each optional)

A categorical column with buckets holds `bucket_of(value, n)`: SHA-256 of the UTF-8
value, big-endian, mod n (keyed by nothing: anyone can map a value to its bucket).
A sequence is right-padded with `pad_id`, which the sealer refuses inside a row, so
a row's length is the position of its first pad. At most one column is the label
or target. The tensor shape key has no prefix because files sealed before the
public schema already carry it.

A header without any `hermetic.kind` (sealed before the public schema) is read by
the old rules: a `shape` makes a tensor, `hermetic.num_classes` a label, any other
integer or float column is numeric without bounds; other columns make it malformed.
A schema where only some fields carry a kind is malformed.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import pyarrow as pa

from enclave.errors import ConfigError
from enclave.sealed.errors import MalformedHeader
from enclave.sealed.format import SealedHeader
from enclave.sealed.records import (
    MAX_NUM_CLASSES,
    NUM_CLASSES_METADATA_KEY,
    SHAPE_METADATA_KEY,
    format_shape,
    header_schema,
)

KIND_KEY = b"hermetic.kind"
LO_KEY = b"hermetic.lo"
HI_KEY = b"hermetic.hi"
VOCAB_KEY = b"hermetic.vocab"
BUCKETS_KEY = b"hermetic.buckets"
VOCAB_SIZE_KEY = b"hermetic.vocab_size"
MAX_LEN_KEY = b"hermetic.max_len"
PAD_ID_KEY = b"hermetic.pad_id"
CLASSES_KEY = b"hermetic.classes"
PREFIX = b"hermetic."

Kind = Literal["numeric", "categorical", "tensor", "sequence", "label", "target"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical", "tensor", "sequence", "label", "target")

# Bounds that keep every count a small number an index type holds.
MAX_CATEGORIES = 1 << 24
MAX_VOCAB_SIZE = (1 << 31) - 1
MAX_SEQUENCE_LENGTH = 1 << 20

_KEYS: dict[str, frozenset[bytes]] = {
    "numeric": frozenset({KIND_KEY, LO_KEY, HI_KEY}),
    "categorical": frozenset({KIND_KEY, VOCAB_KEY, BUCKETS_KEY}),
    "tensor": frozenset({KIND_KEY, SHAPE_METADATA_KEY}),
    "sequence": frozenset({KIND_KEY, VOCAB_SIZE_KEY, MAX_LEN_KEY, PAD_ID_KEY}),
    "label": frozenset({KIND_KEY, NUM_CLASSES_METADATA_KEY, CLASSES_KEY}),
    "target": frozenset({KIND_KEY, LO_KEY, HI_KEY}),
}
_SHOWN = 60


class MalformedSchema(MalformedHeader):
    """The header's Arrow schema is not a well-formed public schema."""


class UnknownColumn(ConfigError):
    """A name that is not a column of the dataset's public schema."""


class WrongColumnKind(ConfigError):
    """A column of the public schema is not of the kind asked for."""


Bound: TypeAlias = int | float


def format_bound(value: Bound) -> bytes:
    """The canonical text of a bound: decimal for an integer, shortest round-trip repr for a float."""
    if isinstance(value, bool):
        raise TypeError("a bound is a number, not a bool")
    return (str(value) if isinstance(value, int) else repr(float(value))).encode("ascii")


def format_strings(values: tuple[str, ...]) -> bytes:
    """The canonical compact JSON of a list of strings (vocabularies, class names)."""
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def bucket_of(value: str, buckets: int) -> int:
    """The bucket of a categorical value: SHA-256 of its UTF-8 bytes, big-endian, mod `buckets`."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest, "big") % buckets


def _bounds_text(lo: Bound | None, hi: Bound | None) -> str:
    if lo is None and hi is None:
        return "unbounded"
    return f"in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def _bounds_metadata(lo: Bound | None, hi: Bound | None) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    if lo is not None:
        out[LO_KEY] = format_bound(lo)
    if hi is not None:
        out[HI_KEY] = format_bound(hi)
    return out


@dataclass(frozen=True)
class NumericColumn:
    """An integer or float feature; every value is finite and within the bounds given."""

    name: str
    dtype: str  # the Arrow type's name, e.g. "int64", "float"
    lo: Bound | None = None
    hi: Bound | None = None
    kind: Literal["numeric"] = "numeric"

    def metadata(self) -> dict[bytes, bytes]:
        return {KIND_KEY: b"numeric", **_bounds_metadata(self.lo, self.hi)}

    def describe(self) -> str:
        return f"numeric {self.dtype}, {_bounds_text(self.lo, self.hi)}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class CategoricalColumn:
    """A category index in [0, size): the position in `vocabulary`, or `bucket_of` the value."""

    name: str
    vocabulary: tuple[str, ...] | None = None
    buckets: int | None = None
    kind: Literal["categorical"] = "categorical"

    def __post_init__(self) -> None:
        if (self.vocabulary is None) == (self.buckets is None):
            raise ValueError("a categorical column has a vocabulary or a bucket count, not both")

    @property
    def size(self) -> int:
        return len(self.vocabulary) if self.vocabulary is not None else int(self.buckets or 0)

    def metadata(self) -> dict[bytes, bytes]:
        if self.vocabulary is not None:
            return {KIND_KEY: b"categorical", VOCAB_KEY: format_strings(self.vocabulary)}
        return {KIND_KEY: b"categorical", BUCKETS_KEY: str(self.buckets).encode("ascii")}

    def describe(self) -> str:
        if self.vocabulary is None:
            return f"categorical, {self.buckets} buckets (SHA-256 of the value mod {self.buckets})"
        shown = "|".join(self.vocabulary)
        shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."
        return f"categorical, {self.size} values: {shown}"

    def to_json(self) -> dict[str, Any]:
        vocab = list(self.vocabulary) if self.vocabulary is not None else None
        return {"name": self.name, "kind": self.kind, "vocabulary": vocab, "buckets": self.buckets,
                "size": self.size}


@dataclass(frozen=True)
class TensorColumn:
    """A fixed-shape array per record, stored flat (C order); float values are finite."""

    name: str
    dtype: str  # the element type's Arrow name, e.g. "uint8", "float"
    shape: tuple[int, ...]
    kind: Literal["tensor"] = "tensor"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def metadata(self) -> dict[bytes, bytes]:
        return {KIND_KEY: b"tensor", SHAPE_METADATA_KEY: format_shape(self.shape)}

    def describe(self) -> str:
        return f"tensor {self.dtype} {'x'.join(map(str, self.shape))}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class SequenceColumn:
    """Token ids in [0, vocab_size), at most max_len per record, right-padded with pad_id."""

    name: str
    vocab_size: int
    max_len: int
    pad_id: int = 0
    kind: Literal["sequence"] = "sequence"

    def metadata(self) -> dict[bytes, bytes]:
        return {
            KIND_KEY: b"sequence",
            VOCAB_SIZE_KEY: str(self.vocab_size).encode("ascii"),
            MAX_LEN_KEY: str(self.max_len).encode("ascii"),
            PAD_ID_KEY: str(self.pad_id).encode("ascii"),
        }

    def describe(self) -> str:
        return f"sequence of ids in [0, {self.vocab_size}), at most {self.max_len}, padded with {self.pad_id}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "vocab_size": self.vocab_size, "max_len": self.max_len,
                "pad_id": self.pad_id}


@dataclass(frozen=True)
class ClassLabel:
    """Class indices in [0, num_classes); `classes` names them in order when the owner declared names."""

    name: str
    num_classes: int
    classes: tuple[str, ...] | None = None
    kind: Literal["label"] = "label"

    def metadata(self) -> dict[bytes, bytes]:
        out = {KIND_KEY: b"label", NUM_CLASSES_METADATA_KEY: str(self.num_classes).encode("ascii")}
        if self.classes is not None:
            out[CLASSES_KEY] = format_strings(self.classes)
        return out

    def describe(self) -> str:
        if self.classes is None:
            return f"label, {self.num_classes} classes 0..{self.num_classes - 1}"
        shown = ",".join(self.classes)
        shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."
        return f"label, {self.num_classes} classes: {shown}"

    def to_json(self) -> dict[str, Any]:
        names = list(self.classes) if self.classes is not None else None
        return {"name": self.name, "kind": self.kind, "num_classes": self.num_classes, "classes": names}


@dataclass(frozen=True)
class RegressionTarget:
    """A numeric label to regress on; finite and within the bounds given."""

    name: str
    dtype: str
    lo: Bound | None = None
    hi: Bound | None = None
    kind: Literal["target"] = "target"

    def metadata(self) -> dict[bytes, bytes]:
        return {KIND_KEY: b"target", **_bounds_metadata(self.lo, self.hi)}

    def describe(self) -> str:
        return f"regression target {self.dtype}, {_bounds_text(self.lo, self.hi)}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "lo": self.lo, "hi": self.hi}


Column: TypeAlias = NumericColumn | CategoricalColumn | TensorColumn | SequenceColumn | ClassLabel | RegressionTarget
Label: TypeAlias = ClassLabel | RegressionTarget
C = TypeVar("C", NumericColumn, CategoricalColumn, TensorColumn, SequenceColumn, ClassLabel, RegressionTarget)


@dataclass(frozen=True)
class PublicSchema:
    """Every column of a sealed dataset, in the order of its Arrow schema."""

    columns: tuple[Column, ...]
    legacy: bool = False  # True: sealed before the public schema (no hermetic.kind), read by the old rules

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise MalformedSchema("the schema names a column twice")
        if sum(isinstance(c, (ClassLabel, RegressionTarget)) for c in self.columns) > 1:
            raise MalformedSchema("the schema has more than one label or target column")

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def get(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def column(self, name: str) -> Column:
        """The column called `name`; UnknownColumn if there is none."""
        found = self.get(name)
        if found is None:
            shown = ", ".join(repr(n) for n in self.names[:8]) + (" ..." if len(self) > 8 else "")
            raise UnknownColumn(f"column {name[:_SHOWN]!r} is not in the dataset (columns: {shown or 'none'})")
        return found

    def column_of(self, name: str, kind: type[C]) -> C:
        """The column called `name` if it is a `kind`; UnknownColumn or WrongColumnKind otherwise."""
        found = self.column(name)
        if not isinstance(found, kind):
            wanted = kind.__dataclass_fields__["kind"].default
            raise WrongColumnKind(f"column {name[:_SHOWN]!r} is {found.describe()}, not {wanted}")
        return found

    @property
    def label(self) -> Label | None:
        """The label (class or regression target) column, if the owner declared one."""
        return next((c for c in self.columns if isinstance(c, (ClassLabel, RegressionTarget))), None)

    @property
    def features(self) -> tuple[Column, ...]:
        """Every column but the label."""
        return tuple(c for c in self.columns if not isinstance(c, (ClassLabel, RegressionTarget)))

    @property
    def num_classes(self) -> int | None:
        """The label's class count; None without a class label (none, or a regression target)."""
        label = self.label
        return label.num_classes if isinstance(label, ClassLabel) else None

    @property
    def task(self) -> Literal["classification", "regression"] | None:
        label = self.label
        if label is None:
            return None
        return "classification" if isinstance(label, ClassLabel) else "regression"

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.columns]


def public_schema(header: SealedHeader) -> PublicSchema:
    """The public schema of a sealed dataset's header; MalformedHeader (MalformedSchema) if malformed."""
    return parse_schema(header_schema(header))


def parse_schema(schema: pa.Schema) -> PublicSchema:
    """The public schema an Arrow schema declares; MalformedSchema on anything malformed."""
    if not isinstance(schema, pa.Schema):
        raise MalformedSchema("not an Arrow schema")
    kinds = [KIND_KEY in (f.metadata or {}) for f in schema]
    if any(kinds) and not all(kinds):
        missing = next(f.name for f, has in zip(schema, kinds, strict=True) if not has)
        raise MalformedSchema(f"column {_name(missing)} declares no {KIND_KEY.decode()}, other columns do")
    if schema and all(kinds):
        return PublicSchema(tuple(_parse_field(f) for f in schema))
    return PublicSchema(tuple(_parse_legacy(f) for f in schema), legacy=True)


def _name(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[: _SHOWN - 3] + "...")


def _fail(field: pa.Field, problem: str) -> MalformedSchema:
    return MalformedSchema(f"column {_name(field.name)} {problem}")


def _text(field: pa.Field, key: bytes, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(field, f"has {key.decode()} that is not UTF-8") from None


def _count(field: pa.Field, meta: Mapping[bytes, bytes], key: bytes, lo: int, hi: int) -> int:
    raw = meta.get(key)
    if raw is None:
        raise _fail(field, f"has no {key.decode()}")
    text = raw.decode("ascii", errors="replace")
    if not (text.isascii() and text.isdigit()) or text != str(int(text)) or not lo <= int(text) <= hi:
        raise _fail(field, f"has a malformed {key.decode()} {raw[:20]!r} (an integer in [{lo}, {hi}])")
    return int(text)


def _strings(field: pa.Field, meta: Mapping[bytes, bytes], key: bytes, most: int) -> tuple[str, ...]:
    raw = meta[key]
    try:
        value = json.loads(_text(field, key, raw))
    except (ValueError, RecursionError):
        raise _fail(field, f"has {key.decode()} that is not JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(field, f"has {key.decode()} that is not a list of strings")
    strings = tuple(value)
    if not 1 <= len(strings) <= most:
        raise _fail(field, f"has {key.decode()} of {len(strings)} entries, not 1..{most}")
    if len(set(strings)) != len(strings):
        raise _fail(field, f"has {key.decode()} naming an entry twice")
    try:
        canonical = format_strings(strings)
    except UnicodeEncodeError:
        raise _fail(field, f"has {key.decode()} that is not valid Unicode") from None
    if canonical != raw:
        raise _fail(field, f"has {key.decode()} not in canonical JSON form")
    return strings


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _bound(field: pa.Field, meta: Mapping[bytes, bytes], key: bytes) -> Bound | None:
    raw = meta.get(key)
    if raw is None:
        return None
    text = raw.decode("ascii", errors="replace")
    bad = _fail(field, f"has a malformed {key.decode()} {raw[:20]!r}")
    if pa.types.is_integer(field.type):
        if not text.lstrip("-").isdigit() or not text.isascii() or text != str(int(text)):
            raise bad
        value: Bound = int(text)
        width = field.type.bit_width
        signed = pa.types.is_signed_integer(field.type)
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise _fail(field, f"has {key.decode()} {text[:20]} outside its type {field.type}")
        return value
    try:
        number = float(text)
    except ValueError:
        raise bad from None
    if not math.isfinite(number) or repr(number) != text:
        raise bad
    return number


def _bounds(field: pa.Field, meta: Mapping[bytes, bytes]) -> tuple[Bound | None, Bound | None]:
    lo, hi = _bound(field, meta, LO_KEY), _bound(field, meta, HI_KEY)
    if lo is not None and hi is not None and lo > hi:
        raise _fail(field, f"has bounds [{lo}, {hi}] with lo above hi")
    return lo, hi


def _shape(field: pa.Field, meta: Mapping[bytes, bytes]) -> tuple[int, ...]:
    raw = meta.get(SHAPE_METADATA_KEY)
    if raw is None:
        raise _fail(field, "is a tensor without a shape")
    parts = raw.decode("ascii", errors="replace").split("x")
    if not all(p.isascii() and p.isdigit() and p == str(int(p)) and int(p) > 0 for p in parts) or len(parts) > 32:
        raise _fail(field, f"has a malformed shape {raw[:20]!r}")
    shape = tuple(int(p) for p in parts)
    kind = field.type
    if not pa.types.is_fixed_size_list(kind) or not _is_number(kind.value_type):
        raise _fail(field, f"is a tensor stored as {_short(kind)}, not a fixed_size_list of numbers")
    if math.prod(shape) != kind.list_size:
        raise _fail(field, f"declares the shape {raw[:20]!r}, which is not its {kind.list_size} values")
    return shape


def _short(kind: object) -> str:
    text = str(kind)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _parse_field(field: pa.Field) -> Column:
    meta: Mapping[bytes, bytes] = field.metadata or {}
    raw_kind = meta[KIND_KEY]
    kind = raw_kind.decode("ascii", errors="replace")
    if kind not in _KEYS:
        raise _fail(field, f"has an unknown {KIND_KEY.decode()} {raw_kind[:20]!r}")
    extra = set(meta) - _KEYS[kind]
    if extra:
        raise _fail(field, f"of kind {kind} has metadata {sorted(extra)[0][:30]!r} it does not allow")
    if field.nullable:
        raise _fail(field, "is nullable: a sealed column holds no missing values")
    arrow = field.type
    if kind in ("numeric", "target"):
        if not _is_number(arrow):
            raise _fail(field, f"of kind {kind} is {_short(arrow)}, not a number")
        lo, hi = _bounds(field, meta)
        if kind == "numeric":
            return NumericColumn(field.name, str(arrow), lo, hi)
        return RegressionTarget(field.name, str(arrow), lo, hi)
    if kind == "categorical":
        if arrow != pa.int32():
            raise _fail(field, f"is categorical stored as {_short(arrow)}, not int32")
        if (VOCAB_KEY in meta) == (BUCKETS_KEY in meta):
            raise _fail(field, "is categorical with neither or both of a vocabulary and a bucket count")
        if VOCAB_KEY in meta:
            return CategoricalColumn(field.name, vocabulary=_strings(field, meta, VOCAB_KEY, MAX_CATEGORIES))
        return CategoricalColumn(field.name, buckets=_count(field, meta, BUCKETS_KEY, 1, MAX_CATEGORIES))
    if kind == "tensor":
        shape = _shape(field, meta)
        return TensorColumn(field.name, str(arrow.value_type), shape)
    if kind == "sequence":
        vocab = _count(field, meta, VOCAB_SIZE_KEY, 1, MAX_VOCAB_SIZE)
        max_len = _count(field, meta, MAX_LEN_KEY, 1, MAX_SEQUENCE_LENGTH)
        pad = _count(field, meta, PAD_ID_KEY, 0, vocab - 1)
        if not (pa.types.is_fixed_size_list(arrow) and arrow.value_type == pa.int32() and arrow.list_size == max_len):
            raise _fail(field, f"is a sequence stored as {_short(arrow)}, not fixed_size_list<int32>[{max_len}]")
        return SequenceColumn(field.name, vocab, max_len, pad)
    # kind == "label"
    if not pa.types.is_integer(arrow):
        raise _fail(field, f"is a label stored as {_short(arrow)}, not integer class indices")
    num_classes = _count(field, meta, NUM_CLASSES_METADATA_KEY, 1, MAX_NUM_CLASSES)
    width = arrow.bit_width - (1 if pa.types.is_signed_integer(arrow) else 0)
    if num_classes - 1 > (1 << width) - 1:
        raise _fail(field, f"declares {num_classes} classes, more than {arrow} holds")
    classes = _strings(field, meta, CLASSES_KEY, MAX_NUM_CLASSES) if CLASSES_KEY in meta else None
    if classes is not None and len(classes) != num_classes:
        raise _fail(field, f"names {len(classes)} classes but declares {num_classes}")
    return ClassLabel(field.name, num_classes, classes)


def _parse_legacy(field: pa.Field) -> Column:
    """A column of a dataset sealed before the public schema, by the rules it was sealed under."""
    meta: Mapping[bytes, bytes] = field.metadata or {}
    if any(key.startswith(PREFIX) and key != NUM_CLASSES_METADATA_KEY for key in meta):
        raise _fail(field, "has hermetic metadata but no hermetic.kind")
    if SHAPE_METADATA_KEY in meta:
        return TensorColumn(field.name, str(field.type.value_type) if pa.types.is_fixed_size_list(field.type)
                            else str(field.type), _shape(field, meta))
    if NUM_CLASSES_METADATA_KEY in meta:
        if not pa.types.is_integer(field.type):
            raise _fail(field, f"is a label stored as {_short(field.type)}, not integer class indices")
        return ClassLabel(field.name, _count(field, meta, NUM_CLASSES_METADATA_KEY, 1, MAX_NUM_CLASSES))
    if _is_number(field.type):
        return NumericColumn(field.name, str(field.type))
    raise _fail(field, f"is {_short(field.type)}, which no public schema describes")
