"""The registered models of `enclave.training.models`, written in the declarative format.

Each preset is the `[model]` table a job spec would hold (as tomllib returns it, made
read-only); `parse_model(PRESETS[name])` then `build_model(..., input_shape=
PRESET_INPUT_SHAPES[name], num_outputs=PRESET_CLASSES, generator=g)` gives the
registered model's initial weights from the same seed, and its outputs. The chain
presets also keep its layers and parameter names; scatter2_linear, a graph, names its
one parameter `nodes.7.weight` where the registered nn.Sequential says `1.weight`.
The final linear layers omit `out`: they give one logit per class of the dataset.

A job spec naming a preset (`[model] name = "tanh_cnn"`) trains exactly this model;
`preset_format(name)` is its parsed form, whose `sha256` the certificate states.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from enclave.training.modelfmt.errors import ModelFormatError
from enclave.training.modelfmt.spec import ModelFormat, parse_model

__all__ = ["PRESETS", "PRESET_CLASSES", "PRESET_INPUT_SHAPES", "UnknownPreset", "preset_format"]


class UnknownPreset(ModelFormatError):
    """A job named a model that is not one of the presets."""


def _frozen(table: dict[str, Any]) -> Mapping[str, Any]:
    form = "layers" if "layers" in table else "graph"
    layers = tuple(
        MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in layer.items()})
        for layer in table[form]
    )
    return MappingProxyType({**table, form: layers})


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
        # Two-scale ScatterNet (J=2: 81 x 7 x 7, GroupNorm 27; J=1: 9 x 14 x 14, GroupNorm 3),
        # both flattened and joined (5733 features), then linear: the registered TwoScaleScatter.
        "scatter2_linear": _frozen(
            {
                "format": 1,
                "output": "logits",
                "graph": [
                    {"name": "coarse", "type": "scatter", "J": 2, "L": 8, "inputs": ["input"]},
                    {"name": "coarse_norm", "type": "group_norm", "groups": 27, "affine": False,
                     "inputs": ["coarse"]},
                    {"name": "coarse_flat", "type": "flatten", "inputs": ["coarse_norm"]},
                    {"name": "fine", "type": "scatter", "J": 1, "L": 8, "inputs": ["input"]},
                    {"name": "fine_norm", "type": "group_norm", "groups": 3, "affine": False, "inputs": ["fine"]},
                    {"name": "fine_flat", "type": "flatten", "inputs": ["fine_norm"]},
                    {"name": "joined", "type": "concat", "dim": 0, "inputs": ["coarse_flat", "fine_flat"]},
                    {"name": "logits", "type": "linear", "inputs": ["joined"]},
                ],
            }
        ),
    }
)

#: The one input a preset takes (as the registry's ModelSpec.input_shape): the job check
#: holds the dataset's feature column to it, and the trainer reshapes records to it.
PRESET_INPUT_SHAPES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"mlp": (784,), "tanh_cnn": (1, 28, 28), "scatter_linear": (1, 28, 28), "scatter2_linear": (1, 28, 28)}
)

#: Every preset is trained on 10 classes (Fashion-MNIST's), as the registered models.
PRESET_CLASSES = 10


@functools.cache
def _parsed(name: str) -> ModelFormat:
    return parse_model(PRESETS[name])


def preset_format(name: str) -> ModelFormat:
    """The parsed preset called `name`, or UnknownPreset naming every preset."""
    if not isinstance(name, str) or name not in PRESETS:
        shown = repr(name[:64]) if isinstance(name, str) else type(name).__name__
        raise UnknownPreset(f"unknown model {shown}; registered models: {', '.join(sorted(PRESETS))}")
    return _parsed(name)
