"""`hermetic demo`: the whole data path, locally, each party its own process."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # noqa: SLF001
    parser = subparsers.add_parser("demo", help="run the local end-to-end demo")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="artefact folder")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from parent.local.demo import run_demo

    started = time.monotonic()
    step = 0

    def say(line: str) -> None:
        nonlocal step
        step += 1
        print(f"[{step}] {line}", flush=True)

    report = run_demo(args.out, say)
    print(f"\nProved in {time.monotonic() - started:.0f}s (report: {Path(report.out_dir) / 'report.json'}):")
    for claim in report.proved:
        print(f"  - {claim}")
    return 0
