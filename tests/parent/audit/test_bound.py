"""The one-run audit's epsilon lower bound (parent.audit.bound)."""
from __future__ import annotations

import math

import pytest

from parent.audit.bound import AuditBoundError, Guesses, ceiling, epsilon_lower_bound, p_value

DELTA = 1e-5
CONFIDENCE = 0.95


@pytest.mark.parametrize(
    ("guesses", "epsilon", "delta", "expected"),
    [
        # From the paper's reference p_value_DP_audit (scipy.stats.binom), run independently.
        (Guesses(1000, 100, 90), 1.0, 1e-5, 0.0008412885614385305),
        (Guesses(1000, 1000, 1000), 5.0, 1e-5, 0.0031309177952803533),
        (Guesses(500, 200, 150), 0.5, 0.0, 8.918182920516091e-05),
    ],
)
def test_p_value_matches_the_reference_implementation(guesses: Guesses, epsilon: float, delta: float,
                                                      expected: float) -> None:
    assert p_value(guesses, epsilon, delta) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_perfect_guessing_without_delta_is_randomised_response_in_closed_form(k: int) -> None:
    # P[Bin(k, p) >= k] = p^k = beta  =>  p = beta^(1/k), epsilon = log(p / (1 - p)).
    p = (1 - CONFIDENCE) ** (1 / k)
    expected = max(0.0, math.log(p / (1 - p)))  # k = 1: one right guess certifies nothing at 95%
    assert ceiling(k, k, delta=0.0, confidence=CONFIDENCE) == pytest.approx(expected, abs=1e-8)


def test_figures_for_a_thousand_canaries() -> None:
    # m = 1000, delta = 1e-5, 95%: perfect guessing of all 1000 certifies at most about 5.78,
    # of the top-and-bottom 100 about 3.47 (the delta term costs 0.03 against delta = 0).
    assert ceiling(1000, 1000, delta=DELTA, confidence=CONFIDENCE) == pytest.approx(5.7823, abs=1e-3)
    assert ceiling(1000, 100, delta=DELTA, confidence=CONFIDENCE) == pytest.approx(3.4654, abs=1e-3)


def test_the_bound_is_the_edge_of_rejection_and_errs_low() -> None:
    g = Guesses(1000, 200, 160)
    bound = epsilon_lower_bound(g, delta=DELTA, confidence=CONFIDENCE)
    assert 0 < bound
    assert p_value(g, bound, DELTA) < 1 - CONFIDENCE
    assert p_value(g, bound + 1e-8, DELTA) >= 1 - CONFIDENCE


def test_monotone_in_correct_guesses() -> None:
    bounds = [epsilon_lower_bound(Guesses(1000, 100, r), delta=DELTA, confidence=CONFIDENCE) for r in range(0, 101)]
    assert bounds == sorted(bounds)
    assert bounds[-1] == ceiling(1000, 100, delta=DELTA, confidence=CONFIDENCE)


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_zero_at_chance(k: int) -> None:
    for r in (0, k // 2, k // 2 + 1):
        assert epsilon_lower_bound(Guesses(k, k, r), delta=DELTA, confidence=CONFIDENCE) == 0.0


def test_more_confidence_certifies_less() -> None:
    g = Guesses(1000, 100, 95)
    assert epsilon_lower_bound(g, delta=DELTA, confidence=0.99) < epsilon_lower_bound(g, delta=DELTA, confidence=0.9)


def test_the_ceiling_grows_with_the_canaries_guessed() -> None:
    ceilings = [ceiling(m, m, delta=DELTA, confidence=CONFIDENCE) for m in (10, 100, 500, 1000)]
    assert ceilings == sorted(ceilings) and ceilings[0] < ceilings[-1]


def test_more_canaries_at_the_same_guesses_pay_more_for_delta() -> None:
    # 2 m delta grows with m: the same k perfect guesses among more canaries certify less.
    assert ceiling(10_000, 100, delta=DELTA, confidence=CONFIDENCE) < ceiling(1000, 100, delta=DELTA,
                                                                              confidence=CONFIDENCE)


@pytest.mark.parametrize(
    ("counts", "delta", "confidence"),
    [((10, 5, 6), DELTA, CONFIDENCE), ((10, 11, 1), DELTA, CONFIDENCE), ((-1, 0, 0), DELTA, CONFIDENCE),
     ((10, 5, 5), -0.1, CONFIDENCE), ((10, 5, 5), 1.0, CONFIDENCE), ((10, 5, 5), DELTA, 1.0),
     ((10, 5, 5), DELTA, 0.0), ((10, 5, 5), DELTA, float("nan"))],
)
def test_refuses_impossible_inputs(counts: tuple[int, int, int], delta: float, confidence: float) -> None:
    with pytest.raises(AuditBoundError):
        epsilon_lower_bound(Guesses(*counts), delta=delta, confidence=confidence)
