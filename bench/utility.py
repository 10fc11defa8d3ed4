"""Test accuracy against epsilon on Fashion-MNIST and on diamonds, trained inside the mock enclave.

`python -m bench.utility [--datasets fashion-mnist,diamonds] [--epsilons 1,3,8]
[--out out/bench-utility]` (long: minutes per epsilon; not part of CI). For each
dataset and target epsilon it runs one complete job through the local stack
(`parent.local.jobs.LocalStack`: the data owner seals the training data under the KMS
emulator, a mock enclave decrypts it after attestation and trains with DP-SGD, PRV
accounting at delta 1e-5, the certificate is verified offline) and reads the test
accuracy the enclave released on the public test set. It then trains the same model
non-privately in this process (plain torch: same model and inputs, no clipping or
noise) for each dataset's reference line, and writes

* `results.md`: the table (dataset, epsilon, model, accuracy, steps, sigma, minutes) and goals;
* `results.json`: every run's recipe, certificate figures and timings;
* `accuracy_vs_epsilon.png`: accuracy against epsilon, one panel per dataset, each with
  its non-private accuracy as a line.

Fashion-MNIST is Debian's dataset-fashion-mnist (IDX files, a preset ScatterNet model).
Diamonds is a table shipped in the plotnine wheel, sealed with `hermetic seal`'s schema
flags and trained with an inline model; why that table, its split, schema and public
bounds: `bench.utility_tabular`.

matplotlib (requirements-dev.txt) and plotnine (requirements-bench.txt, for its CSV
file only) are benchmark-only dependencies; never imported by `enclave/` or `parent/`.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import utility_tabular as tabular
from enclave.hazmat.csprng import Csprng
from enclave.training.models import build_model, feature_transform, preprocess
from parent.local.demo import FASHION_MNIST, FASHION_MNIST_TEST, Recipe
from parent.local.jobs import JobOutcome, LocalStack, Progress, SealedDataset
from parent.storage import open_atomic, write_atomic

log = logging.getLogger(__name__)

DELTA = 1e-5
#: Accuracy goals by epsilon, and the wall-clock limit per run.
GOALS = {1.0: 0.86, 3.0: 0.90, 8.0: 0.91}
MINUTES_LIMIT = 30.0
FASHION_MNIST_LABELS = FASHION_MNIST.with_name("train-labels-idx1-ubyte.gz")
FASHION_MNIST_TEST_LABELS = FASHION_MNIST_TEST.with_name("t10k-labels-idx1-ubyte.gz")


#: Epochs per target epsilon, tuned out of the enclave; everything else is the demo's recipe
#: (Tramer & Boneh's ScatterNet + linear: batch 8192, lr 16, momentum 0.9, C 0.1); the tuning
#: runs: bench/RESULTS.md.
EPOCHS = {1.0: 20.0, 3.0: 40.0, 8.0: 80.0}

#: The model every epsilon trains, the demo's: ScatterNet + linear with the J=1 scattering
#: scale joined to the J=2 one (`scatter2_linear`, 5733 features); why this one: bench/RESULTS.md.
MODEL = Recipe().model


def utility_recipe(epsilon: float) -> Recipe:
    """The demo's recipe at `epsilon` (epochs from EPOCHS, else the demo's).

    One evaluation, at the end (only the final model's accuracy is reported), and only
    the final checkpoint.
    """
    demo = Recipe()
    return replace(
        demo,
        epsilon=epsilon,
        delta=DELTA,
        epochs=EPOCHS.get(epsilon, demo.epochs),
        eval_every=100_000_000,
        checkpoint_every=None,
        job_name=f"bench-utility-eps{epsilon:g}",
    )


#: The non-private reference: plain SGD (no clipping or noise) with the recipe's model and
#: batch size for NONPRIVATE_EPOCHS epochs, at a learning rate tuned per model on these
#: features (bench/RESULTS.md).
NONPRIVATE_LR = {"scatter_linear": 1.6, "scatter2_linear": 6.4}
NONPRIVATE_EPOCHS = 40.0

RECIPES: dict[float, Recipe] = {eps: utility_recipe(eps) for eps in sorted(GOALS)}

FASHION = "fashion-mnist"
DATASETS = (FASHION, tabular.NAME)

@dataclass(frozen=True)
class RunRow:
    target_epsilon: float
    epsilon: float
    model: str
    accuracy: float | None
    steps: int
    sigma: float
    sampling_rate: float
    minutes: float
    batch_size: int
    epochs: float
    lr: float
    momentum: float
    max_grad_norm: float
    job_id: str
    goal: float | None
    dataset: str = FASHION

    @classmethod
    def of(cls, recipe: Recipe, outcome: JobOutcome, dataset: str = FASHION) -> RunRow:
        return cls(
            target_epsilon=recipe.epsilon, epsilon=outcome.epsilon, model=recipe.model, accuracy=outcome.accuracy,
            steps=outcome.steps, sigma=outcome.noise_multiplier, sampling_rate=outcome.sampling_rate,
            minutes=outcome.seconds / 60.0, batch_size=recipe.batch_size, epochs=recipe.epochs, lr=recipe.lr,
            momentum=recipe.momentum, max_grad_norm=recipe.max_grad_norm, job_id=outcome.job_id,
            goal=GOALS.get(recipe.epsilon) if dataset == FASHION else None, dataset=dataset,
        )


# --------------------------------------------------------------------------- data


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train pixels [60000, 784], train labels, test pixels [10000, 784], test labels), uint8."""
    return (
        _idx(FASHION_MNIST, 16).reshape(-1, 784), _idx(FASHION_MNIST_LABELS, 8),
        _idx(FASHION_MNIST_TEST, 16).reshape(-1, 784), _idx(FASHION_MNIST_TEST_LABELS, 8),
    )


# --------------------------------------------------------------------------- non-private


def plain_sgd(net: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, lr: float, momentum: float,
              batch_size: int, epochs: float, seed: int = 0) -> int:
    """Train `net` with plain SGD (no clipping, no noise) on shuffled batches; the step count."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    steps = int(round(epochs * n / batch_size))
    order = torch.randperm(n, generator=generator)
    cursor = 0
    net.train()
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(inputs[batch]), labels[batch]).backward()  # type: ignore[no-untyped-call]  # torch leaves backward untyped
        optimizer.step()
    return steps


def heldout_accuracy(net: torch.nn.Module, inputs: torch.Tensor, labels: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(inputs[i : i + 4096]).argmax(1) for i in range(0, len(inputs), 4096)])
    return float((predicted.numpy() == labels).mean())


def nonprivate_accuracy(recipe: Recipe, lr: float, seed: int = 0) -> dict[str, Any]:
    """The same model, batch size and epochs trained with plain SGD (no clipping, no noise)."""
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    began = time.monotonic()
    model = build_model(recipe.model, rng=Csprng(seed.to_bytes(32, "little")))
    transform = feature_transform(recipe.model)
    net = model
    if transform is not None:
        train_in, test_in = transform.features(model, x_train), transform.features(model, x_test)
        net = transform.head(model)
    else:
        train_in, test_in = preprocess(recipe.model, x_train), preprocess(recipe.model, x_test)
    steps = plain_sgd(net, train_in, torch.from_numpy(y_train.astype(np.int64)), lr=lr, momentum=recipe.momentum,
                      batch_size=recipe.batch_size, epochs=recipe.epochs, seed=seed)
    return {"dataset": FASHION, "model": recipe.model, "accuracy": heldout_accuracy(net, test_in, y_test),
            "steps": steps, "batch_size": recipe.batch_size, "epochs": recipe.epochs, "lr": lr,
            "momentum": recipe.momentum, "minutes": (time.monotonic() - began) / 60.0}


def nonprivate_tabular(train_csv: Path, test_csv: Path, seed: int = 0) -> dict[str, Any]:
    """The diamonds model and inputs of the private runs, trained with plain SGD (no clipping, no noise)."""
    began = time.monotonic()
    spec = replace(tabular.recipe(max(tabular.EPOCHS), DELTA), batch_size=tabular.NONPRIVATE_BATCH)
    inputs = tabular.nonprivate_inputs(train_csv, test_csv, tabular.spec_toml(spec, "unused"), seed)
    steps = plain_sgd(inputs.model, inputs.x_train, inputs.y_train, lr=tabular.NONPRIVATE_LR,
                      momentum=spec.momentum, batch_size=spec.batch_size, epochs=NONPRIVATE_EPOCHS, seed=seed)
    return {"dataset": tabular.NAME, "model": spec.model,
            "accuracy": heldout_accuracy(inputs.model, inputs.x_test, inputs.y_test.numpy()), "steps": steps,
            "batch_size": spec.batch_size, "epochs": NONPRIVATE_EPOCHS, "lr": tabular.NONPRIVATE_LR,
            "momentum": spec.momentum, "minutes": (time.monotonic() - began) / 60.0}


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, pattern: str = "{:.2%}") -> str:
    return "n/a" if value is None else pattern.format(value)


#: The reference accuracies by dataset: {dataset: the dict nonprivate_accuracy or nonprivate_tabular returns}.
References = dict[str, dict[str, Any]]


def references_of(saved: dict[str, Any] | None) -> References:
    """results.json's "nonprivate": by dataset; a file written before diamonds holds Fashion-MNIST's alone."""
    if not saved:
        return {}
    if "accuracy" in saved:
        return {FASHION: saved}
    return dict(saved)


def table_row(r: RunRow) -> str:
    met = "" if r.goal is None or r.accuracy is None else (" ✓" if r.accuracy >= r.goal else " ✗")
    return (f"| {r.dataset} | {r.target_epsilon:g} | {r.epsilon:.4f} | {r.model} | {_fmt(r.accuracy)} "
            f"| {_fmt(r.goal, '{:.0%}')}{met} "
            f"| {r.steps} | {r.sigma:.4f} | {r.sampling_rate:.4f} | {r.batch_size} | {r.epochs:g} | {r.lr:g} "
            f"| {r.minutes:.1f}{' ✗' if r.minutes > MINUTES_LIMIT else ''} |")


def _reference_line(dataset: str, ref: dict[str, Any]) -> str:
    return (f"Non-private reference, {dataset} ({ref['model']}, plain SGD, batch {ref['batch_size']}, "
            f"{ref['epochs']:g} epochs, lr {ref['lr']:g}, momentum {ref['momentum']:g}, "
            f"no clipping or noise, trained in-process): **{ref['accuracy']:.2%}** ({ref['minutes']:.1f} min).")


def results_markdown(rows: list[RunRow], nonprivate: References) -> str:
    lines = [
        "# Test accuracy against epsilon (mock enclave, DP-SGD, PRV accounting, delta 1e-5)",
        "",
        "| dataset | epsilon (target) | epsilon (certified) | model | accuracy | goal | steps | sigma | q | batch "
        "| epochs | lr | minutes |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(table_row(r) for r in rows),
    ]
    for dataset, ref in nonprivate.items():
        lines += ["", _reference_line(dataset, ref)]
    goals = ", ".join(f"{g:.0%} at epsilon {e:g}" for e, g in GOALS.items())
    lines += ["", f"Accuracy goals (Fashion-MNIST): {goals}, each run under {MINUTES_LIMIT:g} minutes.", ""]
    return "\n".join(lines)


def _accuracy(row: RunRow) -> float:
    assert row.accuracy is not None
    return float(row.accuracy)


def _panel(ax: Any, dataset: str, rows: list[RunRow], reference: dict[str, Any] | None) -> None:
    """One dataset's accuracy against epsilon, its goals (Fashion-MNIST's) and its non-private line."""
    import matplotlib.ticker

    done = [r for r in rows if r.accuracy is not None]
    if done:
        ax.plot([r.epsilon for r in done], [100 * _accuracy(r) for r in done], "o-", color="tab:blue",
                label=f"DP-SGD in the mock enclave ({done[0].model})")
        for r in done:
            ax.annotate(f"{100 * _accuracy(r):.2f}%", (r.epsilon, 100 * _accuracy(r)),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    goals = [(e, g) for e, g in GOALS.items() if dataset == FASHION and any(r.target_epsilon == e for r in rows)]
    if goals:
        ax.plot([e for e, _ in goals], [100 * g for _, g in goals], "x", color="tab:red", label="accuracy goal")
    if reference is not None:
        ax.axhline(100 * reference["accuracy"], color="tab:gray", linestyle="--",
                   label=f"non-private ({100 * reference['accuracy']:.2f}%)")
    ax.set_xscale("log")
    ticks = sorted({r.target_epsilon for r in rows} | set(GOALS))
    ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    values = [100 * _accuracy(r) for r in done] + [100 * g for _, g in goals]
    if reference is not None:
        values.append(100 * reference["accuracy"])
    if values:
        ax.set_ylim(min(values) - 2.0, max(values) + 1.0)
    ax.set_xlabel("epsilon (PRV accountant, delta = 1e-5)")
    ax.set_ylabel(f"{dataset} test accuracy (%)")
    ax.set_title(dataset)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def plot(rows: list[RunRow], nonprivate: References, path: Path) -> None:
    """One panel per dataset that has a run or a reference, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if d in nonprivate or any(r.dataset == d for r in rows)] or [FASHION]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.2), dpi=120, squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        _panel(ax, dataset, [r for r in rows if r.dataset == dataset], nonprivate.get(dataset))
    fig.suptitle("Hermetic: accuracy against privacy")
    fig.tight_layout()
    with open_atomic(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


# --------------------------------------------------------------------------- runs


def _progress() -> Progress:
    last = [0.0]

    def progress(step: int, total: int, eps: float) -> None:
        if time.monotonic() - last[0] > 30 or step == total:
            last[0] = time.monotonic()
            print(f"  step {step}/{total}, epsilon {eps:.3f}", flush=True)

    return progress


def _report(outcome: JobOutcome) -> None:
    print(f"  -> accuracy {_fmt(outcome.accuracy)}, certified epsilon {outcome.epsilon:.4f}, "
          f"sigma {outcome.noise_multiplier:.4f}, {outcome.seconds / 60:.1f} min", flush=True)


def _announce(sealed: SealedDataset, dataset: str, recipe: Recipe) -> None:
    print(f"sealed {dataset}: {sealed.records} records, budget epsilon {sealed.max_epsilon:g}", flush=True)
    print(f"epsilon {recipe.epsilon:g}: {recipe.model}, batch {recipe.batch_size}, {recipe.epochs:g} epochs, "
          f"lr {recipe.lr:g}, momentum {recipe.momentum:g}, C {recipe.max_grad_norm:g}", flush=True)


def run_fashion(stack: LocalStack, recipe: Recipe) -> RunRow:
    # The runs are alternatives, not one history: each gets its own sealed copy, whose fresh data key
    # (and so ledger key) starts its own budget ledger; one shared copy's ledger would refuse the later runs.
    sealed = stack.seal(FASHION_MNIST, max_epsilon=recipe.epsilon, delta=DELTA)
    _announce(sealed, FASHION, recipe)
    outcome = stack.train(recipe.spec_toml(stack.model_key), sealed, f"eps{recipe.epsilon:g}", progress=_progress())
    _report(outcome)
    return RunRow.of(recipe, outcome)


def run_tabular(stack: LocalStack, recipe: Recipe, train_csv: Path, test_csv: Path) -> RunRow:
    # A fresh sealed copy per run, for the reason run_fashion gives.
    sealed = stack.seal(train_csv, max_epsilon=recipe.epsilon, delta=DELTA, schema_flags=tabular.seal_flags())
    _announce(sealed, tabular.NAME, recipe)
    outcome = stack.train(tabular.spec_toml(recipe, stack.model_key), sealed, f"{tabular.NAME}-eps{recipe.epsilon:g}",
                          public=test_csv, public_name=tabular.PUBLIC_NAME, progress=_progress())
    _report(outcome)
    return RunRow.of(recipe, outcome, tabular.NAME)


# --------------------------------------------------------------------------- main


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not (0 < v < 100) for v in values):
        raise argparse.ArgumentTypeError(f"epsilons must be in (0, 100), got {text!r}")
    return values


