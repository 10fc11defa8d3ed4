"""The public schema at sealing: declared or inferred, printed, and every row held to it before KMS."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from enclave.errors import ConfigError, DatasetError
from enclave.sealed.public_schema import (
    CategoricalColumn,
    ClassLabel,
    NumericColumn,
    PublicSchema,
    RegressionTarget,
    SequenceColumn,
    TensorColumn,
    bucket_of,
    public_schema,
)
from enclave.sealed.stream import read_header
from parent.cli import main
from parent.datasets.schema import (
    CategoricalDecl,
    LabelDecl,
    NumericDecl,
    SchemaDeclaration,
    SequenceDecl,
    TensorDecl,
    declaration_from_flags,
    load_schema_file,
    parse_categorical_flag,
    parse_numeric_flag,
    parse_sequence_flag,
    parse_tensor_flag,
)
from tests.parent.test_seal import LEDGER, FakeKms, open_sealed, seal
from tests.parent.test_seal import kms_url as kms_url

PATIENTS = "age,weight,city,diagnosis\n34,70.5,paris,benign\n51,80.25,rome,malignant\n29,61.0,paris,benign\n"


def _csv(tmp_path: Path, text: str = PATIENTS, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sealed_schema(result: object) -> PublicSchema:
    with result.out_path.open("rb") as fh:  # type: ignore[attr-defined]
        return public_schema(read_header(fh))


def _refused(tmp_path: Path, src: Path, match: str, secret: str | None = None, **decl: object) -> str:
    kms = FakeKms()
    where = tmp_path / f"refused-{len(list(tmp_path.iterdir()))}"
    where.mkdir()
    with pytest.raises((DatasetError, ConfigError), match=match) as info:
        seal(where, src, kms, schema=declaration_from_flags(**decl))  # type: ignore[arg-type]
    assert kms.calls == [] and not (where / "out.sealed").exists()
    text = str(info.value)
    if secret is not None:
        assert secret not in text
    return text


# -- round trip ----------------------------------------------------------------------------


def test_a_csv_with_numbers_and_string_labels_round_trips_to_its_public_schema(tmp_path: Path) -> None:
    kms = FakeKms()
    decl = declaration_from_flags(numeric=["age:0:120"], categorical=["city=paris|rome|oslo"], label="diagnosis",
                                  classes="benign,malignant")
    result = seal(tmp_path, _csv(tmp_path), kms, schema=decl)
    expected = PublicSchema((
        NumericColumn("age", "int64", 0, 120),
        NumericColumn("weight", "double"),
        CategoricalColumn("city", vocabulary=("paris", "rome", "oslo")),
        ClassLabel("diagnosis", 2, ("benign", "malignant")),
    ))
    assert result.schema == expected == _sealed_schema(result)
    _, table, _ = open_sealed(result.out_path, kms)
    assert table.column("city").to_pylist() == [0, 1, 0] and table.column("city").type == pa.int32()
    assert table.column("diagnosis").to_pylist() == [0, 1, 0]
    assert table.column("age").to_pylist() == [34, 51, 29]
    report = result.to_json()
    assert report["schema"] == expected.to_json() and report["num_classes"] == 2
    assert report["label_column"] == "diagnosis" and report["num_classes_source"] == "given"


def test_each_input_format_maps_onto_the_public_schema(tmp_path: Path) -> None:
    table = pa.table({"x": pa.array([1.5, 2.5], pa.float32()), "label": pa.array([0, 1], pa.int64())})
    pq.write_table(table, tmp_path / "d.parquet")
    feather.write_feather(table, str(tmp_path / "d.arrow"))
    _csv(tmp_path, "x,label\n1.5,0\n2.5,1\n", "d.csv")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4, 3), np.float32), label=np.array([0, 1], np.uint8))
    schemas = {}
    for name in ("d.parquet", "d.arrow", "d.csv", "d.npz"):
        schemas[name] = seal(tmp_path, tmp_path / name, FakeKms(), num_classes=3).schema
    assert schemas["d.parquet"] == schemas["d.arrow"] == PublicSchema(
        (NumericColumn("x", "float"), ClassLabel("label", 3)))
    assert schemas["d.csv"] == PublicSchema((NumericColumn("x", "double"), ClassLabel("label", 3)))
    # NPZ array shapes are public by construction: the tensor shape is inferred from them.
    assert schemas["d.npz"] == PublicSchema((TensorColumn("x", "float", (4, 4, 3)), ClassLabel("label", 3)))


def test_idx_images_and_labels_keep_todays_schema_with_kinds(tmp_path: Path) -> None:
    from parent.datasets.idx import IdxHeader

    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    (tmp_path / "t-images-idx3-ubyte").write_bytes(IdxHeader(0x08, (3, 2, 2)).encode() + images.tobytes())
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(IdxHeader(0x08, (3,)).encode() + bytes([0, 2, 1]))
    result = seal(tmp_path, tmp_path / "t-images-idx3-ubyte", FakeKms())
    assert result.schema == PublicSchema((TensorColumn("image", "uint8", (2, 2)), ClassLabel("label", 3)))
    assert result.labels is not None and not result.labels.declared


# -- each kind, and its refusals -------------------------------------------------------------


def test_numeric_bounds_refuse_a_row_outside_naming_row_and_column_not_value(tmp_path: Path) -> None:
    src = _csv(tmp_path, "age,label\n34,0\n151,1\n")
    text = _refused(tmp_path, src, r"^row 1: column 'age' is above its declared bound 120$", numeric=["age:0:120"])
    assert "151" not in text
    _refused(tmp_path, src, r"^row 0: column 'age' is below its declared bound 40$", numeric=["age:40:"])
    pq.write_table(pa.table({"v": [1.5, float("nan")]}), tmp_path / "nan.parquet")
    _refused(tmp_path, tmp_path / "nan.parquet", r"^row 1: column 'v' is not a finite number$")
    _refused(tmp_path, _csv(tmp_path, "v,w\n1,2\n,3\n", "null.csv"), r"^row 1: column 'v' is missing$")
    _refused(tmp_path, src, "holds integers: give it integer bounds", numeric=["age:0:1.5"])


def test_categorical_values_outside_the_vocabulary_are_refused_without_the_value(tmp_path: Path) -> None:
    src = _csv(tmp_path)
    _refused(tmp_path, src, r"^row 1: column 'city' holds a value outside its declared vocabulary$", secret="rome",
             categorical=["city=paris|oslo"], label="diagnosis", classes="benign,malignant")


def test_hashed_categories_are_sha256_buckets_and_integers_hash_as_their_decimal_text(tmp_path: Path) -> None:
    kms = FakeKms()
    src = _csv(tmp_path, "city,zip,label\nparis,75001,0\nrome,100,1\n")
    result = seal(tmp_path, src, kms, schema=declaration_from_flags(categorical=["city#16", "zip#7"]))
    _, table, _ = open_sealed(result.out_path, kms)
    assert table.column("city").to_pylist() == [bucket_of("paris", 16), bucket_of("rome", 16)]
    assert table.column("zip").to_pylist() == [bucket_of("75001", 7), bucket_of("100", 7)]


def test_a_vocabulary_is_never_derived_from_the_data(tmp_path: Path) -> None:
    src = _csv(tmp_path, "city,label\nzanzibar,0\nreykjavik,1\n")
    # An undeclared string column is refused, naming it and how to declare it.
    text = _refused(tmp_path, src, r"column 'city' holds strings", secret="zanzibar")
    assert "--categorical city=A|B|C" in text and "--drop city" in text
    # Hashed, the header holds the bucket count and nothing read from the rows.
    result = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(categorical=["city#8"]))
    header = result.out_path.read_bytes()[:4096]
    assert b"zanzibar" not in header and b"reykjavik" not in header
    assert result.schema is not None and result.schema.column("city") == CategoricalColumn("city", buckets=8)
    # Dropped, it is not sealed at all.
    dropped = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(drop=["city"]))
    assert dropped.schema is not None and dropped.schema.names == ("label",)
    unlabelled = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(drop=["label"], categorical=["city#8"]))
    assert unlabelled.labels is None and unlabelled.schema is not None and unlabelled.schema.names == ("city",)


def test_string_labels_need_declared_classes(tmp_path: Path) -> None:
    src = _csv(tmp_path)
    text = _refused(tmp_path, src, "label column 'diagnosis' holds strings: declare the classes in order with "
                    "--classes", secret="malignant", label="diagnosis", categorical=["city#4"])
    assert "never read from the data" in text
    _refused(tmp_path, src, r"^row 1: column 'diagnosis' holds a label that is not one of its 2 declared classes$",
             secret="malignant", label="diagnosis", classes="benign,other", categorical=["city#4"])


def test_integer_labels_can_be_named_in_index_order(tmp_path: Path) -> None:
    src = _csv(tmp_path, "x,label\n1,0\n2,2\n")
    result = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(classes="cat,dog,bird"))
    assert result.schema is not None and result.schema.label == ClassLabel("label", 3, ("cat", "dog", "bird"))
    _refused(tmp_path, src, r"^row 1: label 2 is outside \[0, 2\)", classes="cat,dog")


def test_a_regression_target_with_bounds(tmp_path: Path) -> None:
    src = _csv(tmp_path, "x,price\n1,10.5\n2,99.0\n")
    result = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(target="price:0:100"))
    assert result.schema is not None and result.schema.label == RegressionTarget("price", "double", 0.0, 100.0)
    assert result.labels is None and result.to_json()["num_classes"] is None
    _refused(tmp_path, src, r"^row 1: column 'price' is above its declared bound 50.0$", target="price::50")
    same = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(label="price", task="regression"))
    assert same.schema is not None and same.schema.task == "regression"


def test_tensors_of_any_shape_declared_or_inferred(tmp_path: Path) -> None:
    kms = FakeKms()
    images = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    np.savez(tmp_path / "c.npz", image=images, label=np.arange(4) % 2)
    result = seal(tmp_path, tmp_path / "c.npz", kms)
    assert result.schema is not None and result.schema.column("image") == TensorColumn("image", "float", (32, 32, 3))
    _, table, _ = open_sealed(result.out_path, kms)
    assert np.array_equal(table.column("image").combine_chunks().flatten().to_numpy().reshape(images.shape), images)
    # A Parquet list column gets its shape by declaration; rows of another length are refused.
    pq.write_table(pa.table({"v": pa.array([[1, 2, 3, 4], [5, 6, 7, 8]], pa.list_(pa.uint8()))}), tmp_path / "v.parquet")
    declared = seal(tmp_path, tmp_path / "v.parquet", FakeKms(), schema=declaration_from_flags(tensor=["v=2x2"]))
    assert declared.schema is not None and declared.schema.column("v") == TensorColumn("v", "uint8", (2, 2))
    # A fixed-size list read back from Parquet (child "element") is a tensor of one dimension as it is.
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(range(8), pa.uint8()), 4)
    pq.write_table(pa.table({"f": fixed}), tmp_path / "f.parquet")
    inferred = seal(tmp_path, tmp_path / "f.parquet", kms)
    assert inferred.schema is not None and inferred.schema.column("f") == TensorColumn("f", "uint8", (4,))
    _, table, _ = open_sealed(inferred.out_path, kms)
    assert table.column("f").to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    pq.write_table(pa.table({"v": pa.array([[1, 2, 3, 4], [5, 6]], pa.list_(pa.uint8()))}), tmp_path / "w.parquet")
    _refused(tmp_path, tmp_path / "w.parquet", r"^row 1: column 'v' does not hold 4 values", tensor=["v=2x2"])
    _refused(tmp_path, tmp_path / "v.parquet", r"column 'v' is list<element: uint8>: declare it")
    images[2, 5, 5, 1] = np.nan
    np.savez(tmp_path / "c.npz", image=images, label=np.arange(4) % 2)
    _refused(tmp_path, tmp_path / "c.npz", r"^row 2: column 'image' holds a value that is not finite$")


def test_sequences_are_padded_to_max_len_and_checked(tmp_path: Path) -> None:
    kms = FakeKms()
    pq.write_table(pa.table({"ids": pa.array([[3, 1, 2], [4], []], pa.list_(pa.int64())),
                             "label": pa.array([0, 1, 0], pa.int8())}), tmp_path / "s.parquet")
    result = seal(tmp_path, tmp_path / "s.parquet", kms, schema=declaration_from_flags(sequence=["ids:5:4"]))
    assert result.schema is not None and result.schema.column("ids") == SequenceColumn("ids", 5, 4, 0)
    _, table, _ = open_sealed(result.out_path, kms)
    assert table.column("ids").to_pylist() == [[3, 1, 2, 0], [4, 0, 0, 0], [0, 0, 0, 0]]
    assert table.schema.field("ids").type == pa.list_(pa.int32(), 4)
    # From CSV: whitespace-separated ids.
    csv = _csv(tmp_path, "ids,label\n1 2,0\n3,1\n", "s.csv")
    from_csv = seal(tmp_path, csv, kms, schema=declaration_from_flags(sequence=["ids:5:3:4"]))
    _, table, _ = open_sealed(from_csv.out_path, kms)
    assert table.column("ids").to_pylist() == [[1, 2, 4], [3, 4, 4]]
    src = tmp_path / "s.parquet"
    _refused(tmp_path, src, r"^row 0: column 'ids' holds 3 ids, more than its max_len 2$", sequence=["ids:5:2"])
    _refused(tmp_path, src, r"^row 0: column 'ids' holds an id outside \[0, 3\)$", sequence=["ids:3:4"])
    _refused(tmp_path, src, r"^row 0: column 'ids' holds the pad id 1 before its last id$", sequence=["ids:5:4:1"])
    bad = _csv(tmp_path, "ids,label\n1 2,0\n3 x,1\n", "bad.csv")
    _refused(tmp_path, bad, r"^row 1: column 'ids' is not whitespace-separated integer ids$", sequence=["ids:5:3"])


def test_booleans_are_numeric_zero_or_one(tmp_path: Path) -> None:
    kms = FakeKms()
    pq.write_table(pa.table({"smoker": [True, False], "label": [0, 1]}), tmp_path / "b.parquet")
    result = seal(tmp_path, tmp_path / "b.parquet", kms)
    assert result.schema is not None and result.schema.column("smoker") == NumericColumn("smoker", "uint8", 0, 1)
    _, table, _ = open_sealed(result.out_path, kms)
    assert table.column("smoker").to_pylist() == [1, 0] and _sealed_schema(result) == result.schema


def test_undeclared_columns_of_other_types_are_refused_by_name(tmp_path: Path) -> None:
    pq.write_table(pa.table({"when": pa.array([1, 2], pa.timestamp("s")), "label": [0, 1]}), tmp_path / "t.parquet")
    _refused(tmp_path, tmp_path / "t.parquet", r"column 'when' is timestamp\[ms\], which no public schema describes")
    _refused(tmp_path, tmp_path / "t.parquet", r"column 'nope' is declared but the dataset has no such column",
             numeric=["nope"])


# -- flags and the schema file ----------------------------------------------------------------


def test_flag_grammar() -> None:
    assert parse_numeric_flag("age") == ("age", NumericDecl())
    assert parse_numeric_flag("age:0:120") == ("age", NumericDecl(0, 120))
    assert parse_numeric_flag("w::2.5") == ("w", NumericDecl(None, 2.5))
    assert parse_categorical_flag("c=a|b") == ("c", CategoricalDecl(vocabulary=("a", "b")))
    assert parse_categorical_flag("c#64") == ("c", CategoricalDecl(buckets=64))
    assert parse_tensor_flag("img=32x32x3") == ("img", TensorDecl((32, 32, 3)))
    assert parse_sequence_flag("t:100:16") == ("t", SequenceDecl(100, 16, 0))
    assert parse_sequence_flag("t:100:16:99") == ("t", SequenceDecl(100, 16, 99))
    for parse, bad, problem in [
        (parse_numeric_flag, "a:1", "COL:LO:HI"), (parse_numeric_flag, "a:2:1", "above the upper bound"),
        (parse_numeric_flag, "a:x:1", "not a number"), (parse_numeric_flag, "a:inf:", "finite"),
        (parse_categorical_flag, "c", "COL=A|B|C"), (parse_categorical_flag, "c=a|a", "listed twice"),
        (parse_categorical_flag, "c#0", "not an integer in"), (parse_tensor_flag, "i=3xx3", "DIMxDIM"),
        (parse_tensor_flag, "i=0x3", "positive"), (parse_sequence_flag, "t:10", "COL:VOCAB_SIZE"),
        (parse_sequence_flag, "t:10:4:10", r"pad id 10 is not an id in \[0, 10\)"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse(bad)
    with pytest.raises(ConfigError, match="'a' is declared twice"):
        declaration_from_flags(numeric=["a"], categorical=["a#3"])
    with pytest.raises(ConfigError, match="a dataset has one label"):
        declaration_from_flags(label="y", target="z")


SCHEMA_TOML = """
drop = ["id"]

