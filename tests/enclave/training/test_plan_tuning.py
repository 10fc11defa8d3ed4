"""Planning a tuning job: the whole search is planned, calibrated and checked against the caps."""
from __future__ import annotations

from typing import Any

import pytest
from dp_accounting import dp_event as ev
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.privacy import rdp
from enclave.privacy.calibration import epsilon
from enclave.training.plan import BudgetExceeded, plan_run
from enclave.training.spec import JobSpec

from .sealed_headers import RECORDS, dataset_header

TUNING = {"lr": [0.05, 0.1], "expected_batch_size": [100, 200], "steps": [50, 100],
          "trials": {"distribution": "logarithmic", "mean": 4.0}, "select": {"metric": "accuracy/pub"}}


def spec(tuning: dict[str, Any] | None = None, **privacy: Any) -> JobSpec:
    settings: dict[str, Any] = {"expected_batch_size": 100, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 200,
                                "accountant": "rdp"}
    settings.update(privacy)
    return JobSpec.from_mapping({
        "job": {"name": "plan"}, "model": {"name": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": settings, "eval": {"public": "pub"}, "checkpoint": {"key_id": "alias/model"},
        "tuning": tuning or TUNING,
    })


def reference(q: float, sigma: float, steps: int, mean: float, shape: float) -> float:
    acc = dp_rdp.RdpAccountant(list(rdp.ORDERS))
    one = ev.SelfComposedDpEvent(ev.PoissonSampledDpEvent(q, ev.GaussianDpEvent(sigma)), steps)
    acc.compose(ev.RepeatAndSelectDpEvent(one, mean, shape))
    return float(acc.get_epsilon(1e-5))


def test_the_search_is_planned_with_its_distinct_runs() -> None:
    plan = plan_run(spec(noise_multiplier=1.2), dataset_header(max_epsilon=10.0))
    assert plan.search is not None
    q1, q2 = 100 / RECORDS, 200 / RECORDS
    assert [(r.q, r.sigma, r.steps) for r in plan.search.runs] == [
        (q1, 1.2, 50), (q1, 1.2, 100), (q2, 1.2, 50), (q2, 1.2, 100)]
    assert (plan.search.distribution, plan.search.mean, plan.search.shape) == ("logarithmic", 4.0, None)
    # The costliest candidate dominates at every order here: the search is its repeat-and-select.
    assert plan.planned_epsilon == pytest.approx(reference(q2, 1.2, 100, 4.0, 0.0), rel=1e-6)
    assert (plan.sampling_rate, plan.steps, plan.accountant) == (q2, 100, "rdp")
    assert plan.planned_epsilon > epsilon(q2, 1.2, 100, 1e-5, "rdp")
    segments, searches = plan.charge()
    assert segments == [] and searches == [plan.search]


def test_the_target_is_met_by_the_whole_search() -> None:
    plan = plan_run(spec(target_epsilon=4.0), dataset_header(max_epsilon=4.0))
    assert plan.search is not None
    sigma = plan.noise_multiplier
    q2 = 200 / RECORDS
    assert reference(q2, sigma, 100, 4.0, 0.0) <= 4.0 * (1 + 1e-9)
    assert reference(q2, sigma * 0.995, 100, 4.0, 0.0) > 4.0
    # A single run at that sigma spends much less: the search's cost is what was calibrated.
    assert epsilon(q2, sigma, 100, 1e-5, "rdp") < 4.0 * 0.9


def test_a_search_past_the_cap_is_refused_naming_it() -> None:
    with pytest.raises(BudgetExceeded, match=r"planned epsilon .* of the search \(logarithmic trials, mean 4, "
                                             r"4 distinct runs, sigma=1\.2\) exceeds the dataset's budget 1"):
        plan_run(spec(noise_multiplier=1.2), dataset_header(max_epsilon=1.0))


def test_a_candidate_batch_larger_than_the_data_is_a_problem() -> None:
    tuning = dict(TUNING, expected_batch_size=[100, RECORDS + 1])
    with pytest.raises(Exception, match=f"expected_batch_size {RECORDS + 1} exceeds"):
        plan_run(spec(tuning, noise_multiplier=1.2), dataset_header(max_epsilon=10.0))


def test_selecting_on_auc_is_refused_unless_the_label_has_two_classes() -> None:
    # The preset gives 10 classes: no trial would release an AUC, so none could be scored.
    from enclave.training.check import check_job

    auc = dict(TUNING, select={"metric": "auc/pub"})
    problems = check_job(spec(auc, noise_multiplier=1.2), dataset_header(max_epsilon=10.0))
    assert [(p.where, p.message) for p in problems] == [
        ("tuning.select.metric", "auc is released for two classes only, column 'label' has 10: "
                                 "select on accuracy/pub")]
    assert check_job(spec(noise_multiplier=1.2), dataset_header(max_epsilon=10.0)) == []
