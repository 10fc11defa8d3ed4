"""The label column checked at sealing: integers in [0, K), K declared or max + 1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from enclave.errors import ConfigError, DatasetError
from enclave.sealed.records import NUM_CLASSES_METADATA_KEY, header_schema
from enclave.sealed.stream import read_header
from parent.datasets.labels import LabelCheck, LabelOutOfRange, label_type_problem, scan_labels
from tests.parent.test_seal import FakeKms, seal


def _batches(*parts: list[int | None]) -> list[pa.RecordBatch]:
    return [pa.record_batch({"label": pa.array(p, pa.int32())}) for p in parts]


def test_rows_are_counted_across_batches() -> None:
    with pytest.raises(LabelOutOfRange, match=r"^row 4: label 7 is outside \[0, 5\)"):
        scan_labels(_batches([0, 1, 2], [3, 7, 9]), "label", 5)
    with pytest.raises(LabelOutOfRange, match=r"^row 3: the label is missing$"):
        scan_labels(_batches([0, 1, 2], [None, 1]), "label", 5)
    with pytest.raises(LabelOutOfRange, match=r"^row 1: label -2 is negative"):
        scan_labels(_batches([0, -2]), "label", None)


def test_the_class_count_is_declared_or_the_largest_label_plus_one() -> None:
    assert scan_labels(_batches([0, 4], [2]), "label", 10) == LabelCheck("label", 10, declared=True)
    assert scan_labels(_batches([0, 4], [2]), "label", None) == LabelCheck("label", 5, declared=False)
    with pytest.raises(ConfigError, match="holds no labels"):
        scan_labels(_batches([]), "label", None)
    for bad in (0, -1, True, 1 << 30):
        with pytest.raises(ConfigError, match="class count"):
            scan_labels(_batches([0]), "label", bad)


def test_only_one_integer_column_can_hold_labels() -> None:
    schema = pa.schema([pa.field("label", pa.float64()), pa.field("y", pa.int8()), pa.field("y", pa.int8())])
    assert label_type_problem(schema, "label") == "label column 'label' is double: labels must be integer class indices"
    assert "no single column 'y'" in str(label_type_problem(schema, "y"))
    assert "no single column 'z'" in str(label_type_problem(schema, "z"))


def test_a_dataset_without_labels_seals_without_a_declaration(tmp_path: Path) -> None:
    src = tmp_path / "d.npz"
    np.savez(src, x=np.zeros((5, 3), dtype=np.uint8), y=np.arange(5))
    result = seal(tmp_path, src, FakeKms())
    assert result.labels is None and result.to_json()["num_classes"] is None
    # Naming the column, or a class count, requires it.
    with pytest.raises(DatasetError, match="no single column 'label'"):
        seal(tmp_path, src, FakeKms(), num_classes=10)
    declared = seal(tmp_path, src, FakeKms(), label_column="y", num_classes=6)
    with declared.out_path.open("rb") as fh:
        field = header_schema(read_header(fh)).field("y")
    assert field.metadata == {b"hermetic.kind": b"label", NUM_CLASSES_METADATA_KEY: b"6"}
