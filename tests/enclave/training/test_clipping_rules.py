"""Rules every clipping engine obeys: refused layers, losses, batch and configuration checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from enclave.errors import ConfigError, DatasetError
from enclave.training.clipping.registry import ENGINES, make_engine
from enclave.training.clipping.rules import (
    BatchMismatch,
    DpSgdConfigError,
    UnknownLoss,
    UnsupportedLayer,
    check_privatizable,
    clip_factors,
)


class _RunningMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize(
    ("layer", "kind"),
    [
        (nn.BatchNorm1d(4), "BatchNorm1d"),
        (nn.BatchNorm2d(4, track_running_stats=False), "BatchNorm2d"),
        (nn.SyncBatchNorm(4), "SyncBatchNorm"),
        (nn.InstanceNorm2d(4, track_running_stats=True), "InstanceNorm2d"),
        (_RunningMean(), "_RunningMean"),
    ],
)
def test_sample_mixing_or_stateful_layers_are_refused_by_every_engine(layer: nn.Module, kind: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), layer)
    with pytest.raises(UnsupportedLayer) as info:
        check_privatizable(model)
    message = str(info.value)
    assert "layer 1" in message and kind in message and "\n" not in message
    assert issubclass(UnsupportedLayer, ConfigError)
    for name in ENGINES:
        with pytest.raises(UnsupportedLayer, match=kind):
            make_engine(name, model, max_grad_norm=1.0)


@pytest.mark.parametrize(
    "layer", [nn.InstanceNorm2d(4, affine=True), nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.Dropout(0.5)]
)
def test_per_sample_layers_are_accepted(layer: nn.Module) -> None:
    check_privatizable(nn.Sequential(nn.Linear(4, 4), layer))


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_unknown_loss_lists_the_registered_ones(engine: str) -> None:
    with pytest.raises(UnknownLoss, match="cross_entropy, huber, mse"):
        make_engine(engine, nn.Linear(3, 2), max_grad_norm=1.0, loss="hinge")


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    "overrides",
    [
        {"max_grad_norm": 0.0},
        {"max_grad_norm": -1.0},
        {"max_grad_norm": float("inf")},
        {"max_grad_norm": float("nan")},
        {"micro_batch": 0},
        {"micro_batch": True},
        {"micro_batch": 2.0},
    ],
)
def test_impossible_engine_settings_are_refused(engine: str, overrides: dict) -> None:
    kwargs: dict = {"max_grad_norm": 1.0, **overrides}
    with pytest.raises(DpSgdConfigError):
        make_engine(engine, nn.Linear(3, 2), **kwargs)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    ("x", "y"),
    [
        (torch.randn(3, 3), torch.randint(0, 2, (4,))),
        (torch.randn(3, 3), torch.randint(0, 2, (3, 1))),
        (torch.randn(3, 3), [0, 1, 1]),
    ],
)
def test_mismatched_inputs_and_targets_are_refused(engine: str, x: torch.Tensor, y: object) -> None:
    clip = make_engine(engine, nn.Linear(3, 2), max_grad_norm=1.0)
    with pytest.raises(BatchMismatch):
        clip.clipped_sum(x, y)  # type: ignore[arg-type]
    assert issubclass(BatchMismatch, DatasetError)


def test_clip_factor_leaves_the_ball_alone_and_scales_onto_its_sphere() -> None:
    norms = torch.tensor([0.0, 0.5, 2.0 - 2e-6, 4.0])
    factors = clip_factors(norms, 2.0)
    assert factors[:3].tolist() == [1.0, 1.0, 1.0]
    assert float(factors[3]) == pytest.approx(2.0 / (4.0 + 1e-6))
    assert float(factors[3] * norms[3]) < 2.0
