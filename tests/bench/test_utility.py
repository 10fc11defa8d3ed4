"""bench.utility's report: the table, the plot file, the epsilon and dataset lists (no training here)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.utility import (
    DATASETS,
    EPOCHS,
    FASHION,
    GOALS,
    MODEL,
    RECIPES,
    RunRow,
    _datasets,
    _epsilons,
    plot,
    references_of,
    results_markdown,
)
from enclave.training.spec import JobSpec
from parent.local.demo import Recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(eps: float, accuracy: float | None, dataset: str = FASHION) -> RunRow:
    return RunRow(
        target_epsilon=eps, epsilon=eps - 0.0004, model="scatter2_linear", accuracy=accuracy, steps=293, sigma=2.5,
        sampling_rate=0.1365, minutes=12.5, batch_size=8192, epochs=40.0, lr=4.0, momentum=0.9,
        max_grad_norm=0.1, job_id=f"job-{eps:g}", goal=GOALS.get(eps) if dataset == FASHION else None,
        dataset=dataset,
    )


NONPRIVATE = {"model": "scatter2_linear", "accuracy": 0.925, "steps": 293, "batch_size": 8192, "epochs": 40.0,
              "lr": 0.5, "momentum": 0.9, "minutes": 3.0}
DIAMONDS = {"model": "mlp64x2", "accuracy": 0.7216, "steps": 6742, "batch_size": 256, "epochs": 40.0,
            "lr": 0.2, "momentum": 0.9, "minutes": 0.5}


def _table(text: str) -> dict[tuple[str, str], str]:
    """The table's rows by (dataset, target epsilon)."""
    cells = [line.split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {(c[1].strip(), c[2].strip()): "|".join(c) for c in cells[1:]}


def test_table_marks_goals_met_and_missed() -> None:
    text = results_markdown([_row(1.0, 0.87), _row(3.0, 0.899), _row(8.0, None)], {FASHION: NONPRIVATE})
    lines = _table(text)
    assert "87.00%" in lines[FASHION, "1"] and "✓" in lines[FASHION, "1"]
    assert "89.90%" in lines[FASHION, "3"] and "✗" in lines[FASHION, "3"]
    assert "n/a" in lines[FASHION, "8"]
    assert "**92.50%**" in text


def test_table_holds_both_datasets_each_with_its_reference() -> None:
    rows = [_row(1.0, 0.87), _row(1.0, 0.6778, "diamonds"), _row(8.0, 0.7134, "diamonds")]
    text = results_markdown(rows, {FASHION: NONPRIVATE, "diamonds": DIAMONDS})
    lines = _table(text)
    assert set(lines) == {(FASHION, "1"), ("diamonds", "1"), ("diamonds", "8")}
    assert "67.78%" in lines["diamonds", "1"] and "✓" not in lines["diamonds", "1"]  # goals are Fashion-MNIST's
    assert "Non-private reference, diamonds (mlp64x2" in text and "**72.16%**" in text and "**92.50%**" in text


def test_results_json_before_diamonds_is_fashion_mnists_reference() -> None:
    assert references_of(NONPRIVATE) == {FASHION: NONPRIVATE}
    assert references_of({"diamonds": DIAMONDS}) == {"diamonds": DIAMONDS}
    assert references_of(None) == {}
    old = {k: v for k, v in vars(_row(1.0, 0.87)).items() if k != "dataset"}
    assert RunRow(**old).dataset == FASHION


def test_plot_replaces_the_png_whole(tmp_path: Path) -> None:
    target = tmp_path / "out" / "accuracy_vs_epsilon.png"
    plot([_row(1.0, 0.87), _row(3.0, 0.90)], {FASHION: NONPRIVATE}, target)
    first = target.read_bytes()
    assert first.startswith(PNG_MAGIC)
    plot([_row(1.0, 0.87), _row(3.0, 0.91), _row(8.0, 0.92)], {}, target)
    assert target.read_bytes().startswith(PNG_MAGIC) and target.read_bytes() != first
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


def test_plot_draws_a_panel_per_dataset(tmp_path: Path) -> None:
    import matplotlib.image

    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plot([_row(1.0, 0.87)], {FASHION: NONPRIVATE}, one)
    plot([_row(1.0, 0.87), _row(1.0, 0.68, "diamonds")], {FASHION: NONPRIVATE, "diamonds": DIAMONDS}, two)
    height, width = matplotlib.image.imread(one).shape[:2]
    assert matplotlib.image.imread(two).shape[:2] == (height, 2 * width)


@pytest.mark.parametrize("text, expected", [("diamonds", ["diamonds"]), ("diamonds,fashion-mnist,diamonds",
                                                                          ["diamonds", FASHION])])
def test_datasets_parse(text: str, expected: list[str]) -> None:
    assert _datasets(text) == expected and set(DATASETS) == {FASHION, "diamonds"}


@pytest.mark.parametrize("text", ["", "mnist", "diamonds,adult"])
def test_datasets_refuse(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _datasets(text)


@pytest.mark.parametrize("text, expected", [("1,3,8", [1.0, 3.0, 8.0]), ("2.5", [2.5])])
def test_epsilons_parse(text: str, expected: list[float]) -> None:
    assert _epsilons(text) == expected


@pytest.mark.parametrize("text", ["", "0", "1,x", "100"])
def test_epsilons_refuse(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _epsilons(text)


def test_every_epsilon_trains_the_two_scale_scatternet_with_the_demo_recipe() -> None:
    demo = Recipe()
    for eps, recipe in RECIPES.items():
        assert recipe.model == MODEL == "scatter2_linear"
        assert (recipe.epsilon, recipe.epochs) == (eps, EPOCHS[eps])
        assert (recipe.batch_size, recipe.lr, recipe.momentum, recipe.max_grad_norm) == (
            demo.batch_size, demo.lr, demo.momentum, demo.max_grad_norm)
        spec = JobSpec.from_toml(recipe.spec_toml("arn:aws:kms:us-east-1:111122223333:key/model"))
        assert spec.model.name == "scatter2_linear" and spec.privacy.target_epsilon == eps
