"""Attack: a label outside the model's range makes the enclave fail, a signal that depends on the data.

The class count K is public by the owner's declaration at sealing (`--num-classes`, or
max(label) + 1 shown to them), written into the label field's metadata in the header's
schema, which the context's schema_sha256 binds. The sealer refuses any label outside
[0, K) with its row; the job check refuses a model whose class count is not K before any
key is used; and the enclave's data path refuses an out-of-range label with a fixed text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from enclave.errors import DatasetError
from enclave.sealed.records import NUM_CLASSES_METADATA_KEY, field_num_classes, header_schema
from enclave.sealed.stream import read_header
from enclave.training.check import check_job
from enclave.training.spec import JobSpec
from enclave.training.trainer import UnusableRecords, table_arrays
from parent.cli import main
from tests.parent.test_seal import LEDGER, FakeKms, seal
from tests.parent.test_seal import kms_url as kms_url
from tests.support.specs import mlp_spec

SPEC = mlp_spec(key_id="arn:aws:kms:us-east-1:111122223333:key/m", name="labels", steps=1, batch=10)


def _npz(path: Path, labels: np.ndarray) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, image=rng.integers(0, 256, (len(labels), 784), dtype=np.uint8), label=labels)
    return path


def _labels(n: int = 500) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.int64)


def test_seal_refuses_a_label_outside_the_declared_range_naming_the_row(tmp_path: Path) -> None:
    labels = _labels()
    labels[321] = 10
    kms = FakeKms()
    with pytest.raises(DatasetError, match=r"^row 321: label 10 is outside \[0, 10\)"):
        seal(tmp_path, _npz(tmp_path / "d.npz", labels), kms, num_classes=10)
    labels[321] = -1
    with pytest.raises(DatasetError, match=r"^row 321: label -1 is negative"):
        seal(tmp_path, _npz(tmp_path / "d.npz", labels), kms)
    # Refused before any key was asked for, and nothing written.
    assert kms.calls == [] and not (tmp_path / "out.sealed").exists()


def test_seal_refuses_labels_that_are_not_integers(tmp_path: Path) -> None:
    src = tmp_path / "f.npz"
    np.savez(src, image=np.zeros((4, 784), dtype=np.uint8), label=np.array([0.0, 1.5, 2.0, 3.0]))
    with pytest.raises(DatasetError, match="label column 'label' is double: labels must be integer class indices"):
        seal(tmp_path, src, FakeKms())


def test_the_class_count_is_public_in_the_header_and_the_job_check_holds_the_model_to_it(tmp_path: Path) -> None:
    kms = FakeKms()
    declared = seal(tmp_path, _npz(tmp_path / "d.npz", _labels()), kms, num_classes=12,
                    model_owner_keys=["arn:aws:kms:us-east-1:111122223333:key/m"])
    with declared.out_path.open("rb") as fh:
        header = read_header(fh)
    # Read without any key: the count is in the public schema the context's hash binds.
    assert field_num_classes(header_schema(header).field("label")) == 12
    assert (declared.labels is not None, declared.to_json()["num_classes"]) == (True, 12)
    problems = check_job(JobSpec.from_toml(SPEC), header)
    assert [(p.where, p.message) for p in problems] == [
        ("data.label", "column 'label' declares 12 classes, model 'mlp' has 10")]

    derived = seal(tmp_path, _npz(tmp_path / "d.npz", _labels()), kms,
                   model_owner_keys=["arn:aws:kms:us-east-1:111122223333:key/m"])
    with derived.out_path.open("rb") as fh:
        header = read_header(fh)
    assert derived.to_json()["num_classes_source"] == "derived"
    assert header_schema(header).field("label").metadata[NUM_CLASSES_METADATA_KEY] == b"10"
    assert check_job(JobSpec.from_toml(SPEC), header) == []


def test_hermetic_seal_prints_the_class_count_as_the_owners_choice(
    tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    key_id = boto3.client("kms", endpoint_url=kms_url, region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
    src = _npz(tmp_path / "d.npz", (np.arange(50) % 7).astype(np.uint8))
    base = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--key-id", key_id, "--max-epsilon", "1", "--delta", "1e-5", "--owner", "o",
            "--kms-endpoint", kms_url, "--ledger", LEDGER]
    assert main([*base, "--out", str(tmp_path / "a.sealed")]) == 0
    out = capsys.readouterr().out
    assert "column 'label', 7 classes (the largest label + 1; --num-classes declares another)" in out
    assert main([*base, "--out", str(tmp_path / "b.sealed"), "--num-classes", "5"]) == 1
    assert "row 5: label 5 is outside [0, 5)" in capsys.readouterr().err


def test_the_enclave_data_path_refuses_out_of_range_labels_with_a_fixed_text() -> None:
    image = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * 784, dtype=np.uint8)), 784)
    texts = set()
    for bad in ([0, 10, 1], [0, 1, 200], [-3, 1, 2]):
        table = pa.table({"image": image, "label": pa.array(bad, pa.int64())})
        with pytest.raises(UnusableRecords) as info:
            table_arrays(table, "image", "label", 10)
        texts.add(str(info.value))
    missing = pa.table({"image": image, "label": pa.array([0, None, 1], pa.int64())})
    with pytest.raises(UnusableRecords) as info:
        table_arrays(missing, "image", "label", 10)
    texts.add(str(info.value))
    assert texts == {"a label lies outside the declared class range", "a record has a missing feature or label"}
    rows, labels = table_arrays(pa.table({"image": image, "label": pa.array([0, 9, 3], pa.uint8())}),
                                "image", "label", 10)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 9, 3] and rows.shape == (3, 784)
