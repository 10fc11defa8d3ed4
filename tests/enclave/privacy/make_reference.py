"""Regenerate tests/vectors/dp-accounting/reference_epsilons.json with Google's dp-accounting (test-only dependency).

    .venv/bin/python -m tests.enclave.privacy.make_reference

For every (q, sigma, steps) of the grid below it composes
PoissonSampledDpEvent(q, GaussianDpEvent(sigma)) `steps` times under ADD_OR_REMOVE_ONE
in dp-accounting's PLDAccountant (value_discretization_interval=1e-4, pessimistic
connect-the-dots) and RdpAccountant (default orders), and records epsilon at each
delta. Cases whose PLD epsilon is outside [EPS_MIN, EPS_MAX] are kept out of the
comparison (recorded under "skipped" with the reason); cases whose RDP epsilon is far
beyond EPS_MAX are not run through the PLD accountant at all (its grid would need
tens of millions of bins). Takes several minutes.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
from typing import Any

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from tests.support.vectors import DP_ACCOUNTING

FIXTURE = DP_ACCOUNTING / "reference_epsilons.json"

QS = (0.001, 0.004, 0.01, 0.05, 0.2, 1.0)
SIGMAS = (0.6, 0.8, 1.0, 2.0, 5.0)
STEPS = (1, 10, 100, 1000, 10000)
DELTAS = (1e-5, 1e-6)
# Known point: MNIST-sized data (60000 records), batch 256, 60 epochs, sigma 1.1.
KNOWN = ((256 / 60000, 1.1, 14063, 1e-5),)
VALUE_DISCRETIZATION_INTERVAL = 1e-4
EPS_MIN, EPS_MAX = 0.01, 200.0
RDP_SKIP = 600.0


def _event(q: float, sigma: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))


def reference_pld(q: float, sigma: float, steps: int, deltas: tuple[float, ...]) -> list[float]:
    acc = pld_privacy_accountant.PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=VALUE_DISCRETIZATION_INTERVAL,
    )
    acc.compose(_event(q, sigma), steps)
    return [float(acc.get_epsilon(d)) for d in deltas]


def reference_rdp(q: float, sigma: float, steps: int, deltas: tuple[float, ...]) -> list[float]:
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(_event(q, sigma), steps)
    return [float(acc.get_epsilon(d)) for d in deltas]


def main() -> int:
    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    grid = [(q, s, t, DELTAS) for q in QS for s in SIGMAS for t in STEPS]
    grid += [(q, s, t, (d,)) for q, s, t, d in KNOWN]
    for q, sigma, steps, deltas in grid:
        rdp = reference_rdp(q, sigma, steps, deltas)
        if min(rdp) > RDP_SKIP:
            for d, r in zip(deltas, rdp, strict=True):
                skipped.append({"q": q, "sigma": sigma, "steps": steps, "delta": d,
                                "reason": f"rdp epsilon {r:.4g} > {RDP_SKIP:g}: pld epsilon absurd"})
            continue
        start = time.perf_counter()
        pld = reference_pld(q, sigma, steps, deltas)
        seconds = time.perf_counter() - start
        for d, p, r in zip(deltas, pld, rdp, strict=True):
            row = {"q": q, "sigma": sigma, "steps": steps, "delta": d}
            if not EPS_MIN <= p <= EPS_MAX:
                skipped.append({**row, "reason": f"pld epsilon {p:.4g} outside [{EPS_MIN}, {EPS_MAX}]"})
                continue
            cases.append({**row, "pld": p, "rdp": r, "pld_seconds": round(seconds, 3)})
        print(f"q={q:<8g} sigma={sigma:<4g} steps={steps:<6d} pld={pld} ({seconds:.1f}s)",
              file=sys.stderr, flush=True)
    document = {
        "generator": "tests/enclave/privacy/make_reference.py",
        "dp_accounting_version": importlib.metadata.version("dp-accounting"),
        "neighboring_relation": "ADD_OR_REMOVE_ONE",
        "value_discretization_interval": VALUE_DISCRETIZATION_INTERVAL,
        "epsilon_range": [EPS_MIN, EPS_MAX],
        "grid": {"q": QS, "sigma": SIGMAS, "steps": STEPS, "delta": DELTAS},
        "cases": cases,
        "skipped": skipped,
    }
    tmp = FIXTURE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(tmp, FIXTURE)
    print(f"wrote {len(cases)} cases, {len(skipped)} skipped -> {FIXTURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