def _datasets(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in DATASETS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"datasets are a comma-separated subset of {','.join(DATASETS)}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(values))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.utility", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=_datasets, default=list(DATASETS),
                        help=f"comma-separated, default {','.join(DATASETS)}")
    parser.add_argument("--epsilons", type=_epsilons, default=sorted(RECIPES), help="comma-separated, default 1,3,8")
    parser.add_argument("--model", default=None, help="Fashion-MNIST: registered model (default: each recipe's)")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipes' epochs")
    parser.add_argument("--out", type=Path, default=Path("out/bench-utility"))
    parser.add_argument("--nonprivate-lr", type=float, default=None,
                        help="Fashion-MNIST: plain-SGD learning rate for the reference "
                             "(default: tuned per model, else lr x C)")
    parser.add_argument("--skip-nonprivate", action="store_true", help="omit the non-private references")
    parser.add_argument("--replot", action="store_true",
                        help="only rewrite results.md and the PNG from OUT/results.json")
    return parser


def _fashion_recipes(args: argparse.Namespace) -> list[Recipe]:
    recipes = []
    for eps in args.epsilons:
        recipe = RECIPES.get(eps, utility_recipe(eps))
        if args.model:
            recipe = replace(recipe, model=args.model)
        if args.epochs:
            recipe = replace(recipe, epochs=args.epochs)
        recipes.append(recipe)
    return recipes


