"""bench.utility's report: the table, the plot file and the epsilon list (no training here)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.utility import EPOCHS, GOALS, MODEL, RECIPES, RunRow, _epsilons, plot, results_markdown
from enclave.training.spec import JobSpec
from parent.local.demo import Recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(eps: float, accuracy: float | None) -> RunRow:
    return RunRow(
        target_epsilon=eps, epsilon=eps - 0.0004, model="scatter2_linear", accuracy=accuracy, steps=293, sigma=2.5,
        sampling_rate=0.1365, minutes=12.5, batch_size=8192, epochs=40.0, lr=4.0, momentum=0.9,
        max_grad_norm=0.1, job_id=f"job-{eps:g}", goal=GOALS.get(eps),
    )


NONPRIVATE = {"model": "scatter2_linear", "accuracy": 0.925, "steps": 293, "batch_size": 8192, "epochs": 40.0,
              "lr": 0.5, "momentum": 0.9, "minutes": 3.0}


def test_table_marks_goals_met_and_missed() -> None:
    text = results_markdown([_row(1.0, 0.87), _row(3.0, 0.899), _row(8.0, None)], NONPRIVATE)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "87.00%" in lines["1"] and "✓" in lines["1"]
    assert "89.90%" in lines["3"] and "✗" in lines["3"]
    assert "n/a" in lines["8"]
    assert "**92.50%**" in text


def test_plot_replaces_the_png_whole(tmp_path: Path) -> None:
    target = tmp_path / "out" / "accuracy_vs_epsilon.png"
    plot([_row(1.0, 0.87), _row(3.0, 0.90)], NONPRIVATE, target)
    first = target.read_bytes()
    assert first.startswith(PNG_MAGIC)
    plot([_row(1.0, 0.87), _row(3.0, 0.91), _row(8.0, 0.92)], None, target)
    assert target.read_bytes().startswith(PNG_MAGIC) and target.read_bytes() != first
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


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
