"""Fine-tuning end to end: a trained tabular model's `model.safetensors` is the next job's initial weights.

The first job trains and its final checkpoint is decrypted to a model directory. A second
job names that file by `weights_sha256` and streams it; at a vanishing learning rate its
first release reproduces the first model's accuracy on the holdout, which only a model
started from those weights can, and its certificate's model hash binds the file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import load

from enclave.training.spec import JobSpec
from enclave.transport.messages import PUBLIC_PREFIX, WEIGHTS_STREAM
from parent.checkpoints import decrypt_checkpoint
from parent.datasets.schema import declaration_from_flags
from parent.job_check import check_job, sealed_public_schema
from parent.model_out import load_model_dir, parameter_list, predict, sealed_arrow_schema, write_model_dir
from parent.public_data import load_public_dataset
from parent.sources import BytesSource
from tests.integration.conftest import MODEL_OWNER, DataPath, kms_client
from tests.integration.test_tabular import STEPS, _spec, _train
from tests.integration.test_training import _train_in_process
from tests.support.specs import mlp_spec

DATA = 'features = ["age", "city"]\nlabel = "diagnosis"'
LAYERS = '[{ type = "linear", out = 16 }, { type = "tanh" }, { type = "linear", out = 2 }]'


def test_a_decrypted_model_is_the_initial_weights_of_the_next_job(data_path: DataPath, tmp_path: Path) -> None:
    declaration = declaration_from_flags(numeric=["age:0:120"], categorical=["city=north|south|east"],
                                         drop=["cost"], label="diagnosis", classes="low,high")
    first_spec = _spec(data_path.model_key_id, 2, DATA)
    assert f"layers = {LAYERS}" in first_spec
    first = _train(data_path, tmp_path, "patients", declaration, first_spec)
    final = {m.name: m.value for m in first.metrics if m.step == STEPS}

    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{STEPS:08d}.sealed"
    _, state = decrypt_checkpoint(checkpoint, kms_client=kms_client(data_path.emulator.url, MODEL_OWNER))
    sealed, holdout = tmp_path / "patients.sealed", tmp_path / "patients-holdout.csv"
    write_model_dir(state, first_spec, sealed_arrow_schema(str(sealed)), tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    predicted = dict(predict(load_model_dir(tmp_path / "model"), holdout).metrics)
    assert predicted["accuracy"] == final["accuracy/holdout"]

    # The same layers on the same schema, starting from the file: a step at a vanishing rate leaves them as they are.
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    spec = mlp_spec(key_id=data_path.model_key_id, name="fine-tune", data=DATA, lr=1e-9, batch=100, steps=1,
                    noise=1.5, model=f'format = 1\nlayers = {LAYERS}\nweights_sha256 = "{sha256}"',
                    extra='[eval]\npublic = "holdout"\nevery_steps = 1')
    (tmp_path / "fine-tune.toml").write_text(spec)
    # What `hermetic model params` lists is what the model directory holds, and the host check passes.
    assert dict(parameter_list(tmp_path / "fine-tune.toml", str(sealed)).shapes) == {
        name: tuple(t.shape) for name, t in load(weights.read_bytes()).items()}
    assert check_job(tmp_path / "fine-tune.toml", [sealed], weights_path=weights).ok

    public = load_public_dataset("holdout", holdout, schema=sealed_public_schema(str(sealed)))
    streams = [(WEIGHTS_STREAM, str(weights)), ("patients-v1", str(sealed)),
               (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc))]
    body = _train_in_process(data_path, "fine-tune", streams, spec, tmp_path / "tuned")
    released = {m.name: m.value for m in body.metrics if m.step == 1}
    assert released["accuracy/holdout"] == final["accuracy/holdout"]
    assert abs(released["auc/holdout"] - final["auc/holdout"]) < 1e-6
    job = JobSpec.from_toml(spec)
    assert body.model_spec_sha256 == job.model_sha256 and body.spec_sha256 == job.sha256
    assert job.model_sha256 != JobSpec.from_toml(first_spec).model_sha256
