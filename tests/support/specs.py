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
