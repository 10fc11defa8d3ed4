"""`hermetic privacy frontier`: epsilon against steps or noise multiplier, as a table or a PNG plot.

    hermetic privacy frontier (--spec JOB.toml [--records N | --sealed FILE...]
                               | --sampling-rate Q --noise-multiplier S --steps T)
                              [--delta D] --vary steps|noise [--from A --to B --points K]
                              [--accountant prv|rdp] [--png FILE] [--json]

With a spec, the recipe is the job's planned run (`hermetic privacy plan`), delta and
accountant default to the spec's, and a sealed dataset's cap is drawn on the plot.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from enclave.errors import ConfigError
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.accountants import PRIMARY
from parent.commands import privacy_args as arg
from parent.commands.budget import add_s3_arguments
from parent.commands.output import add_json_flag
from parent.commands.privacy_plan import add_size_arguments, load_spec, plan_job
from parent.frontier import DEFAULT_POINTS, VARY, Frontier, default_range, frontier, render_png
from parent.storage import write_atomic


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "frontier", help="epsilon against steps or noise multiplier for a recipe, as a table or a PNG plot",
        description="Epsilon at each of evenly spaced steps or noise multipliers, the rest of the recipe fixed: "
                    "a job spec's planned run, or --sampling-rate, --noise-multiplier and --steps.",
    )
    parser.add_argument("--spec", metavar="JOB.toml", help="the recipe is this job's planned run")
    add_size_arguments(parser)
    parser.add_argument("--sampling-rate", type=arg.sampling_rate, metavar="Q", help="Poisson sampling rate q")
    parser.add_argument("--noise-multiplier", type=arg.sigma, metavar="S", help="noise multiplier")
    parser.add_argument("--steps", type=arg.steps, metavar="T", help="number of steps")
    parser.add_argument("--delta", type=arg.delta, metavar="D", help="delta in (0, 1) (default: the spec's)")
    parser.add_argument("--vary", required=True, choices=VARY, help="the x axis: steps or noise multiplier")
    parser.add_argument("--from", dest="start", type=float, metavar="A",
                        help="first x (default: a tenth of the steps, or half the noise multiplier)")
    parser.add_argument("--to", dest="stop", type=float, metavar="B",
                        help="last x (default: twice the steps, or twice the noise multiplier)")
    parser.add_argument("--points", type=arg.count, default=DEFAULT_POINTS, metavar="K",
                        help=f"number of x values (default {DEFAULT_POINTS}; distinct whole numbers for steps)")
    parser.add_argument("--accountant", choices=ACCOUNTANT_NAMES, default=None,
                        help=f"prv or rdp (default: the spec's, else {PRIMARY})")
    parser.add_argument("--png", type=Path, metavar="FILE", help="also draw the frontier into this PNG file")
    add_s3_arguments(parser)
    add_json_flag(parser, help='print {"vary", "points": [{"x", "epsilon"}], "epsilon", "cap", ...}')
    parser.set_defaults(func=run_frontier)


def _recipe(args: argparse.Namespace) -> tuple[float, float, int, float, str, float | None]:
    """(q, sigma, steps, delta, accountant, cap) from the spec's plan or from the options."""
    manual = (args.sampling_rate, args.noise_multiplier, args.steps)
    if args.spec is not None:
        if any(v is not None for v in manual):
            raise ConfigError("give --spec or --sampling-rate, --noise-multiplier and --steps, not both")
        spec = load_spec(args.spec)
        if spec.tuning is not None:
            # A frontier varies one run; a search's cost is not one run's (`hermetic privacy plan` shows it).
            raise ConfigError("a tuning spec's search has no single-run frontier: use hermetic privacy plan")
        run, sealed, _ = plan_job(args, spec)
        cap = min((header.max_epsilon for _, header in sealed), default=None)
        return (run.sampling_rate, run.noise_multiplier, run.steps, args.delta or run.delta,
                args.accountant or run.accountant, cap)
    if args.sealed or args.records is not None:
        raise ConfigError("--sealed and --records size a job spec's run: they need --spec")
    if any(v is None for v in manual):
        raise ConfigError("a frontier needs --spec JOB.toml, or --sampling-rate, --noise-multiplier and --steps")
    if args.delta is None:
        raise ConfigError("--delta is needed without --spec")
    q, sigma, steps = manual
    return q, sigma, steps, args.delta, args.accountant or PRIMARY, None


def run_frontier(args: argparse.Namespace) -> int:
    q, sigma, steps, delta, accountant, cap = _recipe(args)
    low, high = default_range(args.vary, sigma, steps)
    result = frontier(vary=args.vary, q=q, sigma=sigma, steps=steps, delta=delta, accountant=accountant,
                      start=low if args.start is None else args.start, stop=high if args.stop is None else args.stop,
                      count=args.points, cap=cap)
    if args.png is not None:
        write_atomic(args.png, render_png(result))
    if args.json:
        record = result.to_json()
        record["png"] = None if args.png is None else str(args.png)
        print(json.dumps(record, allow_nan=False, sort_keys=True))
        return 0
    print(*_table(result), sep="\n")
    if args.png is not None:
        print(f"plot written to {args.png}")
    return 0


def _table(f: Frontier) -> list[str]:
    fixed = (f"q={f.sampling_rate:.4g}, noise multiplier {f.noise_multiplier:.4g}" if f.vary == "steps"
             else f"q={f.sampling_rate:.4g}, {f.steps} steps")
    lines = [f"epsilon at delta {f.delta:g} against {f.x_label} ({fixed}; {f.accountant})",
             f"{f.x_label:>16}  epsilon"]
    lines += [f"{x:>16.6g}  {e:.6g}" for x, e in f.points]
    cap = f"; cap {f.cap:g}" if f.cap is not None else ""
    lines.append(f"this recipe: {f.x_label} {f.own_x:g}, epsilon {f.epsilon:.6g}{cap}")
    return lines
