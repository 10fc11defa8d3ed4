"""The registered models of `enclave.training.models`, written in the declarative format.

Each preset is the `[model]` table a job spec would hold (as tomllib returns it, made
read-only); `parse_model(PRESETS[name])` then `build_model(..., input_shape=
MODELS[name].input_shape, num_outputs=10, generator=g)` gives the registered model's
layers, parameter names and shapes, and, from the same seed, its initial weights.
The final linear layers omit `out`: they give one logit per class of the dataset.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["PRESETS"]


def _frozen(table: dict[str, Any]) -> Mapping[str, Any]:
    layers = tuple(MappingProxyType(dict(layer)) for layer in table["layers"])
    return MappingProxyType({**table, "layers": layers})


#: preset name -> read-only `[model]` table.
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # 784-128-10 with dropout.
        "mlp": _frozen(
            {
                "format": 1,
                "layers": [
                    {"type": "flatten"},
                    {"type": "linear", "out": 128},
                    {"type": "relu"},
                    {"type": "dropout", "p": 0.2},
                    {"type": "linear"},
                ],
            }
        ),
        # Tramer & Boneh's tanh CNN for 1x28x28 inputs (28 -> 14 -> 13 -> 5 -> 4; 512 features).
        "tanh_cnn": _frozen(
            {
                "format": 1,
                "layers": [
                    {"type": "conv2d", "out_channels": 16, "kernel": 8, "stride": 2, "padding": 3},
                    {"type": "tanh"},
                    {"type": "max_pool2d", "kernel": 2, "stride": 1},
                    {"type": "conv2d", "out_channels": 32, "kernel": 4, "stride": 2},
                    {"type": "tanh"},
                    {"type": "max_pool2d", "kernel": 2, "stride": 1},
                    {"type": "flatten"},
                    {"type": "linear", "out": 32},
                    {"type": "tanh"},
                    {"type": "linear"},
                ],
            }
        ),
        # ScatterNet (J=2, L=8: 81 x 7 x 7) normalised by GroupNorm(27) without affine, then linear.
        "scatter_linear": _frozen(
            {
                "format": 1,
                "layers": [
                    {"type": "scatter", "J": 2, "L": 8},
                    {"type": "group_norm", "groups": 27, "affine": False},
                    {"type": "flatten"},
                    {"type": "linear"},
                ],
            }
        ),
    }
)
