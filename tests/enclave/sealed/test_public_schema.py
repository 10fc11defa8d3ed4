"""The public schema in a sealed header: its exact encoding, and a parser that only ever raises its typed error."""
from __future__ import annotations

import hashlib
import math

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError, SealedDataError
from enclave.sealed.errors import MalformedHeader
from enclave.sealed.public_schema import (
    CategoricalColumn,
    ClassLabel,
    MalformedSchema,
    NumericColumn,
    PublicSchema,
    RegressionTarget,
    SequenceColumn,
    TensorColumn,
    UnknownColumn,
    WrongColumnKind,
    bucket_of,
    parse_schema,
    public_schema,
)
from enclave.sealed.records import schema_bytes, schema_sha256
from tests.enclave.sealed.conftest import KAT_SCHEMA, make_header

KAT_COLUMNS = (
    NumericColumn("age", "int64", 0, 120),
    NumericColumn("weight", "double", None, 250.5),
    CategoricalColumn("city", vocabulary=("paris", "rome")),
    CategoricalColumn("zip", buckets=16),
    TensorColumn("photo", "uint8", (2, 2, 3)),
    SequenceColumn("notes", 10, 4, 0),
    ClassLabel("diagnosis", 2, ("benign", "malignant")),
)
KAT_TYPES = (pa.int64(), pa.float64(), pa.int32(), pa.int32(), pa.list_(pa.uint8(), 12), pa.list_(pa.int32(), 4),
             pa.int32())
KAT_METADATA = {
    "age": {b"hermetic.kind": b"numeric", b"hermetic.lo": b"0", b"hermetic.hi": b"120"},
    "weight": {b"hermetic.kind": b"numeric", b"hermetic.hi": b"250.5"},
    "city": {b"hermetic.kind": b"categorical", b"hermetic.vocab": b'["paris","rome"]'},
    "zip": {b"hermetic.kind": b"categorical", b"hermetic.buckets": b"16"},
    "photo": {b"hermetic.kind": b"tensor", b"shape": b"2x2x3"},
    "notes": {b"hermetic.kind": b"sequence", b"hermetic.vocab_size": b"10", b"hermetic.max_len": b"4",
              b"hermetic.pad_id": b"0"},
    "diagnosis": {b"hermetic.kind": b"label", b"hermetic.num_classes": b"2",
                  b"hermetic.classes": b'["benign","malignant"]'},
}
# schema_sha256 of the schema above: what the encryption context of such a file binds.
KAT_SCHEMA_SHA256 = "f418dd3253c02bc830718fd5c7654859e8b094ee19fa5aa5d8a1ed80efd650bc"


def _schema(columns: tuple = KAT_COLUMNS, types: tuple = KAT_TYPES) -> pa.Schema:
    return pa.schema([pa.field(c.name, t, nullable=False, metadata=c.metadata())
                      for c, t in zip(columns, types, strict=True)])


def _one(kind: pa.DataType, metadata: dict[bytes, bytes], nullable: bool = False) -> pa.Schema:
    return pa.schema([pa.field("c", kind, nullable=nullable, metadata=metadata)])


def test_known_answer_metadata_and_schema_hash() -> None:
    schema = _schema()
    assert {f.name: f.metadata for f in schema} == KAT_METADATA
    assert schema_sha256(schema) == KAT_SCHEMA_SHA256


