"""The [tuning] section: parsing, refusals, the canonical form, and candidates applied to the spec."""
from __future__ import annotations

import hashlib

import cbor2
import pytest

from enclave.training.spec import JobSpec, SpecError
from tests.parent.test_job_check import spec_text
from tests.support.specs import TUNING_PRIVACY, mlp_spec

EVAL = '[eval]\npublic = "pub"\n'
TUNING = """
[tuning]
lr = [0.05, 0.1]
expected_batch_size = [10, 20, 40]
trials = { distribution = "geometric", mean = 3 }
select = { metric = "accuracy/pub" }
"""


def _spec(tuning: str = TUNING, *, accountant: str = 'accountant = "rdp"\n', eval_: str = EVAL,
          checkpoint_every: int = 0) -> str:
    text = mlp_spec(key_id="alias/k", extra=eval_ + tuning, checkpoint_every=checkpoint_every)
    return text.replace("noise_multiplier = 1.0\n", "noise_multiplier = 1.0\n" + accountant)


def test_without_tuning_the_hash_is_unchanged() -> None:
    plain = JobSpec.from_toml(_spec(""))
    assert plain.tuning is None and "tuning" not in plain.to_canonical()


def test_tuning_parses_and_enters_the_hash() -> None:
    plain = JobSpec.from_toml(_spec(""))
    spec = JobSpec.from_toml(_spec())
    tuning = spec.tuning
    assert tuning is not None
    assert tuning.grid == (("lr", (0.05, 0.1)), ("expected_batch_size", (10, 20, 40)))
    assert (tuning.distribution, tuning.mean, tuning.shape, tuning.metric) == ("geometric", 3.0, None, "accuracy/pub")
    assert tuning.size == 6 and not tuning.minimise
    assert spec.sha256 != plain.sha256
    assert spec.to_canonical()["tuning"] == {
        "lr": [0.05, 0.1], "expected_batch_size": [10, 20, 40],
        "trials": {"distribution": "geometric", "mean": 3.0, "shape": None},
        "select": {"metric": "accuracy/pub"},
    }
    # Key order and number spelling do not matter.
    other = TUNING.replace("lr = [0.05, 0.1]\n", "").replace("[tuning]\n", "[tuning]\nlr = [5e-2, 1e-1]\n")
    assert JobSpec.from_toml(_spec(other)).sha256 == spec.sha256


def test_candidates_cover_the_grid_and_apply() -> None:
    spec = JobSpec.from_toml(_spec())
    assert spec.tuning is not None
    points = [spec.tuning.candidate(i) for i in range(spec.tuning.size)]
    assert len({tuple(p.items()) for p in points}) == 6
    assert points[0] == {"lr": 0.05, "expected_batch_size": 10}
    assert points[5] == {"lr": 0.1, "expected_batch_size": 40}
    applied = spec.with_candidate(points[4])
    assert applied.optimizer.lr == 0.1 and applied.privacy.expected_batch_size == 20
    epochs = spec.with_candidate({"epochs": 2.0})
    assert (epochs.privacy.epochs, epochs.privacy.steps) == (2.0, None)
    with pytest.raises(SpecError, match="outside the grid"):
        spec.tuning.candidate(6)


def test_truncated_negative_binomial_takes_a_shape() -> None:
    tnb = TUNING.replace('"geometric", mean = 3', '"truncated_negative_binomial", mean = 3, shape = 0.5')
    spec = JobSpec.from_toml(_spec(tnb))
    assert spec.tuning is not None and spec.tuning.shape == 0.5


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('"geometric", mean = 3', '"truncated_negative_binomial", mean = 3'),
     "tuning.trials.shape is required"),
    (lambda t: t.replace("mean = 3", "mean = 3, shape = 2"), "applies to truncated_negative_binomial only"),
    (lambda t: t.replace("mean = 3", "mean = 0.5"), r"tuning.trials.mean must be in \[1"),
    (lambda t: t.replace('"geometric"', '"uniform"'), "tuning.trials.distribution must be one of"),
    (lambda t: t.replace("lr = [0.05, 0.1]", "lr = [0.1, 0.1]"), "more than once"),
    (lambda t: t.replace("lr = [0.05, 0.1]", "lr = []"), "array of 1..16"),
    (lambda t: t.replace("lr = [0.05, 0.1]", "lr = [0.1]\nepochs = [1]\nsteps = [2]"), "not both"),
    (lambda t: t.replace("lr = [0.05, 0.1]", "momentum = [0.5]"), "unknown key 'tuning.momentum'"),
    (lambda t: t.replace('"accuracy/pub"', '"accuracy/train"'), "tuning.select.metric must be one of"),
    (lambda t: t.replace('"accuracy/pub"', '"rmse/pub"'), "not released for a classification job"),
    (lambda t: t.replace('select = { metric = "accuracy/pub" }\n', ""), "tuning.select is required"),
    (lambda t: t.replace('trials = { distribution = "geometric", mean = 3 }\n', ""), "tuning.trials is required"),
    (lambda t: t.replace("lr = [0.05, 0.1]\nexpected_batch_size = [10, 20, 40]\n", ""), "at least one candidate"),
])
def test_refusals(change: object, message: str) -> None:
    assert callable(change)
    with pytest.raises(SpecError, match=message):
        JobSpec.from_toml(_spec(change(TUNING)))


def test_tuning_needs_rdp_public_eval_and_no_intermediate_checkpoints() -> None:
    with pytest.raises(SpecError, match='accountant = "rdp"'):
        JobSpec.from_toml(_spec(accountant=""))
    with pytest.raises(SpecError, match="private holdout is not supported"):
        JobSpec.from_toml(_spec(eval_=""))
    with pytest.raises(SpecError, match="checkpoint.every_steps"):
        JobSpec.from_toml(_spec(checkpoint_every=5))


KNOWN = spec_text(privacy=TUNING_PRIVACY)
# Known answer: SHA-256 of the canonical CBOR of KNOWN (the map below, cbor2 canonical=True).
KNOWN_SHA256 = "be7ce1dc58dcd0bd55cf52b684d96e834de519b666a57266db872e202e304e34"


def test_tuning_known_answer() -> None:
    expected = {
        "format": "hermetic-job-spec-v1", "job": {"name": "check"}, "model": {"name": "tanh_cnn"},
        "data": {"train": None, "features": "image", "label": "label"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
        "privacy": {"expected_batch_size": 100, "epochs": None, "steps": 200, "max_grad_norm": 1.0, "delta": 1e-5,
                    "target_epsilon": None, "noise_multiplier": 1.5, "accountant": "rdp"},
        "eval": {"public": "pub", "every_steps": 200},
        "checkpoint": {"every_steps": None, "key_id": "alias/model"},
        "tuning": {"lr": [0.05, 0.1, 0.2], "steps": [100, 200],
                   "trials": {"distribution": "geometric", "mean": 4.0, "shape": None},
                   "select": {"metric": "accuracy/pub"}},
    }
    spec = JobSpec.from_toml(KNOWN)
    assert spec.to_canonical() == expected
    assert hashlib.sha256(cbor2.dumps(expected, canonical=True)).hexdigest() == KNOWN_SHA256 == spec.sha256
