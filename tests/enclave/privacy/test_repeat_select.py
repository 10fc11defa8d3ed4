"""Repeat-and-select RDP: dp-accounting's RdpAccountant on RepeatAndSelectDpEvent is the reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event as ev
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.privacy import rdp
from enclave.privacy import repeat_select as rs
from enclave.privacy.errors import PrivacyParameterError

DELTA = 1e-5
SHAPES = {"logarithmic": 0.0, "geometric": 1.0, "poisson": math.inf, "truncated_negative_binomial": 0.5}


def _reference_epsilon(q: float, sigma: float, steps: int, mean: float, shape: float,
                       prior: tuple[float, float, int] | None = None) -> float:
    run = ev.SelfComposedDpEvent(
        ev.PoissonSampledDpEvent(q, ev.GaussianDpEvent(sigma)), steps)
    acc = dp_rdp.RdpAccountant(list(rdp.ORDERS))
    if prior is not None:
        pq, ps, pt = prior
        acc.compose(ev.SelfComposedDpEvent(
            ev.PoissonSampledDpEvent(pq, ev.GaussianDpEvent(ps)), pt))
    acc.compose(ev.RepeatAndSelectDpEvent(run, mean, shape))
    return float(acc.get_epsilon(DELTA))


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize(("q", "sigma", "steps", "mean"), [(0.01, 1.1, 300, 10.0), (0.05, 2.0, 40, 3.0)])
def test_search_epsilon_matches_dp_accounting(name: str, q: float, sigma: float, steps: int,
                                              mean: float) -> None:
    shape = rs.distribution_shape(name, SHAPES[name] if name == "truncated_negative_binomial" else None)
    ours = rs.search_epsilon([(q, sigma, steps)], mean, shape, DELTA)
    assert ours == pytest.approx(_reference_epsilon(q, sigma, steps, mean, shape), rel=1e-6)


@pytest.mark.parametrize("name", list(SHAPES))
def test_search_composes_with_earlier_runs(name: str) -> None:
    shape = SHAPES[name]
    prior = (0.02, 1.3, 200)
    ours = rs.search_epsilon([(0.01, 1.1, 100)], 4.0, shape, DELTA, prior=rdp.rdp_curve([prior]))
    assert ours == pytest.approx(_reference_epsilon(0.01, 1.1, 100, 4.0, shape, prior), rel=1e-6)


def test_curve_matches_dp_accounting_per_order() -> None:
    base = rdp.rdp_curve([(0.02, 1.0, 50)])
    for shape in (0.0, 1.0, 0.3, 2.5, math.inf):
        ref = np.asarray(dp_rdp._compute_rdp_repeat_and_select(rdp.ORDERS, base, 7.0, shape))
        ours = rs.repeat_select_rdp(rdp.ORDERS, base, 7.0, shape)
        finite = np.isfinite(ref)
        assert (np.isfinite(ours) == finite).all()
        assert np.allclose(ours[finite], ref[finite], rtol=1e-9, atol=0)


def test_gamma_inverts_the_mean() -> None:
    for shape in (0.0, 0.5, 1.0, 3.0):
        gamma = rs.gamma_for_mean(shape, 10.0)
        assert gamma == pytest.approx(dp_rdp._gamma_truncated_negative_binomial(shape, 10.0), rel=1e-12)
        assert rs.tnb_mean(gamma, shape) == pytest.approx(10.0, rel=1e-6)


def test_grid_is_the_max_over_candidates() -> None:
    grid = [(0.01, 1.0, 100), (0.005, 1.0, 300), (0.01, 1.0, 300)]
    base = rs.candidates_rdp(grid)
    per = [rdp.rdp_curve([c]) for c in grid]
    assert np.array_equal(base, np.maximum.reduce(per))
    # The dominating candidate decides the search's epsilon when it dominates at every order.
    assert rs.search_epsilon(grid, 5.0, 1.0, DELTA) == pytest.approx(
        rs.search_epsilon([(0.01, 1.0, 300)], 5.0, 1.0, DELTA), rel=1e-12)
    # And a search costs more than its most expensive single run.
    assert rs.search_epsilon(grid, 5.0, 1.0, DELTA) > rdp.epsilon([(0.01, 1.0, 300)], DELTA)
    # For a grid without a dominating candidate, dp-accounting on each candidate bounds ours from below.
    mixed = [(0.005, 0.8, 40), (0.05, 3.0, 400)]
    ours = rs.search_epsilon(mixed, 5.0, 0.0, DELTA)
    assert all(ours >= _reference_epsilon(*c, 5.0, 0.0) * (1 - 1e-9) for c in mixed)


def test_delta_conversion_matches_dp_accounting() -> None:
    curve = rdp.rdp_curve([(0.01, 1.0, 500)])
    for eps in (0.5, 1.0, 3.0):
        ref, _ = dp_rdp.compute_delta(rdp.ORDERS, curve, eps)
        assert rs.delta_from_rdp(rdp.ORDERS, curve, eps) == pytest.approx(ref, rel=1e-12)


def test_distribution_names_and_refusals() -> None:
    assert rs.distribution_shape("logarithmic", None) == 0.0
    assert rs.distribution_shape("geometric", None) == 1.0
    assert rs.distribution_shape("poisson", None) == math.inf
    assert rs.distribution_shape("truncated_negative_binomial", 2.0) == 2.0
    with pytest.raises(PrivacyParameterError, match="shape"):
        rs.distribution_shape("truncated_negative_binomial", None)
    with pytest.raises(PrivacyParameterError, match="shape 1"):
        rs.distribution_shape("geometric", 2.0)
    with pytest.raises(PrivacyParameterError, match="unknown"):
        rs.distribution_shape("uniform", None)
    with pytest.raises(PrivacyParameterError, match="mean"):
        rs.repeat_select_rdp(rdp.ORDERS, np.zeros(len(rdp.ORDERS)), 0.5, 1.0)