def _tabular_recipes(args: argparse.Namespace) -> list[Recipe]:
    recipes = [tabular.recipe(eps, DELTA) for eps in args.epsilons]
    return [replace(r, epochs=args.epochs) for r in recipes] if args.epochs else recipes


def _replot(out: Path) -> int:
    saved = json.loads((out / "results.json").read_text())
    rows = [RunRow(**r) for r in saved["runs"]]
    nonprivate = references_of(saved.get("nonprivate"))
    _write_text(out / "results.md", results_markdown(rows, nonprivate))
    plot(rows, nonprivate, out / "accuracy_vs_epsilon.png")
    return 0


def _missing(datasets: list[str]) -> str | None:
    if FASHION in datasets and not FASHION_MNIST.exists():
        return f"{FASHION_MNIST} is missing (make dataset)"
    if tabular.NAME in datasets:
        try:
            tabular.diamonds_csv()
        except tabular.DiamondsMissing as err:
            return str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.replot:
        return _replot(args.out)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    missing = _missing(args.datasets)
    if missing is not None:
        print(f"bench-utility: {missing}", file=sys.stderr)
        return 1
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[RunRow] = []
    nonprivate: References = {}

    def save() -> None:
        payload = {"delta": DELTA, "accountant": "prv", "goals": {f"{e:g}": g for e, g in GOALS.items()},
                   "minutes_limit": MINUTES_LIMIT, "runs": [asdict(r) for r in rows], "nonprivate": nonprivate}
        _write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
        _write_text(out / "results.md", results_markdown(rows, nonprivate))
        plot(rows, nonprivate, out / "accuracy_vs_epsilon.png")

    fashion = _fashion_recipes(args) if FASHION in args.datasets else []
    split = tabular.write_split(tabular.diamonds_csv(), out) if tabular.NAME in args.datasets else None
    with LocalStack(out / "stack") as stack:
        for recipe in fashion:
            rows.append(run_fashion(stack, recipe))
            save()
        if split is not None:
            for job in _tabular_recipes(args):
                rows.append(run_tabular(stack, job, *split))
                save()
    if not args.skip_nonprivate:
        _references(args, fashion, split, nonprivate)
    save()
    print(results_markdown(rows, nonprivate))
    print(json.dumps({"bench": "utility", "runs": [asdict(r) for r in rows], "nonprivate": nonprivate}))
    return 0


def _references(args: argparse.Namespace, fashion: list[Recipe], split: tuple[Path, Path] | None,
                into: References) -> None:
    if fashion:
        base = replace(fashion[-1], epochs=NONPRIVATE_EPOCHS)
        lr = args.nonprivate_lr
        if lr is None:
            lr = NONPRIVATE_LR.get(base.model, base.lr * base.max_grad_norm)
        into[FASHION] = nonprivate_accuracy(base, lr)
    if split is not None:
        into[tabular.NAME] = nonprivate_tabular(*split)
    for dataset, ref in into.items():
        print(f"non-private {dataset} {ref['model']}: accuracy {ref['accuracy']:.2%} ({ref['minutes']:.1f} min)",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
