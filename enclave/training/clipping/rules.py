"""What every clipping engine obeys: losses, refused layers, the clip factor, batch and config checks.

A model is privatisable only if no layer's output or state mixes samples: each
sample's gradient must depend on that sample alone, or clipping it bounds nothing.
Each sample's gradient g_i is scaled by min(1, C / (||g_i|| + CLIP_EPSILON)), the L2
norm taken over all trainable parameters together, so every clipped gradient has norm
at most C (C * n / (n + 1e-6) <= C in exact arithmetic; float32 rounding of a scaled
sum can exceed that by a relative ~1e-7, far inside the accountant's pessimistic
discretisation).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from enclave.errors import ConfigError, DatasetError

__all__ = [
    "CLIP_EPSILON",
    "HUBER_DELTA",
    "LOSSES",
    "BatchMismatch",
    "DpSgdConfigError",
    "GhostClippingError",
    "UnknownLoss",
    "UnsupportedLayer",
    "check_batch",
    "check_privatizable",
    "clip_factors",
    "huber_sum",
    "loss_function",
    "mse_sum",
    "positive",
    "positive_int",
    "trainable_parameters",
]

#: Added to each per-sample norm before dividing, so a zero gradient needs no special case.
CLIP_EPSILON = 1e-6

#: The Huber loss's switch from quadratic to linear, in the target's scaled units ([0, 1]).
HUBER_DELTA = 1.0


def mse_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i (output_i - target_i)^2 over a batch of one-output predictions [N, 1] and float targets [N]."""
    return F.mse_loss(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype), reduction="sum")


def huber_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`mse_sum` with the Huber loss (delta HUBER_DELTA): a wrong target's pull on the gradient is bounded."""
    return F.huber_loss(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype), reduction="sum",
                        delta=HUBER_DELTA)


#: Per-sample losses by name; each maps (logits [1, K], target [1]) to a scalar. The
#: regression losses sum over the batch, so on a batch of one they are the sample's loss.
LOSSES: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = MappingProxyType(
    {"cross_entropy": F.cross_entropy, "mse": mse_sum, "huber": huber_sum}
)


class UnsupportedLayer(ConfigError):
    """The model contains a layer DP-SGD cannot privatise."""


class GhostClippingError(UnsupportedLayer):
    """The fast (ghost-clipping) engine cannot privatise this model correctly.

    Use engine="vmap" or change the model.
    """


class UnknownLoss(ConfigError):
    """The job named a loss that is not registered."""


class DpSgdConfigError(ConfigError):
    """DP-SGD was configured with an impossible engine, clip norm, noise, batch size or optimizer."""


class BatchMismatch(DatasetError):
    """Inputs and targets of a step do not describe the same records."""


def check_privatizable(model: nn.Module) -> None:
    """Raise UnsupportedLayer for the first layer whose output or state mixes samples.

    BatchNorm (any variant, SyncBatchNorm included) normalises with batch statistics;
    any layer keeping running statistics (InstanceNorm with track_running_stats) or
    holding buffers at all would carry data-derived state that DP-SGD does not noise
    — only parameters are privatised — and that state is released with the model.
    """
    for name, module in model.named_modules():
        where = f"layer {name or '<root>'} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise UnsupportedLayer(f"{where} mixes samples through batch statistics; use GroupNorm or LayerNorm")
        if getattr(module, "track_running_stats", False):
            raise UnsupportedLayer(f"{where} tracks running statistics of the data, which DP-SGD does not noise")
        buffers = [b for b, _ in module.named_buffers(recurse=False)]
        if buffers:
            raise UnsupportedLayer(f"{where} holds buffers {buffers}; only parameters are privatised")


def loss_function(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The registered per-sample loss called `loss`, or UnknownLoss naming what is registered."""
    fn = LOSSES.get(loss) if isinstance(loss, str) else None
    if fn is None:
        raise UnknownLoss(f"unknown loss {loss!r}; registered losses: {', '.join(sorted(LOSSES))}")
    return fn


def check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """The number of records in a step's batch, or BatchMismatch if inputs and targets disagree."""
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise BatchMismatch("inputs and targets must be tensors")
    if inputs.dim() < 1 or targets.dim() != 1 or inputs.shape[0] != targets.shape[0]:
        raise BatchMismatch(
            f"inputs {list(inputs.shape)} and targets {list(targets.shape)} do not describe the same records"
        )
    return int(inputs.shape[0])


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters DP-SGD privatises, by name, in named_parameters order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """min(1, C / (norm + CLIP_EPSILON)) for each per-sample norm."""
    return (max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)


def positive(value: float, what: str) -> float:
    """`value` as a float, or DpSgdConfigError unless it is finite and positive."""
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise DpSgdConfigError(f"{what} must be a finite positive number, got {value!r}")
    return number


def positive_int(value: int, what: str) -> int:
    """`value`, or DpSgdConfigError unless it is a positive int (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DpSgdConfigError(f"{what} must be a positive integer, got {value!r}")
    return value
