"""The reference clipping engine ("vmap"): per-sample gradients by torch.func, then clipped and summed.

Per-sample gradients g_i of the loss come from functional_call + vmap(grad), each
sample run alone as a batch of one, in micro-batches so memory stays bounded however
large the Poisson batch is; each is scaled by the common clip factor and the scaled
gradients summed without materialising the clipped copies. Slower than the ghost
engine, but it handles any privatisable model, parameters shared between layers
included, and the ghost engine checks itself against it.

Dropout masks under `vmap(randomness="different")` come from each CsprngDropout's own
generator, seeded from the Csprng before every step (`DpSgd`), one mask per sample;
torch's global generator is never drawn from.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from enclave.training.clipping.engine import ClipResult
from enclave.training.clipping.rules import (
    check_batch,
    check_privatizable,
    clip_factors,
    loss_function,
    positive,
    positive_int,
    trainable_parameters,
)

__all__ = [
    "PATH_PER_SAMPLE",
    "ReferenceClipping",
    "clip_per_sample",
    "per_sample_gradients",
    "per_sample_norms",
]

#: The one computation path of this engine: every per-sample gradient is materialised.
PATH_PER_SAMPLE = "per-sample"


def _micro_batches(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    micro_batch: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Per-sample gradients, micro_batch samples at a time, as {name: [m, *param.shape]}."""
    loss_fn = loss_function(loss)
    params = {name: p.detach() for name, p in trainable_parameters(model).items()}
    # Frozen parameters and buffers are passed along but not differentiated.
    fixed = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    fixed.update({name: b.detach() for name, b in model.named_buffers()})

    def sample_loss(
        p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        # Inside vmap every sample runs alone as a batch of one: no layer can mix samples.
        logits = functional_call(model, (p, fixed), (x.unsqueeze(0),))
        return loss_fn(logits, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    x_all, y_all = inputs.detach(), targets.detach()
    for start in range(0, x_all.shape[0], micro_batch):
        yield per_sample(params, x_all[start : start + micro_batch], y_all[start : start + micro_batch])


def per_sample_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: str = "cross_entropy",
    micro_batch: int = 1024,
) -> dict[str, torch.Tensor]:
    """Unclipped per-sample gradients {name: [n, *param.shape]} of every trainable parameter.

    Uses the model in whatever mode it is in (eval for deterministic comparisons).
    """
    n = check_batch(inputs, targets)
    trainable = trainable_parameters(model)
    if n == 0:
        return {name: p.new_zeros((0, *p.shape)) for name, p in trainable.items()}
    chunks = list(_micro_batches(model, inputs, targets, loss, micro_batch))
    return {name: torch.cat([c[name] for c in chunks]) for name in trainable}


def per_sample_norms(grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[n] L2 norms of each sample's gradient over all parameters together."""
    per_param = [torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads.values()]
    result: torch.Tensor = torch.linalg.vector_norm(torch.stack(per_param, dim=1), dim=1)
    return result


def clip_per_sample(
    grads: Mapping[str, torch.Tensor], max_grad_norm: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each sample's gradient scaled by min(1, C / (norm + 1e-6)); returns (clipped, factors)."""
    factors = clip_factors(per_sample_norms(grads), max_grad_norm)
    clipped = {
        name: g * factors.reshape(-1, *([1] * (g.dim() - 1))).to(g.dtype) for name, g in grads.items()
    }
    return clipped, factors


class ReferenceClipping:
    """Clipped gradient sums from materialised per-sample gradients (engine "vmap")."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_grad_norm: float,
        loss: str = "cross_entropy",
        micro_batch: int = 1024,
    ) -> None:
        check_privatizable(model)
        loss_function(loss)
        self.model = model
        self.loss = loss
        self.max_grad_norm = positive(max_grad_norm, "max_grad_norm")
        self.micro_batch = positive_int(micro_batch, "micro_batch")

    def clipped_sum(self, inputs: torch.Tensor, targets: torch.Tensor) -> ClipResult:
        """sum_i min(1, C / (||g_i|| + 1e-6)) g_i for every trainable parameter (zeros when empty)."""
        n = check_batch(inputs, targets)
        # Looked up on every batch: the parameters are whatever the model holds now.
        trainable = trainable_parameters(self.model)
        sums = {name: torch.zeros_like(p) for name, p in trainable.items()}
        norms: list[torch.Tensor] = []
        clipped = 0
        for grads in _micro_batches(self.model, inputs, targets, self.loss, self.micro_batch):
            chunk_norms = per_sample_norms(grads)
            factors = clip_factors(chunk_norms, self.max_grad_norm)
            clipped += int((factors < 1.0).sum())
            for name, g in grads.items():
                # sum_i factor_i * g_i without materialising the clipped copies.
                sums[name].add_(torch.tensordot(factors.to(g.dtype), g, dims=1))
            norms.append(chunk_norms)
        return ClipResult(
            sums=sums,
            batch_size=n,
            norms=torch.cat(norms) if norms else torch.zeros(0),
            clipped=clipped,
            paths={name: PATH_PER_SAMPLE for name in trainable},
        )
