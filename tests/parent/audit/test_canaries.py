"""A small one-run audit of DpSgd: under the certified epsilon with noise, far above it without."""
from __future__ import annotations

import numpy as np
import pytest

from enclave.errors import ConfigError
from enclave.training.spec import JobSpec
from parent.audit.canaries import audit_spec, default_guesses, guess
from tests.support.specs import TUNING_PRIVACY, mlp_spec

# 784 -> 10 linear on 28x28 images: 7850 parameters, a few seconds for 100 steps.
TINY = 'format = 1\nlayers = [{ type = "flatten" }, { type = "linear" }]'
SEED = bytes(range(7, 39))
RECORDS = 100
# q = 0.1, 100 steps, sigma 2.5: epsilon about 1.74 at delta 1e-5 (PRV).
SPEC = JobSpec.from_toml(mlp_spec(key_id="alias/k", model=TINY, batch=10, steps=100, noise=2.5))


@pytest.fixture(scope="module")
def audited() -> tuple:
    return (audit_spec(SPEC, records=RECORDS, canaries=500, seed=SEED),
            audit_spec(SPEC, records=RECORDS, canaries=500, seed=SEED, control=True))


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


def test_refuses_what_it_cannot_audit() -> None:
    tuning = JobSpec.from_toml(mlp_spec(key_id="alias/k", model=TINY).replace(
        "noise_multiplier = 1.0\n", TUNING_PRIVACY))
    with pytest.raises(ConfigError, match="tuning"):
        audit_spec(tuning, records=RECORDS, canaries=10)
    with pytest.raises(ConfigError, match="guesses"):
        audit_spec(SPEC, records=RECORDS, canaries=10, guesses=11)
