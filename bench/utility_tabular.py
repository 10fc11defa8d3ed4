"""The tabular dataset of `bench.utility`: diamonds, cut (5 classes) from the other columns.

Why diamonds: a real table (53,940 round diamonds, ggplot2's `diamonds`) that a
well-kept PyPI package ships as a plain file, `plotnine/data/diamonds.csv` in the
`plotnine` wheel (pinned in requirements-bench.txt, installed by `make bench-utility`
only), so nothing is downloaded at run time; it mixes numeric columns (carat, depth,
table, price, x, y, z) with categorical ones (color, clarity), which exercises both
halves of the tabular encoding; and it is large enough (43,152 training rows) for
DP-SGD to reach useful accuracy at epsilon 1. The task, `cut` (Fair, Good, Very Good,
Premium, Ideal), is a real five-class problem: a cut is graded from the stone's
proportions, which depth and table measure, not from its price. statsmodels' `fair` (6,366 rows,
binary) was the smaller fallback; it was not needed. The CSV is read from the
installed distribution's files; plotnine itself (matplotlib, pandas, statsmodels) is
never imported.

The private run goes through the product as a data owner would run it: a fixed-seed
80/20 split written as two CSV files, the training file sealed with `hermetic seal`'s
schema flags (`seal_flags`), a job spec in the declarative model format (`spec_toml`),
and the test file given to the job as public evaluation data, which the parent
re-encodes by the sealed file's public schema.

Every numeric bound is a constant written here, never computed from the rows: the
value ranges of ggplot2's published documentation of the table, rounded outward. The
sealer refuses a value outside its declared bounds, so the sealed bounds hold the
documented outliers (a width of 58.9 mm, a depth of 31.8 mm). The job's `[data.scale]`
then narrows, by domain knowledge rather than the data: y and z to what a stone of up
to five carats measures (about 11 mm across, 7 mm deep), and the depth and table
percentages to 55..70 and 50..70, since a cut grade turns on a point or two of them
and stones outside those ranges are badly cut whatever the exact value. Clipping the
few outliers keeps every ordinary stone from being squeezed into a sliver of [0, 1];
the tuning that showed it matters: bench/RESULTS.md.
"""
from __future__ import annotations

import csv
import importlib.metadata
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from enclave.training.jobmodel import job_model_for_schema
from enclave.training.spec import JobSpec
from parent.datasets import open_dataset
from parent.datasets.schema import SchemaDeclaration, SealPlan, declaration_from_flags, plan_schema, public_plan
from parent.local.demo import Recipe
from parent.storage import write_atomic

NAME = "diamonds"
PUBLIC_NAME = "diamonds-test"
DISTRIBUTION = "plotnine"
CSV_IN_DISTRIBUTION = "plotnine/data/diamonds.csv"

LABEL = "cut"
CUTS = ("Fair", "Good", "Very Good", "Premium", "Ideal")
#: Categorical columns and their vocabularies (GIA colour grades D best to J; clarity I1 worst to IF).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "color": ("D", "E", "F", "G", "H", "I", "J"),
    "clarity": ("I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"),
}
#: Sealed bounds: ggplot2's documented ranges rounded outward (carat 0.2-5.01, depth 43-79%, table
#: 43-95%, price $326-$18,823, x 0-10.74, y 0-58.9, z 0-31.8 mm).
BOUNDS: dict[str, tuple[int, int]] = {
    "carat": (0, 6), "depth": (40, 80), "table": (40, 100), "price": (0, 20_000),
    "x": (0, 11), "y": (0, 60), "z": (0, 32),
}
#: The job's scaling bounds where narrower than the sealed ones, by domain knowledge (see above).
SCALE: dict[str, tuple[int, int]] = {"depth": (55, 70), "table": (50, 70), "y": (0, 11), "z": (0, 7)}
FEATURES = (*BOUNDS, *CATEGORIES)

SPLIT_SEED = 20_240_607
TEST_FRACTION = 0.2
HIDDEN = 64


class DiamondsMissing(FileNotFoundError):
    """plotnine (requirements-bench.txt) is not installed, so its diamonds CSV is not either."""