def test_a_header_with_a_public_schema_parses_back_to_it() -> None:
    raw = schema_bytes(_schema())
    parsed = public_schema(make_header(schema=raw))
    assert parsed == PublicSchema(KAT_COLUMNS) and not parsed.legacy
    assert parsed.names == tuple(KAT_METADATA)
    assert parsed.label == ClassLabel("diagnosis", 2, ("benign", "malignant"))
    assert (parsed.num_classes, parsed.task) == (2, "classification")
    assert parsed.column("zip") == CategoricalColumn("zip", buckets=16) and parsed.column("zip").size == 16
    assert parsed.get("nope") is None and len(parsed.features) == 6
    with pytest.raises(UnknownColumn, match="column 'nope' is not in the dataset") as info:
        parsed.column("nope")
    assert isinstance(info.value, ConfigError)
    assert parsed.to_json()[0] == {"name": "age", "kind": "numeric", "dtype": "int64", "lo": 0, "hi": 120}
    assert parsed.column_of("photo", TensorColumn).shape == (2, 2, 3)
    with pytest.raises(WrongColumnKind, match=r"^column 'city' is categorical, 2 values: paris\|rome, not tensor$"):
        parsed.column_of("city", TensorColumn)


def test_a_regression_target_has_no_class_count() -> None:
    target = RegressionTarget("y", "float", -1.5, 2.0)
    parsed = parse_schema(_schema((target,), (pa.float32(),)))
    assert parsed.label == target and parsed.num_classes is None and parsed.task == "regression"
    assert parsed.features == ()


def test_bucket_of_is_sha256_of_the_utf8_value_mod_buckets() -> None:
    assert bucket_of("paris", 16) == 7
    assert hashlib.sha256(b"paris").hexdigest().endswith("7")  # the low hex digit is the value mod 16
    assert bucket_of("é", 1000) == int.from_bytes(hashlib.sha256("é".encode()).digest(), "big") % 1000


def test_a_schema_sealed_before_the_public_schema_is_read_by_the_old_rules() -> None:
    legacy = parse_schema(KAT_SCHEMA)
    assert legacy.legacy and legacy.columns == (TensorColumn("image", "uint8", (2, 2)), NumericColumn("label", "uint8"))
    with_classes = KAT_SCHEMA.set(1, KAT_SCHEMA.field(1).with_metadata({b"hermetic.num_classes": b"10"}))
    assert parse_schema(with_classes).label == ClassLabel("label", 10)
    with pytest.raises(MalformedSchema, match="'name' is string, which no public schema describes"):
        parse_schema(pa.schema([pa.field("name", pa.string())]))


