"""Small models in the declarative format, at least one per op, with inputs to run them on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: Classes of every case.
CLASSES = 3
#: Vocabulary of the token cases; id 0 is padding.
VOCAB = 11


@dataclass(frozen=True)
class Case:
    name: str
    model: dict[str, Any]
    input_shape: tuple[int, ...]
    ids: bool = False

    def inputs(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if not self.ids:
            return torch.randn(n, *self.input_shape, generator=g)
        ids = torch.randint(1, VOCAB, (n, *self.input_shape), generator=g)
        # Right padding of varying length, never the whole row.
        for i in range(n):
            keep = 1 + i % self.input_shape[-1]
            ids[i, keep:] = 0
        return ids

    def targets(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(seed + 1))


def _layers(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "layers": list(layers)}


def _graph(output: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "graph": list(nodes), "output": output}


_HEAD = ({"type": "flatten"}, {"type": "linear"})

CASES: tuple[Case, ...] = (
    Case("linear", _layers({"type": "linear", "out": 6, "bias": False}, {"type": "relu"}, {"type": "linear"}), (5,)),
    Case("linear_3d", _layers({"type": "linear", "out": 4}, {"type": "tanh"}, *_HEAD), (2, 3, 5)),
    Case(
        "conv1d_pools",
        _layers(
            {"type": "conv1d", "out_channels": 4, "kernel": 3, "padding": 1, "groups": 2},
            {"type": "max_pool1d", "kernel": 2},
            {"type": "avg_pool1d", "kernel": 2, "stride": 1, "padding": 1},
            {"type": "adaptive_avg_pool1d", "output_size": 3},
            *_HEAD,
        ),
        (2, 8),
    ),
    Case(
        "conv2d_pools",
        _layers(
            {"type": "conv2d", "out_channels": 4, "kernel": [3, 2], "stride": [1, 2]},
            {"type": "silu"},
            {"type": "max_pool2d", "kernel": 2, "stride": 1},
            {"type": "avg_pool2d", "kernel": [2, 1]},
            {"type": "adaptive_avg_pool2d", "output_size": [2, 2]},
            *_HEAD,
        ),
        (2, 7, 8),
    ),
    Case(
        "norms",
        _layers(
            {"type": "reshape", "shape": [4, 3]},
            {"type": "group_norm", "groups": 2},
            {"type": "layer_norm"},
            {"type": "rms_norm"},
            {"type": "gelu"},
            {"type": "sigmoid"},
            {"type": "dropout", "p": 0.25},
            *_HEAD,
        ),
        (12,),
    ),
    Case(
        "residual_concat",
        _graph(
            "logits",
            {"name": "a", "type": "linear", "out": 6, "inputs": ["input"]},
            {"name": "b", "type": "relu", "inputs": ["a"]},
            {"name": "c", "type": "add", "inputs": ["b", "input", "a"]},
            {"name": "d", "type": "concat", "dim": -1, "inputs": ["c", "input"]},
            {"name": "logits", "type": "linear", "inputs": ["d"]},
        ),
        (6,),
    ),
    Case(
        "text_transformer",
        _graph(
            "logits",
            {"name": "mask", "type": "padding_mask", "inputs": ["input"]},
            {"name": "emb", "type": "embedding", "vocab": VOCAB, "dim": 8, "padding_idx": 0, "inputs": ["input"]},
            {"name": "enc", "type": "transformer_encoder", "dim": 8, "heads": 2, "ff_dim": 12, "dropout": 0.1,
             "inputs": ["emb", "mask"]},
            {"name": "pool", "type": "mean_pool", "inputs": ["enc", "mask"]},
            {"name": "cls", "type": "cls_pool", "inputs": ["enc", "mask"]},
            {"name": "joined", "type": "concat", "dim": 0, "inputs": ["pool", "cls"]},
            {"name": "logits", "type": "linear", "inputs": ["joined"]},
        ),
        (6,),
        ids=True,
    ),
    Case(
        "text_unmasked",
        _layers(
            {"type": "embedding", "vocab": VOCAB, "dim": 4},
            {"type": "transformer_encoder", "dim": 4, "heads": 1, "ff_dim": 4},
            {"type": "cls_pool"},
            {"type": "linear"},
        ),
        (5,),
        ids=True,
    ),
    Case("embedding_mean", _layers({"type": "embedding", "vocab": VOCAB, "dim": 3}, {"type": "mean_pool"},
                                   {"type": "linear"}), (4,), ids=True),
    Case(
        "scatter",
        _layers({"type": "scatter", "J": 1, "L": 2}, {"type": "group_norm", "groups": 1, "affine": False}, *_HEAD),
        (1, 8, 8),
    ),
)


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def ops_of(model: dict[str, Any]) -> set[str]:
    return {str(layer["type"]) for layer in model.get("layers", model.get("graph", []))}
