"""A hyper-parameter search end to end on the local stack: a tabular job with a public holdout,
mean 3 trials, a tiny model and few steps; one checkpoint and one set of metrics come out, and the
certificate's search verifies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event as ev
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.privacy import rdp
from enclave.transport.messages import PUBLIC_PREFIX
from parent.datasets.schema import declaration_from_flags
from parent.job_check import sealed_public_schema
from parent.public_data import load_public_dataset
from parent.sources import BytesSource
from tests.integration.conftest import DataPath
from tests.integration.test_tabular import _patients, _seal
from tests.integration.test_training import _train_in_process
from tests.support.specs import mlp_spec

TUNING = """[eval]
public = "holdout"
[tuning]
lr = [0.2, 0.5]
steps = [5, 10]
trials = { distribution = "geometric", mean = 3 }
select = { metric = "accuracy/holdout" }
"""


def test_a_small_search_releases_one_trial_and_a_verifiable_search(data_path: DataPath, tmp_path: Path) -> None:
    declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                         drop=["cost"], label="diagnosis", classes="low,high")
    rng = np.random.default_rng(17)
    sealed = _seal(data_path, tmp_path, "tuned", declaration, _patients(rng, 1000))
    holdout = tmp_path / "holdout.csv"
    holdout.write_text(_patients(rng, 200))
    public = load_public_dataset("holdout", holdout, schema=sealed_public_schema(str(sealed)))
    layers = '[{ type = "linear", out = 8 }, { type = "tanh" }, { type = "linear", out = 2 }]'
    spec = mlp_spec(key_id=data_path.model_key_id, name="tuned", model=f"format = 1\nlayers = {layers}",
                    data='features = ["age", "city"]\nlabel = "diagnosis"', batch=100, steps=5, noise=2.0,
                    extra=TUNING).replace("noise_multiplier = ", 'accountant = "rdp"\nnoise_multiplier = ')
    out = tmp_path / "out"
    body = _train_in_process(data_path, "tuned", [("tuned-v1", str(sealed)),
                                                  (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc))], spec, out)
    search = body.search
    assert search is not None and search.trials >= 1
    assert len(list((out / "checkpoints").iterdir())) == 1
    # One set of public metrics, the selected trial's: accuracy (the score) and, for two classes, AUC.
    assert [m.name for m in body.metrics] == ["accuracy/holdout", "auc/holdout"]
    assert {m.step for m in body.metrics} == {body.steps} and body.metrics[0].value == search.score
    assert search.selected["steps"] == body.steps and search.selected["lr"] in (0.2, 0.5)
    acc = dp_rdp.RdpAccountant(list(rdp.ORDERS))
    one = ev.SelfComposedDpEvent(ev.PoissonSampledDpEvent(0.1, ev.GaussianDpEvent(2.0)), 10)
    acc.compose(ev.RepeatAndSelectDpEvent(one, 3.0, 1.0))
    assert body.epsilon["rdp"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
