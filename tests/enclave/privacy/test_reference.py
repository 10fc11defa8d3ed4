"""Hermetic's accountants against Google's dp-accounting over the reference grid.

The fixture (reference_epsilons.json, made by make_reference.py) holds dp-accounting's
PLDAccountant (interval 1e-4, pessimistic) and RdpAccountant epsilons for
q in {0.001, 0.004, 0.01, 0.05, 0.2, 1}, sigma in {0.6, 0.8, 1, 2, 5},
steps in {1, 10, 100, 1000, 10000}, delta in {1e-5, 1e-6}; combinations with an
epsilon below 0.01 or above 200 are listed there as skipped. A random few cases are
recomputed live so the fixture cannot drift from the library it claims to come from.
"""
from __future__ import annotations

import json
import random
from typing import Any

import pytest

from enclave.privacy import calibration as privacy
from tests.enclave.privacy import make_reference
from tests.support.vectors import DP_ACCOUNTING

FIXTURE = DP_ACCOUNTING / "reference_epsilons.json"
DOC: dict[str, Any] = json.loads(FIXTURE.read_text())
CASES: list[dict[str, Any]] = DOC["cases"]

# Hermetic may be above the reference (it is pessimistic too) but not by much, and
# never noticeably below it: reporting less than the truth is the worst bug.
PRV_BELOW, PRV_ABOVE = 0.005, 0.03
RDP_REL = 0.01
# dp-accounting's PLD composes by FFT, whose rounding follows the CPU's code path: on an
# AMD EPYC machine every cheap fixture case (made on an Intel one) came back within a
# relative 4.9e-8 (RDP exactly). 1e-6 allows that and still catches any real drift.
LIVE_PLD_REL = 1e-6


def _id(case: dict[str, Any]) -> str:
    return f"q={case['q']:g}-s={case['sigma']:g}-T={case['steps']}-d={case['delta']:g}"


def test_fixture_covers_the_grid() -> None:
    grid = DOC["grid"]
    assert grid["q"] == list(make_reference.QS) and grid["sigma"] == list(make_reference.SIGMAS)
    assert grid["steps"] == list(make_reference.STEPS) and grid["delta"] == list(make_reference.DELTAS)
    total = len(make_reference.QS) * len(make_reference.SIGMAS) * len(make_reference.STEPS) * 2
    assert len(CASES) + len(DOC["skipped"]) == total + len(make_reference.KNOWN)
    for skipped in DOC["skipped"]:
        assert skipped["reason"]
    assert len(CASES) > 200
    assert DOC["value_discretization_interval"] == 1e-4


def test_prv_matches_dp_accounting_pld_over_the_grid() -> None:
    failures = []
    for case in CASES:
        got = privacy.epsilon(case["q"], case["sigma"], case["steps"], case["delta"])
        ref = case["pld"]
        if not ref * (1 - PRV_BELOW) <= got <= ref * (1 + PRV_ABOVE):
            failures.append(f"{_id(case)}: hermetic {got:.6g} vs dp-accounting {ref:.6g}")
    assert not failures, "\n".join(failures)


def test_rdp_matches_dp_accounting_rdp_over_the_grid() -> None:
    failures = []
    for case in CASES:
        got = privacy.epsilon(case["q"], case["sigma"], case["steps"], case["delta"], accountant="rdp")
        if abs(got / case["rdp"] - 1) > RDP_REL:
            failures.append(f"{_id(case)}: hermetic {got:.6g} vs dp-accounting {case['rdp']:.6g}")
    assert not failures, "\n".join(failures)


def test_rdp_is_never_tighter_than_prv() -> None:
    # RDP's conversion is lossy: a PLD epsilon above it would mean a PLD bug.
    for case in CASES[::7]:
        prv = privacy.epsilon(case["q"], case["sigma"], case["steps"], case["delta"])
        rdp = privacy.epsilon(case["q"], case["sigma"], case["steps"], case["delta"], accountant="rdp")
        assert prv <= rdp * (1 + 1e-9), _id(case)


def test_known_point_mnist_60_epochs() -> None:
    # 60000 records, expected batch 256, 60 epochs, sigma 1.1, delta 1e-5.
    (case,) = [c for c in CASES if c["steps"] == 14063]
    assert case["q"] == 256 / 60000 and case["sigma"] == 1.1 and case["delta"] == 1e-5
    got = privacy.epsilon(256 / 60000, 1.1, 14063, 1e-5)
    assert got == pytest.approx(case["pld"], rel=1e-4)
    assert got == pytest.approx(2.3818, abs=1e-3)


def test_random_fixture_cases_recomputed_live() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    cheap = [c for c in CASES if c["pld_seconds"] < 0.6]
    for case in rng.sample(cheap, 3):
        pld = make_reference.reference_pld(case["q"], case["sigma"], case["steps"], (case["delta"],))[0]
        rdp = make_reference.reference_rdp(case["q"], case["sigma"], case["steps"], (case["delta"],))[0]
        assert pld == pytest.approx(case["pld"], rel=LIVE_PLD_REL), f"seed {seed}: {_id(case)}"
        assert rdp == pytest.approx(case["rdp"], rel=1e-9), f"seed {seed}: {_id(case)}"
