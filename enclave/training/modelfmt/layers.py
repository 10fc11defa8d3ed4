"""The modules the format builds beyond torch's own: parameter-free glue, attention, the graph runner.

Every parameter lives in a plain torch layer (nn.Linear, nn.Conv1d/2d, nn.Embedding,
nn.LayerNorm, nn.GroupNorm, nn.RMSNorm), so the fast clipping engine's per-layer rules
apply to it and no parameter is used outside the module that owns it. The modules
here hold no parameters of their own and no buffers, and treat each example of a
batch on its own (the first dimension is always the batch).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from enclave.training.models import CsprngDropout

__all__ = [
    "Add",
    "ClsPool",
    "Concat",
    "GraphModel",
    "MeanPool",
    "PaddingMask",
    "Reshape",
    "SelfAttention",
    "TransformerEncoderBlock",
]


class Reshape(nn.Module):
    """[N, ...] -> [N, *shape]."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


class Add(nn.Module):
    """The elementwise sum of inputs of one shape (a residual connection)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class Concat(nn.Module):
    """Inputs joined along one per-example dimension (`dim` counts from the first after the batch)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim + 1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class PaddingMask(nn.Module):
    """Token ids -> True where a real token is, False at the padding id."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids != self.pad

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class MeanPool(nn.Module):
    """[N, T, D] -> [N, D], the mean over the real positions (all of them without a mask)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return x.mean(dim=1)
        weights = mask.to(x.dtype).unsqueeze(-1)
        # An all-padding example pools to zeros rather than dividing by zero.
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class ClsPool(nn.Module):
    """[N, T, D] -> [N, D], the first position, or with a mask the first real one (left padding)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return x[:, 0]
        # argmax returns the first maximum: the first True, or 0 when there is none.
        first = mask.to(torch.int64).argmax(dim=1)
        index = first.view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return x.gather(1, index).squeeze(1)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention from four nn.Linear projections.

    Not nn.MultiheadAttention: its projections are one packed parameter used through
    F.linear outside any nn.Linear, which the fast clipping engine's rules do not see.
    A padding mask [N, T] (True at real tokens) keeps padded positions from being
    attended to; a position that sees no real token attends uniformly instead of
    producing NaN.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # Python numbers fixed at build: an exported (traced) graph then holds constants, not shape arithmetic.
        self.head_dim = dim // heads
        self.root_head_dim = math.sqrt(self.head_dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-2, -1) / self.root_head_dim
        if mask is not None:
            # A finite floor, not -inf: an all-padding row then softmaxes to uniform, not NaN.
            scores = scores.masked_fill(~mask.view(n, 1, 1, length), torch.finfo(scores.dtype).min)
        mixed = scores.softmax(dim=-1) @ v
        result: torch.Tensor = self.out(mixed.transpose(1, 2).reshape(n, length, dim))
        return result


class TransformerEncoderBlock(nn.Module):
    """A pre-LN transformer encoder block on [N, T, dim]: x + attn(LN(x)), then h + FF(LN(h))."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.drop1 = CsprngDropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff_dim)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ff_dim, dim)
        self.drop2 = CsprngDropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h: torch.Tensor = x + self.drop1(self.attention(self.norm1(x), mask))
        result: torch.Tensor = h + self.drop2(self.ff2(self.act(self.ff1(self.norm2(h)))))
        return result


class GraphModel(nn.Module):
    """Runs the nodes of a graph-form model in order, each on the outputs of the nodes it names.

    `nodes[i]` is graph node i (so parameters are named `nodes.<i>.weight`); `sources[i]`
    lists where its inputs come from: 0 is the model input, j + 1 is node j.
    """

    def __init__(self, nodes: Sequence[nn.Module], sources: Sequence[tuple[int, ...]], output: int) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        self.sources = tuple(tuple(s) for s in sources)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = [x]
        for module, sources in zip(self.nodes, self.sources, strict=True):
            values.append(module(*(values[s] for s in sources)))
        return values[self.output + 1]
