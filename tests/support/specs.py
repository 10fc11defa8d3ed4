"""One small MLP job spec for the runtime and adversarial tests, with the knobs they vary."""
from __future__ import annotations

from collections.abc import Sequence


def mlp_spec(*, key_id: str, name: str = "runtime-test", steps: int = 2, noise: float = 1.0,
             batch: int = 20, train: str | Sequence[str] | None = None, checkpoint_every: int = 0,
             model: str = 'name = "mlp"', lr: float = 0.1, data: str = "", extra: str = "") -> str:
    """TOML for an "mlp" job with SGD; `train` a dataset id (a string) or a list of ids; `model`
    the body of the [model] section (another preset, or an inline model's format and layers);
    `data` more lines of [data] (features, label, ...); `extra` whole sections ([task], [eval])."""
    lines = []
    if isinstance(train, str):
        lines.append(f'train = "{train}"')
    elif train is not None:
        lines.append("train = [" + ", ".join(f'"{t}"' for t in train) + "]")
    if data:
        lines.append(data.strip("\n"))
    data = "[data]\n" + "\n".join(lines) + "\n" if lines else ""
    extra = extra.strip("\n") + "\n" if extra else ""
    every = f"every_steps = {checkpoint_every}\n" if checkpoint_every else ""
    return f"""
[job]
name = "{name}"
[model]
{model}
{data}[optimizer]
name = "sgd"
lr = {lr}
[privacy]
expected_batch_size = {batch}
steps = {steps}
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = {noise}
{extra}[checkpoint]
{every}key_id = "{key_id}"
"""


#: The [privacy] tail and sections of a small search for tests/parent.test_job_check's spec_text(privacy=...):
#: geometric trials of mean 4 over three learning rates and two step counts, scored on public set "pub".
TUNING_PRIVACY = """noise_multiplier = 1.5
accountant = "rdp"
[eval]
public = "pub"
[tuning]
lr = [0.05, 0.1, 0.2]
steps = [100, 200]
trials = { distribution = "geometric", mean = 4 }
select = { metric = "accuracy/pub" }
"""
