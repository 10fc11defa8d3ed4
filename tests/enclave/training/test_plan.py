"""plan_run: the job check and the budget on the plaintext header, before any key is used."""
from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from enclave.errors import ConfigError
from enclave.privacy.calibration import epsilon, max_steps
from enclave.sealed.format import SealedHeader
from enclave.training.plan import BudgetExceeded, JobDoesNotFit, plan_run
from enclave.training.spec import JobSpec

from .sealed_headers import RECORDS, dataset_header, image_field


def header(*, max_epsilon: float = 3.0, delta: float = 1e-5, records: int = RECORDS) -> SealedHeader:
    return dataset_header(max_epsilon=max_epsilon, delta=delta, records=records)


def spec(data: dict[str, str] | None = None, **privacy: Any) -> JobSpec:
    settings: dict[str, Any] = {"expected_batch_size": 100, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 200}
    settings.update(privacy)
    return JobSpec.from_mapping({
        "job": {"name": "plan"},
        "model": {"name": "mlp"},
        "data": data or {},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": {k: v for k, v in settings.items() if v is not None},
        "checkpoint": {"key_id": "alias/model"},
    })


def test_fixed_noise_within_budget_is_planned_from_public_parameters() -> None:
    plan = plan_run(spec(noise_multiplier=1.1), header())
    q = 100 / RECORDS
    assert (plan.records, plan.sampling_rate, plan.steps, plan.noise_multiplier) == (RECORDS, q, 200, 1.1)
    assert (plan.delta, plan.max_epsilon, plan.budget_delta, plan.accountant) == (1e-5, 3.0, 1e-5, "prv")
    assert plan.planned_epsilon == epsilon(q, 1.1, 200, 1e-5, "prv")
    assert plan.max_steps_within_budget == max_steps(q, 1.1, 1e-5, 3.0, "prv")
    assert plan.max_steps_within_budget >= plan.steps


def test_fixed_noise_over_budget_is_refused() -> None:
    with pytest.raises(BudgetExceeded, match=r"planned epsilon .* \(200 steps, q=0\.01, sigma=0\.3\) exceeds "
                                             r"the dataset's budget 3"):
        plan_run(spec(noise_multiplier=0.3), header())


def test_an_unbounded_epsilon_is_refused() -> None:
    # Full-batch steps with almost no noise: the accountant reports no finite epsilon.
    with pytest.raises(BudgetExceeded, match="planned epsilon inf"):
        plan_run(spec(noise_multiplier=0.01, expected_batch_size=100, steps=1000), header(records=100))


def test_a_nan_epsilon_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # NaN compares false with every budget: only an explicit check refuses it.
    monkeypatch.setattr("enclave.training.budget.epsilon", lambda *args: math.nan)
    with pytest.raises(BudgetExceeded, match="planned epsilon nan"):
        plan_run(spec(noise_multiplier=1.1), header())


def test_target_epsilon_within_budget_calibrates_the_noise() -> None:
    plan = plan_run(spec(target_epsilon=2.0), header())
    assert plan.planned_epsilon <= 2.0
    assert plan.planned_epsilon == pytest.approx(2.0, rel=1e-3)
    less_noise = epsilon(plan.sampling_rate, plan.noise_multiplier * 0.99, plan.steps, plan.delta)
    assert less_noise > 2.0


def test_target_epsilon_over_budget_is_refused_before_calibrating() -> None:
    with pytest.raises(BudgetExceeded, match="target epsilon 4 exceeds the dataset's budget 3"):
        plan_run(spec(target_epsilon=4.0), header())


def test_delta_over_budget_is_refused() -> None:
    with pytest.raises(BudgetExceeded, match="job delta 2e-05 exceeds the dataset's delta 1e-05"):
        plan_run(spec(noise_multiplier=1.1, delta=2e-5), header())


