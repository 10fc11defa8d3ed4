"""Per-sample gradients the slow, obvious way, for checking the clipping engines against."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ordinary backward pass per sample: {name: [n, *param.shape]} for every trainable parameter."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    per: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                per[n].append(p.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(v) for n, v in per.items()}
