"""The RDP accountant: closed forms, the conversion, and dp-accounting's per-order values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.privacy import rdp


def test_order_grid_is_the_usual_one() -> None:
    assert rdp.ORDERS == tuple(dp_rdp.DEFAULT_RDP_ORDERS)


def test_no_subsampling_is_the_gaussian_closed_form() -> None:
    got = rdp.step_rdp(1.0, 1.7)
    assert np.allclose(got, np.array(rdp.ORDERS) / (2 * 1.7**2), rtol=1e-15)


@pytest.mark.parametrize(("q", "sigma"), [(0.01, 1.0), (0.3, 0.7), (1e-4, 4.0)])
def test_order_two_closed_form(q: float, sigma: float) -> None:
    # A_2 = E_B[(A/B)^2] = 1 + q^2 (e^(1/sigma^2) - 1)
    (got,) = rdp.step_rdp(q, sigma, orders=(2.0,))
    assert got == pytest.approx(math.log1p(q * q * math.expm1(1 / sigma**2)), rel=1e-12)


@pytest.mark.parametrize(("q", "sigma"), [(0.004, 1.0), (0.05, 0.8), (0.2, 5.0), (1e-3, 0.6)])
def test_every_order_matches_dp_accounting(q: float, sigma: float) -> None:
    ours = rdp.step_rdp(q, sigma)
    ref = dp_rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, rdp.ORDERS)
    finite = np.isfinite(ref)
    assert (np.isfinite(ours) == finite).all()
    assert np.allclose(ours[finite], ref[finite], rtol=1e-10, atol=0)


def test_conversion_known_answers() -> None:
    # One order: eps = r + log(1 - 1/a) - log(delta a) / (a - 1)
    r, a, delta = 3.0, 8.0, 1e-5
    expected = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
    assert rdp.epsilon_from_rdp([a], [r], delta) == pytest.approx(expected, rel=1e-15)
    # The minimum over orders is taken.
    assert rdp.epsilon_from_rdp([a, 2.0], [r, 100.0], delta) == pytest.approx(expected)
    # A curve this small already gives delta via KL at epsilon 0.
    assert rdp.epsilon_from_rdp([2.0], [1e-12], 1e-5) == 0.0
    # Orders too close to 1 are not used; infinite curves give infinity.
    assert rdp.epsilon_from_rdp([1.005], [0.5], 1e-5) == math.inf
    assert rdp.epsilon_from_rdp([2.0], [math.inf], 1e-5) == math.inf


def test_composition_adds_curves() -> None:
    one = rdp.rdp_curve([(0.01, 1.0, 1)])
    mixed = rdp.rdp_curve([(0.01, 1.0, 30), (0.2, 2.0, 5)])
    assert np.allclose(mixed, 30 * one + 5 * rdp.step_rdp(0.2, 2.0), rtol=1e-14)
    assert rdp.epsilon([(0.01, 1.0, 0)], 1e-5) == 0.0
