"""`hermetic audit`: an empirical lower bound on a job's epsilon, next to the certified one (dev command).

    hermetic audit JOB.toml --local [DIR] [--canaries M] [--canary-kind dirac|gaussian] [--guesses K] [--confidence C]
                   [--records N | --data FILE [--sealed FILE.sealed]] [--steps T] [--control-no-noise]
                   [--seed HEX] [--json]

A one-run audit (Steinke, Nasr & Jagielski 2023; `parent.audit`): the job's model is
trained with the same DpSgd, Csprng noise and Poisson sampler the enclave runs, on
synthetic data of Fashion-MNIST's shape (or a public file, --data), with M white-box gradient canaries each
included with probability 1/2, and the guesses on them bound epsilon from below.
It runs in-process on this host because canaries need a hook the production enclave
does not have: it audits the mechanism's implementation, not a deployed enclave.

Exit 1 when the audit finds a bug: a noised run's bound above the certified epsilon
(the implementation leaks more than the accountant says), or a --control-no-noise run
whose bound does not exceed it (the audit could not see a run with no privacy at all).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.errors import ConfigError
from parent.appliance import DEFAULT_STATE_DIR
from parent.audit import CANARY_KINDS
from parent.commands import privacy_args as arg
from parent.commands.output import add_json_flag

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RECORDS = 60_000  # Fashion-MNIST's training set, whose shape the synthetic data take


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text[:40]!r}")
    return value


def _seed(text: str) -> bytes:
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text[:40]!r}") from None
    if len(seed) != 32 or not any(seed):
        raise argparse.ArgumentTypeError("a seed is 32 bytes (64 hex digits), not all zero")
    return seed


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit", help="empirical lower bound on a job's epsilon from one training run with canaries (dev)",
        description="Train the job's model in-process with the enclave's DP-SGD code (clipping, CSPRNG "
                    "noise, Poisson sampling) on synthetic data of Fashion-MNIST's shape plus white-box "
                    "gradient canaries, guess which canaries were in the run, and turn the right guesses "
                    "into a lower bound on epsilon at the given confidence (Steinke, Nasr & Jagielski "
                    "2023), printed next to the certified epsilon. It audits the mechanism's "
                    "implementation, not a deployed enclave: canaries need a hook the enclave lacks.",
    )
    parser.add_argument("spec", metavar="JOB.toml", help="the training job spec (model, batch, steps, noise, C)")
    parser.add_argument(
        "--local", nargs="?", const=DEFAULT_STATE_DIR, default=None, type=Path, metavar="DIR",
        help="required: the audit runs only here, in-process (DIR, an appliance's state directory, is "
             "accepted like other commands' --local and not needed)",
    )
    parser.add_argument("--canaries", type=arg.count, metavar="M",
                        help="number of canaries, each in the run with probability 1/2 (default 5000 Dirac "
                             "canaries, 1000 Gaussian ones)")
    parser.add_argument("--canary-kind", choices=CANARY_KINDS, default="dirac",
                        help="dirac (default): C on one parameter each, where public records' gradients are "
                             "smallest; gaussian: random directions of norm C")
    parser.add_argument("--guesses", type=arg.count, metavar="K",
                        help="guesses: IN for the K/2 highest scores, OUT for the K/2 lowest (default M/5)")
    parser.add_argument("--confidence", type=_confidence, default=DEFAULT_CONFIDENCE, metavar="C",
                        help=f"confidence of the lower bound, in (0, 1) (default {DEFAULT_CONFIDENCE})")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--records", type=arg.count, metavar="N",
                      help=f"synthetic records, which set q = batch / N (default {DEFAULT_RECORDS})")
    data.add_argument("--data", type=Path, metavar="FILE",
                      help="train on this public file (a format `hermetic seal` reads, with the spec's feature "
                           "and label columns) instead of synthetic records; q = batch / its rows")
    parser.add_argument("--sealed", type=Path, metavar="FILE.sealed",
                        help="with --data: a sealed dataset whose public schema (its header; no key is used) "
                             "re-encodes FILE as `train --public` does and shapes the model; needed for "
                             "tabular, sequence and regression jobs")
    parser.add_argument("--steps", type=arg.count, metavar="T",
                        help="train T steps instead of the spec's (the certified epsilon is then T steps')")
    parser.add_argument("--control-no-noise", action="store_true",
                        help="the control: train without noise; the bound must come out far above the claim")
    parser.add_argument("--seed", type=_seed, metavar="HEX",
                        help="32-byte seed (64 hex digits) for a reproducible run (default: fresh randomness)")
    add_json_flag(parser, help='print {"epsilon_certified", "epsilon_lower_bound", "ceiling", "canaries", '
                               '"guesses", "correct", "confidence", "control", "verdict", ...}')
    parser.set_defaults(func=run_audit)


def _read_table(path: Path, sealed: Path | None) -> tuple[pa.Table, pa.Schema | None]:
    """The public file as a table, re-encoded by the sealed file's public schema if one is given, and
    the sealed file's Arrow schema (None without one)."""
    # Imported on use, like the audit itself: building the parser loads neither pyarrow nor torch.
    import pyarrow as pa
    import pyarrow.ipc

    from parent.datasets import open_dataset
    from parent.job_check import sealed_public_schema
    from parent.model_out import sealed_arrow_schema
    from parent.public_data import load_public_dataset

    if sealed is None:
        reader = open_dataset(path)
        return pa.Table.from_batches(list(reader.iter_batches(8192)), schema=reader.schema()), None
    public = load_public_dataset("audit", path, schema=sealed_public_schema(str(sealed)))
    return pa.ipc.open_stream(public.ipc).read_all(), sealed_arrow_schema(str(sealed))


def run_audit(args: argparse.Namespace) -> int:
    if args.local is None:
        raise ConfigError("the audit runs only in-process on this host: pass --local")
    # Imported on use: the audit loads torch and the model registry; `hermetic --help` stays fast.
    from parent.audit.canaries import audit_spec
    from parent.commands.privacy_plan import load_spec

    spec = load_spec(args.spec)
    if args.sealed is not None and args.data is None:
        raise ConfigError("--sealed re-encodes a public file: pass it with --data FILE")
    table, schema = (None, None) if args.data is None else _read_table(args.data, args.sealed)
    records = DEFAULT_RECORDS if args.records is None else args.records
    result = audit_spec(spec, records=records, data=table, schema=schema, canaries=args.canaries,
                        canary_kind=args.canary_kind, guesses=args.guesses,
                        confidence=args.confidence, control=args.control_no_noise, seed=args.seed,
                        steps=args.steps)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return 0 if result.holds else 1
    kind = "control run WITHOUT noise" if result.control else "noised run"
    source = "synthetic data" if args.data is None else f"{args.data.name}"
    print(f"audit of {spec.name!r}: {kind}, in-process on {source} ({result.records} records)")
    print(f"  run          q={result.sampling_rate:.4g}, noise multiplier {result.noise_multiplier:.4g}, "
          f"{result.steps} steps, delta {result.delta:g}, {result.seconds:.1f}s")
    print(f"  certified    epsilon {result.epsilon_certified:.4g} ({result.accountant})")
    print(f"  lower bound  epsilon >= {result.epsilon_lower_bound:.4g} at {result.confidence:.0%} confidence "
          f"({result.correct} of {result.guesses} guesses right, {result.canaries} {result.canary_kind} canaries)")
    print(f"  ceiling      {result.ceiling:.4g}: the bound if every guess were right")
    print(f"  verdict      {result.verdict}")
    return 0 if result.holds else 1
