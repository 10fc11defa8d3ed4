"""The clipping-engine interface: what DP-SGD asks of an engine and what it gets back.

An engine is built for one model, one registered loss and one clip norm C, and turns a
batch into sum_i min(1, C / (||g_i|| + 1e-6)) g_i for every trainable parameter, g_i
being sample i's gradient of the loss. Engines differ only in how they get there
(`enclave.training.clipping.registry` names them); noise and the update are DP-SGD's.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["ClipResult", "ClippingEngine", "EngineFactory"]


@dataclass(frozen=True)
class ClipResult:
    """The clipped gradient sum of one batch and what produced it.

    `sums` are fresh tensors (zeros for an empty batch) the caller may modify in place.
    Everything else — the batch size, the per-sample norms, how many were clipped — is
    a function of the private data, not covered by the DP guarantee: diagnostics that
    stay inside the enclave and are never released.
    """

    #: parameter name -> sum over the batch of the clipped per-sample gradients.
    sums: dict[str, torch.Tensor]
    batch_size: int
    #: [batch_size] unclipped per-sample gradient norms over all trainable parameters.
    norms: torch.Tensor
    #: How many samples had their gradient scaled down.
    clipped: int
    #: parameter name -> how its per-sample norm was computed (engine-specific labels).
    paths: Mapping[str, str]

    @property
    def clipped_fraction(self) -> float:
        """Share of the batch whose gradient was scaled down (0 for an empty batch)."""
        return self.clipped / self.batch_size if self.batch_size else 0.0


@runtime_checkable
class ClippingEngine(Protocol):
    """Per-sample clipped gradient sums of one model under one loss and clip norm."""

    model: nn.Module
    loss: str
    max_grad_norm: float
    micro_batch: int

    def clipped_sum(self, inputs: torch.Tensor, targets: torch.Tensor) -> ClipResult:
        """The clipped per-sample gradient sum of a (possibly empty) batch."""
        ...


class EngineFactory(Protocol):
    """How an engine is built: every engine takes these arguments (and refuses bad ones)."""

    def __call__(
        self, model: nn.Module, *, max_grad_norm: float, loss: str = ..., micro_batch: int = ...
    ) -> ClippingEngine: ...
