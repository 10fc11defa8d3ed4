"""The errors of the declarative model format: one family under ConfigError.

A model arrives in a job spec, so everything wrong with it is a configuration error
(wire code `config`); the subclasses only let callers and tests tell the reasons apart.
Every message is one line that names the layer (`model.layers[3] (linear)` or
`model.graph[2] 'proj' (linear)`) and the key or shapes at fault; a WeightsError names
the tensor of the initial weights file instead (the file is public: its names may be quoted).
"""
from __future__ import annotations

from enclave.errors import ConfigError

__all__ = [
    "LimitExceeded",
    "MalformedWeights",
    "ModelFormatError",
    "RefusedOp",
    "ShapeMismatch",
    "UnknownOp",
    "WeightsError",
    "WeightsMismatch",
]


class ModelFormatError(ConfigError):
    """A declarative model is malformed: bad structure, key, value type or range."""


class UnknownOp(ModelFormatError):
    """A layer names a type outside the closed op set."""


class RefusedOp(ModelFormatError):
    """A layer names a type the format refuses on purpose (it would void the DP guarantee)."""


class ShapeMismatch(ModelFormatError):
    """A layer cannot take the shape or kind of tensor its inputs produce."""


class LimitExceeded(ModelFormatError):
    """The model would exceed a size limit of the format (parameters, activations, layers...)."""


class WeightsError(ConfigError):
    """Initial weights for a model (a safetensors file the model owner chose) cannot be used."""


class MalformedWeights(WeightsError):
    """The weights file breaks the safetensors format or one of its bounds."""


class WeightsMismatch(WeightsError):
    """The weights file is not the one the spec names, or does not hold the model's tensors exactly."""
