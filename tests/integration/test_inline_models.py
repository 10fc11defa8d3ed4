"""Inline declarative models trained end to end through the real data path, and certified by hash.

Synthetic images whose class is a bright band (28x28 grey) or a bright colour channel
in one quadrant (16x16x3), sealed as the owner would seal an (N, H, W[, C]) uint8 array:
fixed_size_list<uint8> of H*W[*C] values with the shape in the field metadata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from enclave.training.spec import JobSpec
from enclave.transport.messages import PUBLIC_PREFIX
from parent.checkpoints import decrypt_checkpoint
from parent.model_out import load_model_dir, predict, sealed_arrow_schema, write_model_dir
from parent.public_data import load_public_dataset
from parent.seal import seal_dataset
from parent.sources import BytesSource
from tests.integration.conftest import MODEL_OWNER, OWNER, DataPath, kms_client
from tests.integration.test_training import _train_in_process
from tests.support.specs import mlp_spec

STEPS = 30
CLASSES = 4


def _bands(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 grey images: class k is a bright band over rows 7k..7k+6, on noise."""
    labels = rng.integers(0, CLASSES, count).astype(np.uint8)
    images = rng.integers(0, 96, (count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        images[index, 7 * label : 7 * label + 7, :] += 150
    return images, labels


def _quadrants(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 RGB images (H, W, C): class k lights up quadrant k in channel k % 3."""
    labels = rng.integers(0, CLASSES, count).astype(np.uint8)
    images = rng.integers(0, 96, (count, 16, 16, 3)).astype(np.uint8)
    for index, label in enumerate(labels):
        top, left = 8 * (label // 2), 8 * (label % 2)
        images[index, top : top + 8, left : left + 8, label % 3] += 150
    return images, labels


def _seal(data_path: DataPath, tmp_path: Path, name: str, images: np.ndarray, labels: np.ndarray) -> Path:
    src, out = tmp_path / f"{name}.npz", tmp_path / f"{name}.sealed"
    np.savez(src, image=images, label=labels)
    seal_dataset(src, out, key_id=data_path.key_id, kms_client=kms_client(data_path.emulator.url, OWNER),
                 max_epsilon=3.0, delta=1e-5, owner="hospital", dataset_id=f"{name}-v1", chunk_size=64 * 1024,
                 ledger=data_path.ledger_location, model_owner_keys=[data_path.model_key_id],
                 num_classes=CLASSES)
    return out


EVAL = '[eval]\npublic = "holdout"\nevery_steps = 10'


def _spec(model_key: str, layers: str) -> str:
    return mlp_spec(key_id=model_key, name="inline", model=f"format = 1\nlayers = {layers}", lr=0.5, batch=100,
                    steps=STEPS, noise=1.5, extra=EVAL)


def _train(data_path: DataPath, tmp_path: Path, name: str, make: Any, layers: str) -> tuple[Any, str]:
    rng = np.random.default_rng(11)
    sealed = _seal(data_path, tmp_path, name, *make(rng, 2000))
    holdout = tmp_path / f"{name}-holdout.npz"
    images, labels = make(rng, 400)
    np.savez(holdout, image=images, label=labels)
    public = load_public_dataset("holdout", holdout)
    streams = [(f"{name}-v1", str(sealed)), (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc))]
    spec = _spec(data_path.model_key_id, layers)
    body = _train_in_process(data_path, name, streams, spec, tmp_path / "out")
    return body, spec


def test_an_inline_chain_trains_on_28x28_images_and_the_certificate_names_it(
    data_path: DataPath, tmp_path: Path
) -> None:
    layers = '[{ type = "flatten" }, { type = "linear", out = 32 }, { type = "tanh" }, { type = "linear" }]'
    body, spec = _train(data_path, tmp_path, "bands", _bands, layers)
    job = JobSpec.from_toml(spec)
    assert body.spec_sha256 == job.sha256 and body.model_spec_sha256 == job.model_sha256
    assert body.steps == STEPS and [m.step for m in body.metrics] == [10, 20, 30]
    # Four classes: chance is 0.25; the bands are plain enough to learn under this noise.
    assert body.metrics[-1].value > 0.6, body.metrics


def test_a_conv2d_model_trains_on_16x16_rgb_images(data_path: DataPath, tmp_path: Path) -> None:
    # The column holds 768 values shaped 16x16x3; the model takes them as [3, 16, 16].
    layers = ('[{ type = "conv2d", out_channels = 4, kernel = 4, stride = 4 }, { type = "relu" }, '
              '{ type = "flatten" }, { type = "linear" }]')
    body, spec = _train(data_path, tmp_path, "quadrants", _quadrants, layers)
    assert body.model_spec_sha256 == JobSpec.from_toml(spec).model_sha256
    assert body.metrics[-1].value > 0.6, body.metrics

    # Out of the enclave: the decrypted model predicts the holdout array on the host with the released accuracy.
    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{STEPS:08d}.sealed"
    _, state = decrypt_checkpoint(checkpoint, kms_client=kms_client(data_path.emulator.url, MODEL_OWNER))
    write_model_dir(state, spec, sealed_arrow_schema(str(tmp_path / "quadrants.sealed")), tmp_path / "model")
    prediction = predict(load_model_dir(tmp_path / "model"), tmp_path / "quadrants-holdout.npz")
    assert prediction.rows == 400
    assert dict(prediction.metrics)["accuracy"] == body.metrics[-1].value