def diamonds_csv() -> Path:
    """The diamonds CSV inside the installed plotnine distribution (the package is not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(CSV_IN_DISTRIBUTION)))
    except importlib.metadata.PackageNotFoundError:
        raise DiamondsMissing(f"{DISTRIBUTION} is not installed: pip install -r requirements-bench.txt "
                              "(make bench-utility does)") from None
    if not path.is_file():
        raise DiamondsMissing(f"{path} is missing from the installed {DISTRIBUTION}")
    return path


# --------------------------------------------------------------------------- split


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file, every field as written."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [row for row in reader if row]


def split_rows(rows: Sequence[list[str]], seed: int = SPLIT_SEED,
               test_fraction: float = TEST_FRACTION) -> tuple[list[list[str]], list[list[str]]]:
    """(train, test): a permutation by `seed`, the last `test_fraction` of it the test rows."""
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = len(rows) - int(round(test_fraction * len(rows)))
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    sink = io.StringIO()
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return sink.getvalue()


def write_split(source: Path, out_dir: Path) -> tuple[Path, Path]:
    """The train and test CSV files of `source` in `out_dir`."""
    header, rows = read_table(source)
    train, test = split_rows(rows)
    paths = out_dir / f"{NAME}-train.csv", out_dir / f"{NAME}-test.csv"
    for path, part in zip(paths, (train, test), strict=True):
        write_atomic(path, csv_text(header, part).encode())
    return paths


# --------------------------------------------------------------------------- schema and spec


def _numeric_specs() -> list[str]:
    return [f"{name}:{lo}:{hi}" for name, (lo, hi) in BOUNDS.items()]


def _categorical_specs() -> list[str]:
    return [f"{name}={'|'.join(values)}" for name, values in CATEGORIES.items()]


def seal_flags() -> list[str]:
    """`hermetic seal`'s public-schema flags for the diamonds training file."""
    flags = ["--label", LABEL, "--classes", ",".join(CUTS)]
    for spec in _numeric_specs():
        flags += ["--numeric", spec]
    for spec in _categorical_specs():
        flags += ["--categorical", spec]
    return flags


def declaration() -> SchemaDeclaration:
    """The schema `seal_flags` declare, as `hermetic seal` parses them."""
    return declaration_from_flags(numeric=_numeric_specs(), categorical=_categorical_specs(), label=LABEL,
                                  classes=",".join(CUTS))


MODEL = f"mlp{HIDDEN}x2"


def _model_and_data() -> str:
    """The [model] section's body, an inline MLP (HIDDEN, ReLU, HIDDEN, ReLU, the classes), and [data]."""
    features = ", ".join(f'"{f}"' for f in FEATURES)
    scale = "\n".join(f"{name} = {{ lo = {lo}, hi = {hi} }}" for name, (lo, hi) in SCALE.items())
    layers = (f'[{{ type = "linear", out = {HIDDEN} }}, {{ type = "relu" }}, '
              f'{{ type = "linear", out = {HIDDEN} }}, {{ type = "relu" }}, {{ type = "linear" }}]')
    return f"""format = 1
layers = {layers}

[data]
features = [{features}]
label = "{LABEL}"

[data.scale]
{scale}
"""


def spec_toml(recipe: Recipe, key_id: str) -> str:
    """The diamonds job: `recipe`'s optimizer and privacy settings, the inline model, public test set."""
    return recipe.spec_toml(key_id, model=_model_and_data(), public=PUBLIC_NAME)


#: Epochs per target epsilon; SGD at batch 1024, lr 0.5, momentum 0.9, C 1 for every epsilon. Tuned
#: out of the enclave and with a few quick DP runs (bench/RESULTS.md).
EPOCHS = {1.0: 20.0, 3.0: 30.0, 8.0: 40.0}
#: The non-private reference's batch and learning rate (plain SGD, momentum 0.9), tuned likewise.
NONPRIVATE_BATCH = 256
NONPRIVATE_LR = 0.2


def recipe(epsilon: float, delta: float) -> Recipe:
    """The diamonds job at `epsilon` (30 epochs at an epsilon EPOCHS lacks); one evaluation, at the end,
    and only the final checkpoint."""
    return Recipe(model=MODEL, batch_size=1024, epochs=EPOCHS.get(epsilon, 30.0), lr=0.5, momentum=0.9,
                  max_grad_norm=1.0, epsilon=epsilon, delta=delta, eval_every=100_000_000, checkpoint_every=None,
                  job_name=f"bench-utility-{NAME}-eps{epsilon:g}")


# --------------------------------------------------------------------------- non-private inputs


def _encoded(path: Path, plan: SealPlan) -> pa.Table:
    reader = open_dataset(path)
    batches, rows = [], 0
    for batch in reader.iter_batches():
        batches.append(plan.convert(batch, rows))
        rows += batch.num_rows
    return pa.Table.from_batches(batches, schema=plan.schema)


@dataclass(frozen=True)
class TabularInputs:
    """What the enclave would train and evaluate on, built on the host from the same files and spec."""

    model: torch.nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def nonprivate_inputs(train_csv: Path, test_csv: Path, spec_toml: str, seed: int = 0) -> TabularInputs:
    """The spec's model and inputs, encoded as the sealer (train) and the public loader (test) encode them."""
    plan, _ = plan_schema(open_dataset(train_csv).schema(), declaration()).scan([])
    train = _encoded(train_csv, plan)
    test = _encoded(test_csv, public_plan(open_dataset(test_csv).schema(), plan.public))
    job = job_model_for_schema(JobSpec.from_toml(spec_toml), plan.schema)
    assert job.tabular is not None and job.target is not None
    model = job.build(torch.Generator().manual_seed(seed))
    return TabularInputs(model, job.tabular.assemble([train]), job.target.values(train),
                         job.tabular.assemble([test]), job.target.values(test))