def test_steps_follow_from_epochs() -> None:
    # 3 epochs of q = 100 / 10_000: ceil(3 * 10_000 / 100) steps.
    plan = plan_run(spec(steps=None, epochs=3.0, noise_multiplier=2.0), header())
    assert plan.steps == 300
    assert plan.planned_epsilon == epsilon(0.01, 2.0, 300, 1e-5)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_the_spec_chooses_the_accountant(accountant: str) -> None:
    plan = plan_run(spec(noise_multiplier=1.1, accountant=accountant), header())
    assert plan.accountant == accountant
    assert plan.planned_epsilon == epsilon(0.01, 1.1, 200, 1e-5, accountant)
    assert plan.max_steps_within_budget == max_steps(0.01, 1.1, 1e-5, 3.0, accountant)


def test_the_accountants_disagree_so_the_choice_matters() -> None:
    prv = plan_run(spec(noise_multiplier=1.1, accountant="prv"), header())
    rdp = plan_run(spec(noise_multiplier=1.1, accountant="rdp"), header())
    assert rdp.planned_epsilon > prv.planned_epsilon


def test_rounding_slack_is_relative_and_tiny() -> None:
    # The budget travels as text in the context: a hair over it is the same number.
    assert plan_run(spec(target_epsilon=3.0 * (1 + 1e-10)), header()).max_epsilon == 3.0
    assert plan_run(spec(noise_multiplier=1.1, delta=1e-5 * (1 + 1e-10)), header()).delta > 1e-5
    with pytest.raises(BudgetExceeded, match="target epsilon"):
        plan_run(spec(target_epsilon=3.0 * (1 + 1e-8)), header())
    with pytest.raises(BudgetExceeded, match="job delta"):
        plan_run(spec(noise_multiplier=1.1, delta=1e-5 * (1 + 1e-8)), header())


def test_planned_epsilon_at_the_budget_passes() -> None:
    # Calibrate a sigma whose epsilon lands just under 3, then set the budget to exactly that epsilon.
    plan = plan_run(spec(target_epsilon=3.0), header())
    exact = plan.planned_epsilon
    assert math.isfinite(exact)
    fixed = spec(noise_multiplier=plan.noise_multiplier)
    assert plan_run(fixed, header(max_epsilon=exact)).planned_epsilon == exact
    with pytest.raises(BudgetExceeded, match="planned epsilon"):
        plan_run(fixed, header(max_epsilon=exact * (1 - 1e-6)))


# -- the whole job check runs first ------------------------------------------------------------


def test_a_job_that_does_not_fit_the_data_is_refused_with_every_problem() -> None:
    schema = pa.schema([image_field(size=64, shape=b"8x8"), pa.field("y", pa.int64())])
    bad = dataset_header(schema=schema, max_epsilon=1.0)
    with pytest.raises(JobDoesNotFit) as info:
        plan_run(spec(noise_multiplier=0.3), bad)
    err = info.value
    assert err.code == "config" and isinstance(err, ConfigError)
    assert [p.where for p in err.problems] == ["data.features", "data.label", "privacy.noise_multiplier"]
    text = str(err)
    assert text.startswith("the job cannot run on dataset 'plan-ds' (3 problems): data.features: column 'image' holds "
                           "64 values per record, model 'mlp' takes 784; data.label: column 'label' is not in")
    assert "privacy.noise_multiplier: planned epsilon" in text and "\n" not in text


def test_only_budget_problems_are_a_budget_refusal_listing_each() -> None:
    with pytest.raises(BudgetExceeded) as info:
        plan_run(spec(noise_multiplier=0.3, delta=1e-4), header())
    assert info.value.code == "budget"
    assert [p.where for p in info.value.problems] == ["privacy.delta", "privacy.noise_multiplier"]
    assert str(info.value).startswith("the job cannot run on dataset 'plan-ds' (2 problems): privacy.delta: job delta")


def test_a_refusal_of_one_problem_says_so() -> None:
    header_ = dataset_header(dataset_id="other")
    with pytest.raises(JobDoesNotFit, match=r"^the job cannot run on dataset 'other' \(1 problem\): data\.train: "
                                            r"names dataset 'plan-ds', the sealed file is 'other'$"):
        plan_run(spec({"train": "plan-ds"}, noise_multiplier=1.1), header_)
