"""The PLD accountant's parts: normal tails, one-step PLDs, FFT composition, eps from delta.

The pessimism checks compare against quantities known exactly: the continuous
one-step hockey-stick divergence of the subsampled Gaussian (dp-accounting's
GaussianPrivacyLoss, no discretisation) and the closed form of the composed
Gaussian mechanism.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as dp_pld
from dp_accounting.pld import privacy_loss_mechanism as dp_mech

from enclave.privacy import normal, pld

# --- the normal distribution ------------------------------------------------------------------


def test_lower_tail_known_values() -> None:
    got = normal.lower_tail(np.array([0.0, 1.0, -5.0, 10.0, np.inf]))
    assert got[0] == 0.5
    assert got[1] == pytest.approx(0.15865525393145707, rel=1e-14)
    assert got[2] == pytest.approx(2.866515718791939e-07, rel=1e-13)
    assert got[3] == pytest.approx(7.619853024160527e-24, rel=1e-13)
    assert got[4] == 0.0


def test_interval_mass_in_every_region() -> None:
    hi = np.array([1.0, -5.0, np.inf, -9.0])
    lo = np.array([-1.0, -np.inf, 10.0, -9.000001])
    got = normal.interval_mass(hi, lo)
    assert got[0] == pytest.approx(0.6826894921370859, rel=1e-14)  # straddles 0
    assert got[1] == pytest.approx(2.866515718791939e-07, rel=1e-13)  # lower tail
    assert got[2] == pytest.approx(7.619853024160527e-24, rel=1e-13)  # upper tail, no 1 - Phi
    # A narrow slice deep in the tail keeps its relative precision: ~ phi(-9) * 1e-6.
    assert got[3] == pytest.approx(math.exp(-40.5) / math.sqrt(2 * math.pi) * 1e-6, rel=1e-4)


@pytest.mark.parametrize("x", [-3.0, 0.0, 0.5, 5.0, 19.9, 20.0, 21.0, 26.0])
def test_log_erfc_matches_direct_where_erfc_is_representable(x: float) -> None:
    assert normal.log_erfc(x) == pytest.approx(math.log(math.erfc(x)), rel=1e-13, abs=1e-15)


def test_log_erfc_beyond_underflow_and_tail_quantile() -> None:
    # erfc(40) underflows to 0; log erfc(x) = -x^2 - log(x sqrt(pi)) + log(1 - 1/2x^2 + 3/4x^4 - ...)
    series = -1 / (2 * 40**2) + 3 / (4 * 40**4) - 15 / (8 * 40**6) + 105 / (16 * 40**8)
    expected = -1600 - math.log(40 * math.sqrt(math.pi)) + math.log1p(series)
    assert normal.log_erfc(40.0) == pytest.approx(expected, rel=1e-14)
    z = normal.tail_quantile(1e-20)
    assert z == pytest.approx(9.262340089798408, rel=1e-10)
    assert normal.ndtr(-z) == pytest.approx(1e-20, rel=1e-9)
    assert normal.log_ndtr(-40.0) == pytest.approx(math.log(0.5) + normal.log_erfc(40 / math.sqrt(2)))


# --- one step ------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "sigma"), [(0.01, 1.0), (0.2, 0.6), (0.001, 5.0), (0.999, 0.8), (1.0, 2.0)])
def test_step_pld_is_a_valid_pld(q: float, sigma: float) -> None:
    step = pld.step_pld(q, sigma, 1e-3)
    for d in step.directions:
        assert (d.probs >= 0).all()
        assert d.probs.sum() + d.infinity_mass == pytest.approx(1.0, abs=1e-12)
        assert d.infinity_mass < 1e-18
        losses = (d.offset + np.arange(len(d.probs))) * d.h
        # The lower measure's mass: preserved by the endpoint split, up to the cut tails.
        assert float(np.dot(d.probs, np.exp(-losses))) == pytest.approx(1.0, abs=1e-9)
    if q == 1.0:
        assert step.add is None
    else:
        # Remove losses are >= log(1 - q); add losses are <= -log(1 - q), up to one grid step.
        assert step.remove.offset * 1e-3 >= math.log1p(-q) - 1e-3
        assert step.directions[1].top * 1e-3 <= -math.log1p(-q) + 1e-3


def _exact_one_step_epsilon(q: float, sigma: float, delta: float) -> float:
    """Continuous (undiscretised) epsilon of one step, both directions, by bisection."""
    best = 0.0
    for adjacency in (dp_mech.AdjacencyType.REMOVE, dp_mech.AdjacencyType.ADD):
        loss = dp_mech.GaussianPrivacyLoss(sigma, sampling_prob=q, adjacency_type=adjacency)
        lo, hi = 0.0, 100.0
        if loss.get_delta_for_epsilon(0.0) <= delta:
            continue
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if loss.get_delta_for_epsilon(mid) > delta:
                lo = mid
            else:
                hi = mid
        best = max(best, hi)
    return best


@pytest.mark.parametrize(("q", "sigma", "delta"), [
    (0.01, 0.8, 1e-5), (0.2, 1.0, 1e-6), (0.004, 0.6, 1e-5), (1.0, 2.0, 1e-5), (0.05, 5.0, 1e-6),
])
def test_one_step_is_never_below_the_exact_value(q: float, sigma: float, delta: float) -> None:
    exact = _exact_one_step_epsilon(q, sigma, delta)
    got = pld.epsilon([(q, sigma, 1)], delta)
    assert exact <= got <= exact + 2e-4


def _gaussian_delta(mu: float, eps: float) -> float:
    def phi(z: float) -> float:
        return 0.5 * math.erfc(-z / math.sqrt(2))
    return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)


def _exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    mu = math.sqrt(steps) / sigma
    lo, hi = 0.0, 500.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _gaussian_delta(mu, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize(("sigma", "steps", "delta"), [
    (1.0, 1, 1e-5), (2.0, 100, 1e-6), (5.0, 1000, 1e-5), (10.0, 20000, 1e-5), (3.0, 7, 1e-3),
])
def test_composed_gaussian_is_never_below_the_closed_form(sigma: float, steps: int, delta: float) -> None:
    exact = _exact_gaussian_epsilon(sigma, steps, delta)
    got = pld.epsilon([(1.0, sigma, steps)], delta)
    assert exact <= got <= exact * 1.001 + 1e-4


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 1.0, 300), (0.2, 2.0, 50)])
def test_above_dp_accountings_optimistic_estimate(q: float, sigma: float, steps: int) -> None:
    # dp-accounting's optimistic discretisation rounds losses down: a lower estimate.
    low = dp_pld.from_gaussian_mechanism(
        sigma, sampling_prob=q, pessimistic_estimate=False, value_discretization_interval=1e-4,
        use_connect_dots=False,
    ).self_compose(steps)
    for delta in (1e-5, 1e-6):
        assert pld.epsilon([(q, sigma, steps)], delta) >= low.get_epsilon_for_delta(delta)


# --- composition -------------------------------------------------------------------------------


def _direct(parts: list[tuple[pld.DiscretePld, int]]) -> tuple[int, np.ndarray, float]:
    offset, probs, keep = 0, np.array([1.0]), 1.0
    for d, times in parts:
        for _ in range(times):
            probs = np.convolve(probs, d.probs)
            offset += d.offset
            keep *= 1 - d.infinity_mass
    return offset, probs, 1 - keep


@pytest.mark.parametrize("direction", [0, 1])
def test_fft_composition_equals_direct_convolution(direction: int) -> None:
    a = pld.step_pld(0.05, 1.0, 0.01).directions[direction]
    b = pld.step_pld(0.2, 2.0, 0.01).directions[direction]
    parts = [(a, 3), (b, 2)]
    got = pld._compose_direction(parts)
    offset, probs, infinity = _direct(parts)
    # Place both on absolute indices and compare where the FFT window lies.
    start = got.offset - offset
    assert start >= 0
    window = probs[start:start + len(got.probs)]
    assert np.allclose(got.probs[:len(window)], window, atol=1e-15, rtol=1e-9)
    outside = probs.sum() - window.sum()
    assert outside <= pld.WINDOW_TAIL + 1e-15  # + summation rounding
    assert infinity <= got.infinity_mass <= infinity + pld.WINDOW_TAIL + 1e-18


def test_window_truncation_goes_to_infinity_mass() -> None:
    d = pld.step_pld(0.01, 0.8, 0.001).remove
    lo, hi, truncated = pld._window([(d, 1000)])
    assert truncated and hi < 1000 * d.top
    composed = pld._compose_direction([(d, 1000)])
    assert composed.infinity_mass >= pld.WINDOW_TAIL
    assert composed.probs.sum() + composed.infinity_mass == pytest.approx(1.0, abs=1e-9)


def test_coarser_nested_grid_is_never_more_optimistic() -> None:
    for h in (1e-3, 2e-3, 4e-3):
        fine = pld.step_pld(0.02, 0.9, h)
        coarse = pld.step_pld(0.02, 0.9, 2 * h)
        for k in (0, 1):
            e_fine = pld.epsilon_for_delta(pld._compose_direction([(fine.directions[k], 200)]), 1e-5)
            e_coarse = pld.epsilon_for_delta(pld._compose_direction([(coarse.directions[k], 200)]), 1e-5)
            assert e_coarse >= e_fine * (1 - 1e-12)


def test_fast_len_is_the_next_5_smooth_number() -> None:
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 3000):
        got = pld._fast_len(n)
        assert got >= n and smooth(got)
        assert not any(smooth(m) for m in range(n, got))


def test_grid_interval_is_floor_or_doubled_floor() -> None:
    assert pld.grid_interval([(0.004, 1.0, 5000)]) == pld.H_FLOOR
    coarse = pld.grid_interval([(0.05, 0.6, 10000)])
    assert coarse > pld.H_FLOOR
    assert math.log2(coarse / pld.H_FLOOR) == pytest.approx(round(math.log2(coarse / pld.H_FLOOR)))


# --- epsilon from delta ----------------------------------------------------------------------


def _hand_pld(probs: list[float], offset: int, h: float, infinity: float) -> pld.DiscretePld:
    return pld.DiscretePld(h=h, offset=offset, probs=np.array(probs), infinity_mass=infinity)


def test_epsilon_for_delta_known_answer() -> None:
    # Half the mass at loss 0, half at loss 1: delta(eps) = 0.5 (1 - e^(eps - 1)) below 1.
    two_point = _hand_pld([0.5] + [0.0] * 9 + [0.5], 0, 0.1, 0.0)
    assert pld.epsilon_for_delta(two_point, 0.1) == pytest.approx(1 + math.log(0.8), rel=1e-12)
    assert pld.epsilon_for_delta(two_point, 0.5) == 0.0
    with_infinity = _hand_pld([0.5] + [0.0] * 9 + [0.4], 0, 0.1, 0.1)
    assert pld.epsilon_for_delta(with_infinity, 0.05) == math.inf
    # delta(eps) = 0.1 + 0.4 (1 - e^(eps - 1)) = 0.3  ->  eps = 1 + log(0.5)
    assert pld.epsilon_for_delta(with_infinity, 0.3) == pytest.approx(1 + math.log(0.5), rel=1e-12)


def test_epsilon_for_delta_matches_dp_accounting_on_a_real_pld() -> None:
    ref = dp_pld.from_gaussian_mechanism(1.3, sampling_prob=0.03, value_discretization_interval=1e-3)
    ref = ref.self_compose(40)
    ours = pld._compose_direction([(pld.step_pld(0.03, 1.3, 1e-3).remove, 40)])
    ref_remove = ref._pmf_remove
    for delta in (1e-3, 1e-5, 1e-7):
        assert pld.epsilon_for_delta(ours, delta) == pytest.approx(
            ref_remove.get_epsilon_for_delta(delta), rel=1e-6)


def test_results_do_not_depend_on_cache_state() -> None:
    first = pld.epsilon([(0.01, 1.1, 777)], 1e-5)
    pld.step_pld.cache_clear()
    pld._composed_cached.cache_clear()
    assert pld.epsilon([(0.01, 1.1, 777)], 1e-5) == first