@pytest.mark.parametrize("schema, problem", [
    (pa.schema([pa.field("a", pa.int8(), False, {b"hermetic.kind": b"numeric"}), pa.field("b", pa.int8())]),
     "'b' declares no hermetic.kind, other columns do"),
    (_one(pa.int8(), {b"hermetic.kind": b"numeric"}, nullable=True), "is nullable"),
    (_one(pa.int8(), {b"hermetic.kind": b"colour"}), "unknown hermetic.kind"),
    (_one(pa.int8(), {b"hermetic.kind": b"numeric", b"hermetic.vocab": b"[]"}), "does not allow"),
    (_one(pa.int8(), {b"hermetic.kind": b"numeric", b"hermetic.lo": b"1.0"}), "malformed hermetic.lo"),
    (_one(pa.int8(), {b"hermetic.kind": b"numeric", b"hermetic.lo": b"300"}), "outside its type int8"),
    (_one(pa.float32(), {b"hermetic.kind": b"numeric", b"hermetic.lo": b"1"}), "malformed hermetic.lo"),
    (_one(pa.float32(), {b"hermetic.kind": b"numeric", b"hermetic.lo": b"nan"}), "malformed hermetic.lo"),
    (_one(pa.int8(), {b"hermetic.kind": b"numeric", b"hermetic.lo": b"3", b"hermetic.hi": b"2"}), "lo above hi"),
    (_one(pa.string(), {b"hermetic.kind": b"numeric"}), "not a number"),
    (_one(pa.int64(), {b"hermetic.kind": b"categorical", b"hermetic.buckets": b"4"}), "not int32"),
    (_one(pa.int32(), {b"hermetic.kind": b"categorical"}), "neither or both"),
    (_one(pa.int32(), {b"hermetic.kind": b"categorical", b"hermetic.vocab": b'["a","a"]'}), "twice"),
    (_one(pa.int32(), {b"hermetic.kind": b"categorical", b"hermetic.vocab": b'["a", "b"]'}), "canonical"),
    (_one(pa.int32(), {b"hermetic.kind": b"categorical", b"hermetic.vocab": b'[]'}), "0 entries"),
    (_one(pa.int32(), {b"hermetic.kind": b"categorical", b"hermetic.buckets": b"04"}), "malformed hermetic.buckets"),
    (_one(pa.list_(pa.uint8(), 5), {b"hermetic.kind": b"tensor", b"shape": b"2x2"}), "not its 5 values"),
    (_one(pa.list_(pa.string(), 4), {b"hermetic.kind": b"tensor", b"shape": b"2x2"}), "not a fixed_size_list"),
    (_one(pa.list_(pa.int32(), 4), {b"hermetic.kind": b"sequence", b"hermetic.vocab_size": b"5",
                                    b"hermetic.max_len": b"3", b"hermetic.pad_id": b"0"}), r"not fixed_size_list<int32>\[3\]"),
    (_one(pa.list_(pa.int32(), 3), {b"hermetic.kind": b"sequence", b"hermetic.vocab_size": b"5",
                                    b"hermetic.max_len": b"3", b"hermetic.pad_id": b"5"}), "malformed hermetic.pad_id"),
    (_one(pa.uint8(), {b"hermetic.kind": b"label", b"hermetic.num_classes": b"300"}), "more than uint8 holds"),
    (_one(pa.int32(), {b"hermetic.kind": b"label", b"hermetic.num_classes": b"3",
                       b"hermetic.classes": b'["a","b"]'}), "names 2 classes but declares 3"),
    (_one(pa.float32(), {b"hermetic.kind": b"label", b"hermetic.num_classes": b"3"}), "not integer class indices"),
    (pa.schema([pa.field(n, pa.int32(), False, {b"hermetic.kind": b"label", b"hermetic.num_classes": b"2"})
                for n in "ab"]), "more than one label"),
])
def test_malformed_schemas_are_refused_by_name(schema: pa.Schema, problem: str) -> None:
    with pytest.raises(MalformedSchema, match=problem) as info:
        parse_schema(schema)
    assert isinstance(info.value, MalformedHeader) and isinstance(info.value, SealedDataError)
    assert "\n" not in str(info.value)


_KEYS = st.sampled_from([b"hermetic.kind", b"hermetic.lo", b"hermetic.hi", b"hermetic.vocab", b"hermetic.buckets",
                         b"hermetic.vocab_size", b"hermetic.max_len", b"hermetic.pad_id", b"hermetic.classes",
                         b"hermetic.num_classes", b"shape", b"hermetic.other", b"PARQUET:field_id"])
_VALUES = st.one_of(
    st.sampled_from([b"numeric", b"categorical", b"tensor", b"sequence", b"label", b"target", b"0", b"1", b"4",
                     b"-1", b"2x2", b"4", b"1.5", b"nan", b'["a","b"]', b'["a"]', b"[]", b"{}", b"\xff"]),
    st.binary(max_size=12),
    st.integers(-(1 << 70), 1 << 70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=True).map(lambda x: repr(x).encode()),
    st.lists(st.text(max_size=4), max_size=4).map(lambda v: repr(v).replace("'", '"').encode()),
)
_TYPES = st.sampled_from([pa.int8(), pa.uint8(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(),
                          pa.bool_(), pa.list_(pa.uint8(), 4), pa.list_(pa.int32(), 4), pa.list_(pa.float32(), 1),
                          pa.list_(pa.int32()), pa.list_(pa.string(), 4), pa.binary()])
_FIELDS = st.builds(pa.field, st.text(max_size=6), _TYPES, st.booleans(), st.dictionaries(_KEYS, _VALUES, max_size=5))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FIELDS, max_size=4))
def test_random_metadata_never_raises_anything_but_the_typed_error(fields: list[pa.Field]) -> None:
    try:
        parsed = parse_schema(pa.schema(fields))
    except MalformedSchema as err:
        assert "\n" not in str(err)
        return
    # What parses describes the schema it came from.
    assert parsed.names == tuple(f.name for f in fields)
    for column in parsed:
        if isinstance(column, (NumericColumn, RegressionTarget)) and None not in (column.lo, column.hi):
            assert column.lo <= column.hi and all(math.isfinite(b) for b in (column.lo, column.hi))
        if isinstance(column, TensorColumn):
            assert math.prod(column.shape) == parsed_size(fields, column.name)