[label]
column = "diagnosis"
classes = ["benign", "malignant"]

[columns.age]
kind = "numeric"
lo = 0
hi = 120

[columns.city]
kind = "categorical"
vocabulary = ["paris", "rome"]
"""


def test_a_schema_file_declares_what_the_flags_do(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(SCHEMA_TOML)
    decl = load_schema_file(path)
    assert decl == SchemaDeclaration(
        {"age": NumericDecl(0, 120), "city": CategoricalDecl(vocabulary=("paris", "rome"))},
        LabelDecl(column="diagnosis", classes=("benign", "malignant")), ("id",))
    src = _csv(tmp_path, "id,age,weight,city,diagnosis\nA17,34,70.5,paris,benign\n")
    result = seal(tmp_path, src, FakeKms(), schema=declaration_from_flags(schema_file=path, numeric=["weight:0:300"]))
    assert result.schema is not None and result.schema.names == ("age", "weight", "city", "diagnosis")
    with pytest.raises(ConfigError, match="'age' is declared twice"):
        declaration_from_flags(schema_file=path, numeric=["age"])
    for text, problem in [
        ("[columns.a]\nkind = 'colour'", "kind must be one of"),
        ("[columns.a]\nkind = 'numeric'\nlow = 1", "unknown key 'low'"),
        ("[columns.a]\nkind = 'categorical'\nbuckets = 2\nvocabulary = ['x']", "not both"),
        ("[columns.a]\nkind = 'tensor'\nshape = [0]", "positive"),
        ("[label]\ntask = 'ranking'", "task must be"),
        ("extra = 1", "unknown key 'extra'"),
        ("[columns", "not valid TOML"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            load_schema_file(path)


# -- the CLI shows the owner what becomes public ------------------------------------------------


def test_hermetic_seal_prints_the_public_schema(tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    key_id = boto3.client("kms", endpoint_url=kms_url, region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
    src = _csv(tmp_path)
    base = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner",
            "--key-id", key_id, "--max-epsilon", "1", "--delta", "1e-5", "--owner", "o", "--kms-endpoint", kms_url,
            "--ledger", LEDGER, "--label", "diagnosis", "--classes", "benign,malignant", "--numeric", "age:0:120",
            "--categorical", "city=paris|rome"]
    assert main([*base, "--out", str(tmp_path / "a.sealed")]) == 0
    out = capsys.readouterr().out
    assert "    age        numeric int64, in [0, 120]" in out
    assert "    city       categorical, 2 values: paris|rome" in out
    assert "    diagnosis  label, 2 classes: benign,malignant" in out
    assert main([*base, "--out", str(tmp_path / "b.sealed"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["schema"]] == ["age", "weight", "city", "diagnosis"]
    assert report["schema"][2] == {"name": "city", "kind": "categorical", "vocabulary": ["paris", "rome"],
                                   "buckets": None, "size": 2}
    assert main([*base[:-2], "--out", str(tmp_path / "c.sealed")]) == 1
    err = capsys.readouterr().err
    assert "column 'city' holds strings" in err and "paris" not in err
