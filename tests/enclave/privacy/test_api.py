"""enclave.privacy's public API: validation, monotonicity, calibration, the ledger."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError
from enclave.privacy import calibration as privacy
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.errors import BudgetSearchError, PrivacyParameterError
from enclave.privacy.ledger import PrivacyLedger, Segment

QUICK = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Ranges where one PRV evaluation takes tens of milliseconds.
qs = st.sampled_from([0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0])
sigmas = st.floats(min_value=0.7, max_value=6.0, allow_nan=False)
step_counts = st.integers(min_value=1, max_value=3000)
deltas = st.sampled_from([1e-5, 1e-6, 1e-3])
accountants = st.sampled_from(ACCOUNTANT_NAMES)


def _not_below(a: float, b: float) -> bool:
    """a >= b up to float noise of the FFT (relative 1e-9)."""
    return a >= b * (1 - 1e-9) - 1e-12


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"q": 0.0}, "sampling rate"),
    ({"q": 1.5}, "sampling rate"),
    ({"q": -0.1}, "sampling rate"),
    ({"q": math.nan}, "sampling rate"),
    ({"q": "0.1"}, "sampling rate"),
    ({"sigma": 0.0}, "noise multiplier"),
    ({"sigma": -1.0}, "noise multiplier"),
    ({"sigma": math.inf}, "noise multiplier"),
    ({"steps": -1}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"steps": True}, "steps"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"delta": 2e-5j}, "delta"),
    ({"accountant": "moments"}, "accountant"),
    ({"accountant": None}, "accountant"),
])
def test_bad_parameters_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    args = {"q": 0.01, "sigma": 1.0, "steps": 10, "delta": 1e-5, "accountant": "prv", **kwargs}
    with pytest.raises(PrivacyParameterError) as err:
        privacy.epsilon(**args)
    assert isinstance(err.value, ConfigError)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_calibration_inputs_are_refused() -> None:
    with pytest.raises(PrivacyParameterError, match="target epsilon"):
        privacy.noise_multiplier(0.0, 1e-5, 0.01, 100)
    with pytest.raises(PrivacyParameterError, match="target epsilon"):
        privacy.noise_multiplier(math.inf, 1e-5, 0.01, 100)
    with pytest.raises(PrivacyParameterError, match="steps"):
        privacy.noise_multiplier(1.0, 1e-5, 0.01, 0)
    with pytest.raises(PrivacyParameterError, match="epsilon budget"):
        privacy.max_steps(0.01, 1.0, 1e-5, -1.0)
    with pytest.raises(PrivacyParameterError, match="accountant"):
        privacy.max_steps(0.01, 1.0, 1e-5, 1.0, accountant="gdp")


@pytest.mark.parametrize("accountant", ACCOUNTANT_NAMES)
def test_zero_steps_and_full_batches(accountant: str) -> None:
    assert privacy.epsilon(0.01, 1.0, 0, 1e-5, accountant=accountant) == 0.0
    full = privacy.epsilon(1.0, 2.0, 10, 1e-5, accountant=accountant)
    assert type(full) is float and 5 < full < 12
    assert type(privacy.epsilon(0.01, 1.0, 10, 1e-5, accountant=accountant)) is float
    assert privacy.epsilon(0.01, 1.0, 10.0, 1e-5, accountant=accountant) == privacy.epsilon(
        0.01, 1.0, 10, 1e-5, accountant=accountant)


# --- monotonicity -------------------------------------------------------------------------------


@QUICK
@given(q=qs, sigma=sigmas, steps=step_counts, extra=st.integers(1, 2000), delta=deltas, acc=accountants)
def test_epsilon_grows_with_steps(q: float, sigma: float, steps: int, extra: int, delta: float,
                                  acc: str) -> None:
    assert _not_below(privacy.epsilon(q, sigma, steps + extra, delta, acc),
                      privacy.epsilon(q, sigma, steps, delta, acc))


@QUICK
@given(pair=st.lists(qs, min_size=2, max_size=2, unique=True), sigma=sigmas, steps=step_counts,
       delta=deltas, acc=accountants)
def test_epsilon_grows_with_sampling_rate(pair: list[float], sigma: float, steps: int, delta: float,
                                          acc: str) -> None:
    low, high = sorted(pair)
    assert _not_below(privacy.epsilon(high, sigma, steps, delta, acc),
                      privacy.epsilon(low, sigma, steps, delta, acc))


@QUICK
@given(q=qs, sigma=sigmas, factor=st.floats(1.01, 3.0), steps=step_counts, delta=deltas,
       acc=accountants)
def test_epsilon_shrinks_with_noise(q: float, sigma: float, factor: float, steps: int, delta: float,
                                    acc: str) -> None:
    assert _not_below(privacy.epsilon(q, sigma, steps, delta, acc),
                      privacy.epsilon(q, sigma * factor, steps, delta, acc))


@QUICK
@given(q=qs, sigma=sigmas, steps=step_counts, acc=accountants)
def test_epsilon_shrinks_with_delta(q: float, sigma: float, steps: int, acc: str) -> None:
    assert _not_below(privacy.epsilon(q, sigma, steps, 1e-6, acc),
                      privacy.epsilon(q, sigma, steps, 1e-4, acc))


# --- calibration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "delta", "q", "steps", "accountant"), [
    (1.0, 1e-5, 0.004, 5000, "prv"),
    (3.0, 1e-5, 256 / 60000, 14063, "prv"),
    (8.0, 1e-6, 1.0, 1, "prv"),
    (1.0, 1e-5, 0.004, 5000, "rdp"),
    (0.5, 1e-6, 0.05, 300, "rdp"),
])
def test_noise_multiplier_is_the_smallest_sufficient(target: float, delta: float, q: float, steps: int,
                                                     accountant: str) -> None:
    sigma = privacy.noise_multiplier(target, delta, q, steps, accountant=accountant)
    assert privacy.epsilon(q, sigma, steps, delta, accountant) <= target
    assert privacy.epsilon(q, sigma * (1 - 1e-3), steps, delta, accountant) > target


def test_noise_multiplier_known_point() -> None:
    # MNIST-sized: batch 256 of 60000 for 60 epochs at epsilon 3 (PLD): sigma about 0.968.
    sigma = privacy.noise_multiplier(3.0, 1e-5, 256 / 60000, 14063)
    assert sigma == pytest.approx(0.9685, abs=2e-3)


def test_noise_search_gives_up_beyond_the_ceiling() -> None:
    with pytest.raises(BudgetSearchError, match="not reached"):
        privacy.noise_multiplier(1e-7, 1e-5, 1.0, 1)


@pytest.mark.parametrize(("q", "sigma", "delta", "budget", "accountant"), [
    (0.004, 1.0, 1e-5, 1.5, "prv"),
    (0.01, 0.8, 1e-6, 4.0, "prv"),
    (1.0, 5.0, 1e-6, 8.0, "prv"),
    (0.004, 1.0, 1e-5, 1.5, "rdp"),
])
def test_max_steps_is_the_largest_within_budget(q: float, sigma: float, delta: float, budget: float,
                                                accountant: str) -> None:
    steps = privacy.max_steps(q, sigma, delta, budget, accountant=accountant)
    assert steps >= 1
    assert privacy.epsilon(q, sigma, steps, delta, accountant) <= budget
    assert privacy.epsilon(q, sigma, steps + 1, delta, accountant) > budget


def test_max_steps_is_zero_when_one_step_is_too_many() -> None:
    assert privacy.max_steps(1.0, 0.7, 1e-5, 1.0) == 0
    assert privacy.max_steps(0.01, 1.0, 1e-5, 0.0) == 0


# --- the ledger -----------------------------------------------------------------------------------


def test_record_merges_equal_segments_only() -> None:
    ledger = PrivacyLedger(1e-5)
    ledger.record(0.01, 1.0)
    ledger.record(0.01, 1.0, steps=9)
    ledger.record(0.02, 1.0, steps=5)
    ledger.record(0.02, 1.0, steps=0)
    ledger.record(0.01, 1.0, steps=3)
    assert ledger.segments == (Segment(0.01, 1.0, 10), Segment(0.02, 1.0, 5), Segment(0.01, 1.0, 3))
    assert ledger.steps == 18
    with pytest.raises(PrivacyParameterError):
        ledger.record(0.01, -1.0)
    with pytest.raises(PrivacyParameterError):
        Segment(0.01, 1.0, -2)


@QUICK
@given(q=qs, sigma=sigmas, chunks=st.lists(st.integers(0, 800), min_size=1, max_size=5), acc=accountants)
def test_homogeneous_ledger_equals_single_call(q: float, sigma: float, chunks: list[int], acc: str) -> None:
    ledger = PrivacyLedger(1e-5, accountant=acc)
    for chunk in chunks:
        ledger.record(q, sigma, steps=chunk)
    assert ledger.steps == sum(chunks)
    assert ledger.epsilon() == privacy.epsilon(q, sigma, sum(chunks), 1e-5, acc)


def test_heterogeneous_ledger_matches_dp_accounting() -> None:
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    history = [(0.01, 1.2, 300), (0.02, 0.9, 100), (1.0, 4.0, 3)]
    ledger = PrivacyLedger(1e-5)
    for q, sigma, steps in history:
        ledger.record(q, sigma, steps=steps)
    refs = {"prv": pld_privacy_accountant.PLDAccountant(), "rdp": rdp_privacy_accountant.RdpAccountant()}
    for acc in refs.values():
        for q, sigma, steps in history:
            acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    prv = ledger.epsilon()
    assert refs["prv"].get_epsilon(1e-5) * (1 - 0.005) <= prv <= refs["prv"].get_epsilon(1e-5) * 1.03
    assert ledger.epsilon("rdp") == pytest.approx(refs["rdp"].get_epsilon(1e-5), rel=0.01)
    # Composition is commutative: the order of the history does not matter.
    backwards = PrivacyLedger(1e-5, segments=[Segment(*s) for s in reversed(history)])
    assert backwards.epsilon() == prv
    # Each part alone costs less than the whole.
    assert all(privacy.epsilon(q, s, t, 1e-5) < prv for q, s, t in history)


segments = st.lists(
    st.builds(Segment, q=qs, sigma=sigmas, steps=st.integers(0, 10**7)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(delta=st.floats(1e-12, 0.5), acc=accountants, history=segments)
def test_ledger_dict_round_trip(delta: float, acc: str, history: list[Segment]) -> None:
    ledger = PrivacyLedger(delta, accountant=acc, segments=history)
    data = ledger.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain ints, floats, str, list, dict only
    for seg in data["segments"]:
        assert type(seg["q"]) is float and type(seg["sigma"]) is float and type(seg["steps"]) is int
    again = PrivacyLedger.from_dict(json.loads(json.dumps(data)))
    assert again == ledger and again.to_dict() == data
    assert again.delta == delta and again.accountant == acc and again.segments == ledger.segments


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("delta"),
    lambda d: d.update(extra=1),
    lambda d: d.update(version=2),
    lambda d: d.update(version=True),
    lambda d: d.update(delta=1.5),
    lambda d: d.update(accountant="zcdp"),
    lambda d: d.update(segments="q=1"),
    lambda d: d.update(segments=[{"q": 0.1, "sigma": 1.0}]),
    lambda d: d.update(segments=[{"q": 0.1, "sigma": 1.0, "steps": -3}]),
    lambda d: d.update(segments=[{"q": 0.1, "sigma": "1", "steps": 3}]),
    lambda d: d.update(segments=[{"q": 0.1, "sigma": 1.0, "steps": False}]),
])
def test_from_dict_refuses_malformed_ledgers(mutate: Any) -> None:
    data = PrivacyLedger(1e-5, segments=[Segment(0.1, 1.0, 3)]).to_dict()
    mutate(data)
    with pytest.raises(PrivacyParameterError):
        PrivacyLedger.from_dict(data)


def test_ledger_epsilon_accountant_override_and_empty() -> None:
    ledger = PrivacyLedger(1e-5, accountant="rdp")
    assert ledger.epsilon() == 0.0 and ledger.steps == 0
    ledger.record(0.01, 1.0, steps=500)
    assert ledger.epsilon() == privacy.epsilon(0.01, 1.0, 500, 1e-5, "rdp")
    assert ledger.epsilon("prv") == privacy.epsilon(0.01, 1.0, 500, 1e-5, "prv")
    assert ledger.epsilon("prv") < ledger.epsilon()
    with pytest.raises(PrivacyParameterError):
        ledger.epsilon("nope")
    with pytest.raises(PrivacyParameterError):
        PrivacyLedger(0.0)
    with pytest.raises(PrivacyParameterError):
        PrivacyLedger(1e-5, segments=[(0.1, 1.0, 3)])  # type: ignore[list-item]