def parsed_size(fields: list[pa.Field], name: str) -> int:
    return next(f.type.list_size for f in fields if f.name == name)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_header_schema_bytes_raise_only_malformed_header(raw: bytes) -> None:
    try:
        header = make_header(schema=raw)
    except MalformedHeader:
        return  # refused as a header already (empty schema bytes)
    try:
        public_schema(header)
    except MalformedHeader as err:
        assert "\n" not in str(err)


def test_a_declared_schema_round_trips_through_its_metadata() -> None:
    for column, kind in zip(KAT_COLUMNS, KAT_TYPES, strict=True):
        assert parse_schema(_schema((column,), (kind,))).columns == (column,)


_NAMES = st.text(min_size=1, max_size=8)
_INT_BOUNDS = st.integers(-(1 << 31), (1 << 31) - 1)
_FLOAT_BOUNDS = st.floats(allow_nan=False, allow_infinity=False)
_STRINGS = st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True).map(tuple)


@st.composite
def _declared_column(draw: st.DrawFn) -> tuple[object, pa.DataType]:
    name = draw(_NAMES)
    kind = draw(st.sampled_from(["numeric-int", "numeric-float", "vocab", "buckets", "tensor", "sequence", "label",
                                 "target"]))
    if kind in ("numeric-int", "numeric-float", "target"):
        bound = _INT_BOUNDS if kind == "numeric-int" else _FLOAT_BOUNDS
        lo, hi = draw(st.none() | bound), draw(st.none() | bound)
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        arrow = pa.int32() if kind == "numeric-int" else pa.float64()
        cls = RegressionTarget if kind == "target" else NumericColumn
        return cls(name, str(arrow), lo, hi), arrow
    if kind == "vocab":
        return CategoricalColumn(name, vocabulary=draw(_STRINGS)), pa.int32()
    if kind == "buckets":
        return CategoricalColumn(name, buckets=draw(st.integers(1, 1 << 24))), pa.int32()
    if kind == "tensor":
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
        return TensorColumn(name, "float", shape), pa.list_(pa.float32(), math.prod(shape))
    if kind == "sequence":
        vocab = draw(st.integers(1, 1 << 20))
        max_len = draw(st.integers(1, 64))
        return SequenceColumn(name, vocab, max_len, draw(st.integers(0, vocab - 1))), pa.list_(pa.int32(), max_len)
    classes = draw(st.none() | _STRINGS)
    count = len(classes) if classes is not None else draw(st.integers(1, 1000))
    return ClassLabel(name, count, classes), pa.int32()


@settings(max_examples=300, deadline=None)
@given(st.lists(_declared_column(), min_size=1, max_size=5, unique_by=lambda c: c[0].name))  # type: ignore[attr-defined]
def test_any_declared_schema_round_trips_through_its_encoding(drawn: list[tuple[object, pa.DataType]]) -> None:
    labels = [c for c, _ in drawn if isinstance(c, (ClassLabel, RegressionTarget))]
    drawn = [d for d in drawn if d[0] not in labels[1:]]  # one label at most
    columns = tuple(c for c, _ in drawn)
    schema = _schema(columns, tuple(t for _, t in drawn))
    raw = schema_bytes(schema)
    assert public_schema(make_header(schema=raw)) == PublicSchema(columns)  # type: ignore[arg-type]
