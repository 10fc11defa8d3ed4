"""A small one-run audit of DpSgd: under the certified epsilon with noise, far above it without."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng
from enclave.sealed.public_schema import ClassLabel, NumericColumn, RegressionTarget
from enclave.training.models import CsprngDropout
from enclave.training.spec import JobSpec
from parent.audit.canaries import (
    MARGIN,
    DiracCanaries,
    audit_spec,
    default_canaries,
    default_guesses,
    guess,
    quiet_coordinates,
    synthetic_images,
)
from tests.support.specs import TUNING_PRIVACY, mlp_spec

# 784 -> 10 linear on 28x28 images: 7850 parameters, a few seconds for 100 steps.
TINY = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear" }]'
SEED = bytes(range(7, 39))
RECORDS = 100
# q = 0.1, 100 steps, sigma 2.5: epsilon about 1.74 at delta 1e-5 (PRV).
SPEC = JobSpec.from_toml(mlp_spec(key_id="alias/k", model=TINY, batch=10, steps=100, noise=2.5))


@pytest.fixture(scope="module", params=["dirac", "gaussian"])
def audited(request: pytest.FixtureRequest) -> tuple:
    kind = request.param
    return (audit_spec(SPEC, records=RECORDS, canaries=500, canary_kind=kind, seed=SEED),
            audit_spec(SPEC, records=RECORDS, canaries=500, canary_kind=kind, seed=SEED, control=True))


def test_the_noised_run_stays_under_its_certificate(audited: tuple) -> None:
    result, _ = audited
    assert 1.5 < result.epsilon_certified < 2.0
    assert result.epsilon_lower_bound <= result.epsilon_certified
    assert (result.canaries, result.guesses, result.control) == (500, 100, False)
    assert result.correct <= result.guesses


def test_the_no_noise_control_is_caught(audited: tuple) -> None:
    noised, control = audited
    assert control.control
    assert control.epsilon_certified == noised.epsilon_certified  # the claim it is held to
    assert control.epsilon_lower_bound > 1.5 * control.epsilon_certified
    assert control.epsilon_lower_bound > noised.epsilon_lower_bound
    assert control.epsilon_lower_bound <= control.ceiling
    if control.canary_kind == "dirac":
        # On the weights of the black margin the data's gradient is 0: every guess right.
        assert control.correct == control.guesses
        assert control.epsilon_lower_bound == pytest.approx(control.ceiling, abs=1e-6)


def test_json_fields(audited: tuple) -> None:
    record = audited[0].to_json()
    for key in ("epsilon_certified", "epsilon_lower_bound", "ceiling", "canaries", "guesses", "correct",
                "confidence", "control"):
        assert key in record


def test_guess_scores_the_top_as_in_and_the_bottom_as_out() -> None:
    scores = np.array([5.0, -3.0, 0.1, 4.0, -2.0, 0.0])
    member = np.array([True, False, True, False, False, True])
    # IN for 5.0 (right) and 4.0 (wrong); OUT for -3.0 (right) and -2.0 (right).
    assert guess(scores, member, 4) == 3
    assert guess(scores, member, 6) == 4  # and 0.1 IN (right), 0.0 OUT (wrong)
    with pytest.raises(ConfigError):
        guess(scores, member, 7)


def test_default_guesses() -> None:
    assert [default_guesses(m) for m in (2, 10, 500, 1000, 1005)] == [2, 2, 100, 200, 200]
    assert (default_canaries("dirac", 57_340), default_canaries("gaussian", 57_340)) == (5000, 1000)
    assert [default_canaries("dirac", n) for n in (1315, 7, 0)] == [328, 2, 2]


def test_synthetic_images_have_a_black_margin_and_noise_inside() -> None:
    rows, labels = synthetic_images(50, Csprng(SEED))
    images = rows.reshape(50, 28, 28)
    inner = images[:, MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert int(images.sum()) == int(inner.sum()) and inner.std() > 50
    assert labels.shape == (50,) and set(labels.tolist()) <= set(range(10))


def test_quiet_coordinates_are_where_the_public_data_never_reach() -> None:
    # Pixels 0..99 are always 0, so the linear layer's weights on them get no gradient at all.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    inputs = torch.rand(64, 28, 28)
    inputs.view(64, -1)[:, :100] = 0.0
    labels = torch.randint(0, 10, (64,))
    chosen = quiet_coordinates(net, inputs, labels, 300, clip=1.0, loss="cross_entropy", seed=3)
    weight_columns = chosen % 784  # weight is [10, 784], flattened first
    assert len(chosen) == 300 and len(torch.unique(chosen)) == 300
    assert bool((chosen < 7840).all()) and bool((weight_columns < 100).all())
    # The public seed breaks ties, nothing else: another seed, another draw from the same 1000.
    other = quiet_coordinates(net, inputs, labels, 300, clip=1.0, loss="cross_entropy", seed=4)
    assert not torch.equal(chosen, other) and bool(((other % 784) < 100).all())
    with pytest.raises(ConfigError, match="Dirac"):
        quiet_coordinates(net, inputs, labels, 7851, clip=1.0, loss="cross_entropy")


def test_the_probe_runs_a_model_with_dropout_and_leaves_it_training() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), CsprngDropout(0.5), nn.Linear(16, 10)).train()
    inputs, labels = torch.rand(8, 28, 28), torch.randint(0, 10, (8,))
    assert len(quiet_coordinates(net, inputs, labels, 20, clip=1.0, loss="cross_entropy")) == 20
    assert net.training


def test_dirac_canaries_add_c_on_their_coordinate_and_score_it() -> None:
    params = {"w": torch.zeros(3, 4, requires_grad=True), "b": torch.zeros(2, requires_grad=True)}
    cans = DiracCanaries(params, torch.tensor([1, 5, 13]), clip=0.5, rate=1.0, rng=Csprng(SEED))
    members = cans.member.copy()
    total = cans.sampled()
    flat = torch.zeros(14) if total is None else torch.cat([total["w"].reshape(-1), total["b"]])
    expected = torch.zeros(14)
    expected[torch.tensor([1, 5, 13])[torch.from_numpy(members)]] = 0.5
    assert torch.equal(flat, expected)  # q = 1: every IN canary, exactly C, nowhere else
    params["w"].grad = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    params["b"].grad = torch.tensor([20.0, 30.0])
    cans.observe(params)
    assert cans.scores.tolist() == [0.5, 2.5, 15.0]
    with pytest.raises(ConfigError, match="distinct"):
        DiracCanaries(params, torch.tensor([1, 1]), clip=0.5, rate=1.0, rng=Csprng(SEED))


def test_refuses_what_it_cannot_audit() -> None:
    tuning = JobSpec.from_toml(mlp_spec(key_id="alias/k", model=TINY).replace(
        "noise_multiplier = 1.0\n", TUNING_PRIVACY))
    with pytest.raises(ConfigError, match="tuning"):
        audit_spec(tuning, records=RECORDS, canaries=10)
    with pytest.raises(ConfigError, match="guesses"):
        audit_spec(SPEC, records=RECORDS, canaries=10, guesses=11)


def _tabular(records: int, regression: bool) -> tuple[JobSpec, pa.Table, pa.Schema]:
    """A public table of two numeric features and a label, its sealed-style schema, and a job on it."""
    age, income = NumericColumn("age", "int64", 0, 100), NumericColumn("income", "double", 0.0, 200.0)
    label: ClassLabel | RegressionTarget = (RegressionTarget("price", "double", 0.0, 50.0) if regression
                                            else ClassLabel("risk", 2, ("low", "high")))

    def field(column: NumericColumn | ClassLabel | RegressionTarget) -> pa.Field:
        kind = pa.int32() if isinstance(column, ClassLabel) else (pa.int64() if column.name == "age" else pa.float64())
        return pa.field(column.name, kind, nullable=False, metadata=column.metadata())

    schema = pa.schema([field(age), field(income), field(label)])
    rng = np.random.default_rng(5)
    ages = rng.integers(18, 90, records)
    incomes = rng.uniform(10, 150, records)
    target = incomes / 4 if regression else (incomes > 80).astype(np.int32)
    table = pa.table([pa.array(ages, pa.int64()), pa.array(incomes, pa.float64()),
                      pa.array(target, pa.float64() if regression else pa.int32())], schema=schema)
    spec = JobSpec.from_mapping({
        "job": {"name": "tabular-audit"},
        "model": {"format": 1, "layers": [{"type": "linear", "out": 512}, {"type": "relu"},
                                           {"type": "linear", "out": 1 if regression else 2}]},
        "data": {"features": ["age", "income"], "label": label.name},
        "task": {"kind": "regression", "loss": "mse"} if regression else {"kind": "classification"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "privacy": {"expected_batch_size": 40, "max_grad_norm": 1.0, "delta": 1e-5, "steps": 80,
                    "noise_multiplier": 4.0},
        "checkpoint": {"key_id": "alias/model"},
    })
    return spec, table, schema


@pytest.mark.parametrize("regression", [False, True])
def test_a_tabular_job_is_audited_on_a_public_table_with_its_sealed_schema(regression: bool) -> None:
    spec, table, schema = _tabular(400, regression)
    with pytest.raises(ConfigError, match="--data FILE --sealed"):
        audit_spec(spec, records=400, seed=SEED)
    noised = audit_spec(spec, records=0, data=table, schema=schema, seed=SEED)
    control = audit_spec(spec, records=0, data=table, schema=schema, seed=SEED, control=True)
    # 2 -> 512 -> 2 (or 1): 2562 (or 2049) parameters, so the default takes the quietest quarter.
    assert noised.records == 400 and noised.canaries == (512 if regression else 640)
    assert noised.epsilon_lower_bound <= noised.epsilon_certified
    # The quietest quarter holds dead ReLU units' weights, which no record moves: every guess right.
    assert control.correct == control.guesses
    assert control.epsilon_lower_bound > 3 * control.epsilon_certified > 0
