"""`hermetic demo`: the whole job, locally, each party its own process."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from parent.commands.output import add_json_flag


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the local end-to-end demo: seal, attest, train with DP-SGD, certify, verify"
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="artefact folder")
    parser.add_argument("--epochs", type=_positive, default=None, help="training epochs (1 = quick smoke run)")
    parser.add_argument("--epsilon", type=_positive, default=None, help="privacy budget and target epsilon")
    parser.add_argument("--audit", action="store_true",
                        help="also run `hermetic audit` of the recipe (a noised run and its no-noise control, about "
                             "4 min each) and put both in the compliance report")
    add_json_flag(parser, help="print the report (as in report.json) as one JSON object on stdout; "
                               "progress goes to stderr")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from tqdm import tqdm

    from parent.local.demo import Recipe, run_demo

    recipe = Recipe()
    if args.epochs is not None:
        recipe = replace(recipe, epochs=args.epochs)
    if args.epsilon is not None:
        recipe = replace(recipe, epsilon=args.epsilon)
    started = time.monotonic()
    # Under --json stdout carries only the report; the narrative moves to stderr.
    stream = sys.stderr if args.json else sys.stdout
    step = 0
    bar: Any = None

    def say(line: str) -> None:
        nonlocal step, bar
        if bar is not None:
            bar.close()
            bar = None
        step += 1
        print(f"[{step}] {line}", file=stream, flush=True)

    def progress(done: int, total: int, epsilon: float) -> None:
        nonlocal bar
        if bar is None:
            # Shown on any stream: a demo is watched; mininterval keeps logs short when piped.
            bar = tqdm(total=total, desc="    DP-SGD", unit="step", file=stream,
                       mininterval=1.0 if stream.isatty() else 30.0, dynamic_ncols=True)
        bar.n = done
        bar.set_postfix_str(f"epsilon spent {epsilon:.3f}", refresh=False)
        bar.update(0)  # redraws at most every mininterval

    try:
        report = run_demo(args.out, say, recipe=recipe, progress=progress, audit=args.audit)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps({**asdict(report), "elapsed_s": round(elapsed, 1)}))
        return 0
    print()
    if report.test_accuracy is not None:
        print(f"Test accuracy on the public Fashion-MNIST test set: {report.test_accuracy:.2%} "
              f"at epsilon {report.epsilon:.3f}, delta {report.delta:g} (verified certificate)")
    print(f"Proved in {elapsed / 60:.1f} min (artefacts and report.json in {report.out_dir}):")
    for claim in report.proved:
        print(f"  - {claim}")
    print(f"TensorBoard event files of the released metrics and epsilon: {report.tensorboard} "
          f"(tensorboard --logdir {report.tensorboard})")
    if report.compliance_report:
        print(f"Compliance report for privacy officers and auditors: {report.compliance_report} (and report.pdf)")
    return 0
