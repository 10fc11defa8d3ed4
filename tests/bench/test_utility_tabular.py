"""bench.utility_tabular: the split, the seal flags, the job spec and the reference's inputs (no training here).

Everything but the last test runs on a few made-up diamonds; that one reads plotnine's
CSV and is skipped where requirements-bench.txt is not installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import utility_tabular as tabular
from enclave.training.spec import JobSpec
from parent.cli import build_parser
from parent.datasets import open_dataset
from parent.datasets.schema import declaration_from_flags, plan_schema

HEADER = ["carat", "cut", "color", "clarity", "depth", "table", "price", "x", "y", "z"]
KEY = "arn:aws:kms:us-east-1:111122223333:key/model"


def _diamonds(count: int, seed: int = 5) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[f"{rng.uniform(0.2, 3):.2f}", tabular.CUTS[i % 5], tabular.CATEGORIES["color"][i % 7],
             tabular.CATEGORIES["clarity"][i % 8], f"{rng.uniform(55, 70):.1f}", f"{rng.uniform(50, 70):.0f}",
             str(int(rng.integers(326, 18_823))), f"{rng.uniform(3, 9):.2f}", f"{rng.uniform(3, 9):.2f}",
             f"{rng.uniform(2, 6):.2f}"] for i in range(count)]


def _csv(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "diamonds.csv"
    path.write_text(tabular.csv_text(HEADER, rows))
    return path


def test_the_split_is_fixed_by_the_seed_and_partitions_the_rows() -> None:
    rows = [[str(i)] for i in range(1000)]
    train, test = tabular.split_rows(rows)
    assert (train, test) == tabular.split_rows(rows)
    assert (len(train), len(test)) == (800, 200)
    assert sorted(int(r[0]) for r in train + test) == list(range(1000))
    assert tabular.split_rows(rows, seed=1) != (train, test)


def test_write_split_keeps_the_header_and_every_field_as_written(tmp_path: Path) -> None:
    rows = _diamonds(50)
    rows[0][1] = "Very Good"  # a class name with a space, quoted or not, must come back whole
    out = tmp_path / "out"
    out.mkdir()
    train, test = tabular.write_split(_csv(tmp_path, rows), out)
    first = train.read_bytes(), test.read_bytes()
    header_train, rows_train = tabular.read_table(train)
    header_test, rows_test = tabular.read_table(test)
    assert header_train == header_test == HEADER
    assert sorted(rows_train + rows_test) == sorted(rows) and len(rows_test) == 10
    assert tabular.write_split(_csv(tmp_path, rows), out) == (train, test)
    assert (train.read_bytes(), test.read_bytes()) == first


def test_the_seal_flags_parse_as_hermetic_seal_parses_them() -> None:
    args = build_parser().parse_args(["seal", "diamonds-train.csv", "--out", "d.sealed", "--max-epsilon", "1",
                                      "--delta", "1e-5", *tabular.seal_flags()])
    parsed = declaration_from_flags(numeric=args.numeric, categorical=args.categorical, label=args.label_column,
                                    classes=args.classes)
    assert parsed == tabular.declaration()
    assert parsed.label.classes == ("Fair", "Good", "Very Good", "Premium", "Ideal")
    assert {name: (d.lo, d.hi) for name, d in parsed.columns.items() if name in tabular.BOUNDS} == tabular.BOUNDS


def test_the_spec_is_an_inline_mlp_over_every_feature_with_public_scales() -> None:
    recipe = tabular.recipe(3.0, 1e-5)
    spec = JobSpec.from_toml(tabular.spec_toml(recipe, KEY))
    assert spec.model.name is None and spec.model.inline is not None
    assert spec.data.columns == tabular.FEATURES and spec.data.label == "cut"
    assert spec.privacy.target_epsilon == 3.0 and spec.privacy.expected_batch_size == recipe.batch_size
    for name, (lo, hi) in tabular.SCALE.items():
        scale = spec.data.scale_of(name)
        assert scale is not None and (scale.lo, scale.hi) == (lo, hi)
        assert tabular.BOUNDS[name][0] <= lo < hi <= tabular.BOUNDS[name][1]  # narrower than the sealed bounds


def test_the_reference_inputs_are_the_jobs_encoding(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    train, test = tabular.write_split(_csv(tmp_path, _diamonds(100)), out)
    inputs = tabular.nonprivate_inputs(train, test, tabular.spec_toml(tabular.recipe(1.0, 1e-5), KEY))
    width = len(tabular.BOUNDS) + sum(len(v) for v in tabular.CATEGORIES.values())
    assert tuple(inputs.x_train.shape) == (80, width) and tuple(inputs.x_test.shape) == (20, width)
    assert float(inputs.x_train.min()) >= 0.0 and float(inputs.x_train.max()) <= 1.0
    # One hot per categorical block, every row.
    assert (inputs.x_train[:, len(tabular.BOUNDS):].sum(1) == len(tabular.CATEGORIES)).all()
    cuts = [tabular.CUTS.index(r[1]) for r in tabular.read_table(train)[1]]
    assert inputs.y_train.tolist() == cuts
    assert tuple(inputs.model(inputs.x_test).shape) == (20, len(tabular.CUTS))


def test_plotnines_diamonds_fit_the_declared_schema() -> None:
    try:
        path = tabular.diamonds_csv()
    except tabular.DiamondsMissing as err:
        pytest.skip(str(err))
    reader = open_dataset(path)
    plan, rows = plan_schema(reader.schema(), tabular.declaration()).scan(reader.iter_batches())
    assert rows == 53_940
    assert {c.name for c in plan.public} == {*tabular.FEATURES, tabular.LABEL}
