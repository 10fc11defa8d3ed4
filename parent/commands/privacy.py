"""`hermetic privacy`: epsilon of a DP-SGD run, the noise a budget needs, the steps it allows.

    hermetic privacy epsilon   --sampling-rate Q --noise-multiplier S --steps T --delta D [--and Q,S,T]...
    hermetic privacy noise     --target-epsilon E --delta D --sampling-rate Q --steps T
    hermetic privacy max-steps --sampling-rate Q --noise-multiplier S --delta D --epsilon-budget E
    hermetic privacy plan      JOB.toml (--sealed FILE... | --records N) [--target-epsilon E]
    hermetic privacy frontier  (--spec JOB.toml ... | --sampling-rate Q ...) --vary steps|noise [--png FILE]

The first three take `--accountant prv|rdp` (default prv, the PLD accountant) and `--json`.
Malformed numbers are usage errors (exit 2); budgets no setting can meet exit 1.
`epsilon --and Q,S,T` composes more runs on the same data with the first, exactly (not
by adding epsilons), as a dataset's budget ledger composes its entries. `plan` and
`frontier` read a job spec (`parent.commands.privacy_plan`, `parent.commands.privacy_frontier`).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from enclave.privacy import calibration as privacy
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.accountants import PRIMARY
from enclave.privacy.ledger import Segment, compose_epsilon
from parent.commands import privacy_args as arg
from parent.commands import privacy_frontier, privacy_plan
from parent.commands.output import add_json_flag
from parent.privacy_plan import json_float


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "privacy",
        help="DP accounting: epsilon, noise multiplier, step budget",
        description="Differential-privacy accounting for Poisson-sampled Gaussian DP-SGD "
                    "(zero-out neighbours, whose privacy curves equal add/remove-one's).",
    )
    sub = parser.add_subparsers(dest="privacy_command", metavar="ACTION")
    sub.required = True

    eps = sub.add_parser("epsilon", help="epsilon spent by a run")
    _common(eps, sigma=True)
    eps.add_argument("--steps", required=True, type=arg.steps, metavar="T", help="number of steps")
    eps.add_argument("--and", dest="more", action="append", default=[], type=arg.run, metavar="Q,S,T",
                     help="another run on the same data (sampling rate, noise multiplier, steps), composed "
                          "exactly with the first, as the budget ledger composes its entries; repeatable")
    eps.set_defaults(func=run_epsilon)

    noise = sub.add_parser("noise", help="smallest noise multiplier meeting a target epsilon")
    noise.add_argument("--target-epsilon", required=True, type=arg.target, metavar="E")
    _common(noise, sigma=False)
    noise.add_argument("--steps", required=True, type=arg.steps, metavar="T", help="number of steps")
    noise.set_defaults(func=run_noise)

    most = sub.add_parser("max-steps", help="most steps an epsilon budget allows")
    _common(most, sigma=True)
    most.add_argument("--epsilon-budget", required=True, type=arg.budget, metavar="E")
    most.set_defaults(func=run_max_steps)

    privacy_plan.register(sub)
    privacy_frontier.register(sub)


def _common(parser: argparse.ArgumentParser, sigma: bool) -> None:
    parser.add_argument("--sampling-rate", required=True, type=arg.sampling_rate, metavar="Q",
                        help="Poisson sampling rate q in (0, 1]")
    if sigma:
        parser.add_argument("--noise-multiplier", required=True, type=arg.sigma, metavar="S",
                            help="noise standard deviation / clipping norm")
    parser.add_argument("--delta", required=True, type=arg.delta, metavar="D", help="delta in (0, 1)")
    parser.add_argument("--accountant", choices=ACCOUNTANT_NAMES, default=PRIMARY,
                        help="prv: privacy loss distributions (default); rdp: Renyi DP")
    add_json_flag(parser)


def _emit(args: argparse.Namespace, record: dict[str, Any], line: str) -> None:
    if args.json:
        print(json.dumps(record, allow_nan=False, sort_keys=True))
    else:
        print(line)


def run_epsilon(args: argparse.Namespace) -> int:
    first = Segment(args.sampling_rate, args.noise_multiplier, args.steps)
    if args.more:
        value = compose_epsilon([first, *args.more], args.delta, args.accountant)
    else:
        value = privacy.epsilon(args.sampling_rate, args.noise_multiplier, args.steps, args.delta,
                                accountant=args.accountant)
    record: dict[str, Any] = {"epsilon": json_float(value), "sampling_rate": args.sampling_rate,
                              "noise_multiplier": args.noise_multiplier, "steps": args.steps,
                              "delta": args.delta, "accountant": args.accountant}
    more = ""
    if args.more:
        record["runs"] = [s.to_dict() for s in (first, *args.more)]
        more = f", composed with {len(args.more)} more run{'s' if len(args.more) > 1 else ''}"
    _emit(args, record, f"epsilon = {value:.6g} at delta = {args.delta:g} "
                        f"({args.accountant}; q = {args.sampling_rate:g}, "
                        f"sigma = {args.noise_multiplier:g}, {args.steps} steps{more})")
    return 0


def run_noise(args: argparse.Namespace) -> int:
    sigma = privacy.noise_multiplier(args.target_epsilon, args.delta, args.sampling_rate, args.steps,
                                     accountant=args.accountant)
    reached = privacy.epsilon(args.sampling_rate, sigma, args.steps, args.delta,
                              accountant=args.accountant)
    record = {"noise_multiplier": sigma, "epsilon": json_float(reached),
              "target_epsilon": args.target_epsilon, "sampling_rate": args.sampling_rate,
              "steps": args.steps, "delta": args.delta, "accountant": args.accountant}
    _emit(args, record, f"noise multiplier = {sigma:.6g} (epsilon = {reached:.6g} <= "
                        f"{args.target_epsilon:g} at delta = {args.delta:g}; {args.accountant}; "
                        f"q = {args.sampling_rate:g}, {args.steps} steps)")
    return 0


def run_max_steps(args: argparse.Namespace) -> int:
    steps = privacy.max_steps(args.sampling_rate, args.noise_multiplier, args.delta,
                              args.epsilon_budget, accountant=args.accountant)
    record = {"max_steps": steps, "epsilon_budget": args.epsilon_budget,
              "sampling_rate": args.sampling_rate, "noise_multiplier": args.noise_multiplier,
              "delta": args.delta, "accountant": args.accountant}
    _emit(args, record, f"max steps = {steps} within epsilon {args.epsilon_budget:g} at delta = "
                        f"{args.delta:g} ({args.accountant}; q = {args.sampling_rate:g}, "
                        f"sigma = {args.noise_multiplier:g})")
    return 0
