"""Test accuracy against epsilon on Fashion-MNIST, trained inside the mock enclave.

`python -m bench.utility [--epsilons 1,3,8] [--out out/bench-utility]` (long: minutes
per epsilon; not part of CI). For each target epsilon it runs one complete job through
the local stack (`parent.local.jobs.LocalStack`: data owner seals Fashion-MNIST under
the KMS emulator, a mock enclave decrypts it after attestation and trains with
DP-SGD, PRV accounting at delta 1e-5, the certificate is verified offline) and reads the
test accuracy the enclave released on the public test set. It then trains the same
model non-privately in this process (plain torch: same model, batches and epochs, no
clipping or noise) for the reference line, and writes

* `results.md`: the table (epsilon, model, accuracy, steps, sigma, minutes) and goals;
* `results.json`: every run's recipe, certificate figures and timings;
* `accuracy_vs_epsilon.png`: accuracy against epsilon, non-private accuracy as a line.

matplotlib is a benchmark-only dependency (requirements-dev.txt); never imported by
`enclave/` or `parent/`.
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

from enclave.hazmat.csprng import Csprng
from enclave.training.models import build_model, feature_transform, preprocess
from parent.local.demo import FASHION_MNIST, FASHION_MNIST_TEST, Recipe
from parent.local.jobs import JobOutcome, LocalStack
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

    @classmethod
    def of(cls, recipe: Recipe, outcome: JobOutcome) -> RunRow:
        return cls(
            target_epsilon=recipe.epsilon, epsilon=outcome.epsilon, model=recipe.model, accuracy=outcome.accuracy,
            steps=outcome.steps, sigma=outcome.noise_multiplier, sampling_rate=outcome.sampling_rate,
            minutes=outcome.seconds / 60.0, batch_size=recipe.batch_size, epochs=recipe.epochs, lr=recipe.lr,
            momentum=recipe.momentum, max_grad_norm=recipe.max_grad_norm, job_id=outcome.job_id,
            goal=GOALS.get(recipe.epsilon),
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
    labels = torch.from_numpy(y_train.astype(np.int64))
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=recipe.momentum)
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    steps = int(round(recipe.epochs * n / recipe.batch_size))
    order = torch.randperm(n, generator=generator)
    cursor = 0
    net.train()
    for _ in range(steps):
        if cursor + recipe.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        batch = order[cursor : cursor + recipe.batch_size]
        cursor += recipe.batch_size
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(train_in[batch]), labels[batch]).backward()  # type: ignore[no-untyped-call]  # torch leaves backward untyped
        optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(test_in[i : i + 4096]).argmax(1) for i in range(0, len(test_in), 4096)])
    accuracy = float((predicted.numpy() == y_test).mean())
    return {"model": recipe.model, "accuracy": accuracy, "steps": steps, "batch_size": recipe.batch_size,
            "epochs": recipe.epochs, "lr": lr, "momentum": recipe.momentum,
            "minutes": (time.monotonic() - began) / 60.0}


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, pattern: str = "{:.2%}") -> str:
    return "n/a" if value is None else pattern.format(value)


def results_markdown(rows: list[RunRow], nonprivate: dict[str, Any] | None) -> str:
    lines = [
        "# Fashion-MNIST test accuracy against epsilon (mock enclave, DP-SGD, PRV accounting, delta 1e-5)",
        "",
        "| epsilon (target) | epsilon (certified) | model | accuracy | goal | steps | sigma | q | batch | epochs "
        "| lr | minutes |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        met = "" if r.goal is None or r.accuracy is None else (" ✓" if r.accuracy >= r.goal else " ✗")
        lines.append(
            f"| {r.target_epsilon:g} | {r.epsilon:.4f} | {r.model} | {_fmt(r.accuracy)} "
            f"| {_fmt(r.goal, '{:.0%}')}{met} "
            f"| {r.steps} | {r.sigma:.4f} | {r.sampling_rate:.4f} | {r.batch_size} | {r.epochs:g} | {r.lr:g} "
            f"| {r.minutes:.1f}{' ✗' if r.minutes > MINUTES_LIMIT else ''} |"
        )
    if nonprivate is not None:
        lines += [
            "",
            f"Non-private reference ({nonprivate['model']}, plain SGD, batch {nonprivate['batch_size']}, "
            f"{nonprivate['epochs']:g} epochs, lr {nonprivate['lr']:g}, momentum {nonprivate['momentum']:g}, "
            f"no clipping or noise, trained in-process): **{nonprivate['accuracy']:.2%}** "
            f"({nonprivate['minutes']:.1f} min).",
        ]
    lines += ["", f"Accuracy goals: {', '.join(f'{g:.0%} at epsilon {e:g}' for e, g in GOALS.items())}, "
              f"each run under {MINUTES_LIMIT:g} minutes.", ""]
    return "\n".join(lines)


def _accuracy(row: RunRow) -> float:
    assert row.accuracy is not None
    return float(row.accuracy)


def plot(rows: list[RunRow], nonprivate: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.accuracy is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if done:
        ax.plot([r.epsilon for r in done], [100 * _accuracy(r) for r in done], "o-", color="tab:blue",
                label=f"DP-SGD in the mock enclave ({done[0].model})")
        for r in done:
            ax.annotate(f"{100 * _accuracy(r):.2f}%", (r.epsilon, 100 * _accuracy(r)),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    goals = [(e, g) for e, g in GOALS.items() if any(r.target_epsilon == e for r in rows)]
    if goals:
        ax.plot([e for e, _ in goals], [100 * g for _, g in goals], "x", color="tab:red", label="accuracy goal")
    if nonprivate is not None:
        ax.axhline(100 * nonprivate["accuracy"], color="tab:gray", linestyle="--",
                   label=f"non-private ({100 * nonprivate['accuracy']:.2f}%)")
    ax.set_xscale("log")
    ticks = sorted({r.target_epsilon for r in rows} | set(GOALS))
    ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    values = [100 * _accuracy(r) for r in done] + [100 * g for _, g in goals]
    if nonprivate is not None:
        values.append(100 * nonprivate["accuracy"])
    if values:
        ax.set_ylim(min(values) - 2.0, max(values) + 1.0)
    ax.set_xlabel("epsilon (PRV accountant, delta = 1e-5)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("Hermetic: accuracy against privacy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with open_atomic(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


# --------------------------------------------------------------------------- main


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not (0 < v < 100) for v in values):
        raise argparse.ArgumentTypeError(f"epsilons must be in (0, 100), got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.utility", description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=_epsilons, default=sorted(RECIPES), help="comma-separated, default 1,3,8")
    parser.add_argument("--model", default=None, help="registered model (default: each recipe's)")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipes' epochs")
    parser.add_argument("--out", type=Path, default=Path("out/bench-utility"))
    parser.add_argument("--nonprivate-lr", type=float, default=None,
                        help="plain-SGD learning rate for the reference (default: tuned per model, else lr x C)")
    parser.add_argument("--skip-nonprivate", action="store_true", help="omit the non-private reference")
    parser.add_argument("--replot", action="store_true",
                        help="only rewrite results.md and the PNG from OUT/results.json")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads((args.out / "results.json").read_text())
        saved_rows = [RunRow(**r) for r in saved["runs"]]
        _write_text(args.out / "results.md", results_markdown(saved_rows, saved.get("nonprivate")))
        plot(saved_rows, saved.get("nonprivate"), args.out / "accuracy_vs_epsilon.png")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not FASHION_MNIST.exists():
        print(f"bench-utility: {FASHION_MNIST} is missing (make dataset)", file=sys.stderr)
        return 1
    recipes = []
    for eps in args.epsilons:
        recipe = RECIPES.get(eps, utility_recipe(eps))
        if args.model:
            recipe = replace(recipe, model=args.model)
        if args.epochs:
            recipe = replace(recipe, epochs=args.epochs)
        recipes.append(recipe)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[RunRow] = []
    nonprivate: dict[str, Any] | None = None

    def save() -> None:
        payload = {"delta": DELTA, "accountant": "prv", "goals": {f"{e:g}": g for e, g in GOALS.items()},
                   "minutes_limit": MINUTES_LIMIT, "runs": [asdict(r) for r in rows], "nonprivate": nonprivate}
        _write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
        _write_text(out / "results.md", results_markdown(rows, nonprivate))
        plot(rows, nonprivate, out / "accuracy_vs_epsilon.png")

    with LocalStack(out / "stack") as stack:
        for recipe in recipes:
            # The runs are alternatives, not one history: each gets its own sealed copy, whose fresh data key
            # (and so ledger key) starts its own budget ledger; one shared copy's ledger would refuse the later runs.
            sealed = stack.seal(FASHION_MNIST, max_epsilon=recipe.epsilon, delta=DELTA)
            print(f"sealed Fashion-MNIST: {sealed.records} records, budget epsilon {sealed.max_epsilon:g}",
                  flush=True)
            print(f"epsilon {recipe.epsilon:g}: {recipe.model}, batch {recipe.batch_size}, {recipe.epochs:g} epochs, "
                  f"lr {recipe.lr:g}, momentum {recipe.momentum:g}, C {recipe.max_grad_norm:g}", flush=True)
            last = [0.0]

            def progress(step: int, total: int, eps: float, last: list[float] = last) -> None:
                if time.monotonic() - last[0] > 30 or step == total:
                    last[0] = time.monotonic()
                    print(f"  step {step}/{total}, epsilon {eps:.3f}", flush=True)

            outcome = stack.train(recipe.spec_toml(stack.model_key), sealed, f"eps{recipe.epsilon:g}",
                                  progress=progress)
            rows.append(RunRow.of(recipe, outcome))
            print(f"  -> accuracy {_fmt(outcome.accuracy)}, certified epsilon {outcome.epsilon:.4f}, "
                  f"sigma {outcome.noise_multiplier:.4f}, {outcome.seconds / 60:.1f} min", flush=True)
            save()
    if not args.skip_nonprivate:
        base = replace(recipes[-1], epochs=NONPRIVATE_EPOCHS)
        lr = args.nonprivate_lr
        if lr is None:
            lr = NONPRIVATE_LR.get(base.model, base.lr * base.max_grad_norm)
        nonprivate = nonprivate_accuracy(base, lr)
        print(f"non-private {base.model}: accuracy {nonprivate['accuracy']:.2%} ({nonprivate['minutes']:.1f} min)",
              flush=True)
    save()
    print(results_markdown(rows, nonprivate))
    print(json.dumps({"bench": "utility", "runs": [asdict(r) for r in rows], "nonprivate": nonprivate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
