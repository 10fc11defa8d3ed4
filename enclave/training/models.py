"""The registered models: the only architectures a job may train.

A job names a model; it never ships code. Each `ModelSpec.build(generator)` constructs
the architecture on the meta device and initialises every parameter from the given
`torch.Generator` (PyTorch's default schemes), so model construction neither reads nor
advances torch's global generator and is reproducible from a Csprng seed.

Inputs are Fashion-MNIST-shaped: uint8 rows of 784 pixels. `preprocess` scales them to
[0, 1] and standardises with the public Fashion-MNIST training-set statistics — fixed
constants, because statistics computed from the private dataset would themselves be an
un-noised release.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from enclave.errors import ConfigError, DatasetError
from enclave.training.rng import Csprng

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MODELS",
    "InputFormatError",
    "ModelSpec",
    "UnknownModel",
    "build_model",
    "get_spec",
    "model_generator",
    "preprocess",
]

#: Public per-pixel mean and standard deviation of the Fashion-MNIST training set (in [0, 1] units).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


class UnknownModel(ConfigError):
    """A job named a model that is not registered."""


class InputFormatError(DatasetError):
    """A batch handed to `preprocess` has the wrong dtype or shape."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, one input's shape, class count and initialised builder."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    build: Callable[[torch.Generator], nn.Module]

    @property
    def input_features(self) -> int:
        return math.prod(self.input_shape)


def _init_like_torch(module: nn.Linear | nn.Conv2d, generator: torch.Generator) -> None:
    # PyTorch's default Linear/Conv init (kaiming_uniform with a=sqrt(5), bias
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in))), but drawing from `generator`.
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def _materialise(layers: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    # On the meta device the constructors allocate nothing and draw no random numbers;
    # every parameter is then filled from `generator` alone, in module order.
    with torch.device("meta"):
        model = layers()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                _init_like_torch(module, generator)
            elif any(True for _ in module.parameters(recurse=False)):
                raise TypeError(f"no initialiser for registered layer {type(module).__name__}")
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise TypeError(f"registered models must not hold buffers (found {buffers})")
    return model.train()


def _mlp() -> nn.Module:
    # The seed model: 784-128-10 with dropout.
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def _tanh_cnn() -> nn.Module:
    # The end-to-end tanh CNN of Tramer & Boneh (2021) for 1x28x28 inputs:
    # 28 -conv8/2,p3-> 14 -pool2/1-> 13 -conv4/2-> 5 -pool2/1-> 4, so 32*4*4 = 512 features.
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2),
        nn.Tanh(),
        nn.MaxPool2d(2, 1),
        nn.Flatten(),
        nn.Linear(512, 32),
        nn.Tanh(),
        nn.Linear(32, 10),
    )


def _spec(name: str, input_shape: tuple[int, ...], layers: Callable[[], nn.Module]) -> ModelSpec:
    return ModelSpec(
        name=name,
        input_shape=input_shape,
        num_classes=10,
        build=lambda generator: _materialise(layers, generator),
    )


#: The registry, read-only: name -> ModelSpec.
MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "mlp": _spec("mlp", (784,), _mlp),
        "tanh_cnn": _spec("tanh_cnn", (1, 28, 28), _tanh_cnn),
    }
)


def get_spec(name: str) -> ModelSpec:
    """The registered spec called `name`, or UnknownModel naming what is registered."""
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownModel(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return spec


def model_generator(rng: Csprng) -> torch.Generator:
    """A CPU torch.Generator seeded with 64 bits from `rng` (pass a fork reserved for init)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(rng.random_bytes(8), "little"))
    return generator


def build_model(name: str, *, rng: Csprng | None = None) -> nn.Module:
    """A freshly initialised registered model in train mode.

    Initialisation draws from a generator seeded by `rng` (deterministic per seed), or by
    a throwaway Csprng from os.urandom when none is given; never from torch's global state.
    """
    spec = get_spec(name)
    source = rng if rng is not None else Csprng(os.urandom(32))
    return spec.build(model_generator(source))


def preprocess(name: str, batch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 784] pixels -> float32 standardised inputs shaped [N, *input_shape] for `name`."""
    spec = get_spec(name)
    if isinstance(batch_uint8, torch.Tensor):
        if batch_uint8.dtype != torch.uint8:
            raise InputFormatError(f"expected uint8 pixels, got {batch_uint8.dtype}")
        pixels = batch_uint8.detach().cpu().numpy()
    elif isinstance(batch_uint8, np.ndarray):
        if batch_uint8.dtype != np.uint8:
            raise InputFormatError(f"expected uint8 pixels, got {batch_uint8.dtype}")
        pixels = batch_uint8
    else:
        raise InputFormatError(f"expected a numpy array or tensor, got {type(batch_uint8).__name__}")
    if pixels.ndim != 2 or pixels.shape[1] != spec.input_features:
        raise InputFormatError(
            f"model {name!r} expects pixels shaped [N, {spec.input_features}], got {list(pixels.shape)}"
        )
    scaled = pixels.astype(np.float32)
    scaled *= np.float32(1.0 / 255.0)
    scaled -= np.float32(FASHION_MNIST_MEAN)
    scaled /= np.float32(FASHION_MNIST_STD)
    return torch.from_numpy(scaled).reshape(pixels.shape[0], *spec.input_shape)
