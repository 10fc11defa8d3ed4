"""The registered models: the only architectures a job may train.

A job names a model; it never ships code. Each `ModelSpec.build(generator)` constructs
the architecture on the meta device and initialises every parameter from the given
`torch.Generator` (PyTorch's default schemes), so model construction neither reads nor
advances torch's global generator and is reproducible from a Csprng seed. Dropout is
`CsprngDropout`, whose masks come from a generator seeded from the Csprng per step.

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
from enclave.hazmat.csprng import Csprng
from enclave.training.scattering import Scattering2d

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MODELS",
    "CsprngDropout",
    "DropoutUnseeded",
    "FeatureTransform",
    "FeatureTransformError",
    "InputFormatError",
    "ModelSpec",
    "TwoScaleScatter",
    "UnknownModel",
    "build_model",
    "feature_transform",
    "get_spec",
    "model_generator",
    "preprocess",
    "reseed_dropout",
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


class DropoutUnseeded(ConfigError):
    """A CsprngDropout ran in training mode before a generator was seeded for it."""


class CsprngDropout(nn.Module):
    """Dropout whose masks come from a generator seeded from the Csprng, never torch's global one.

    `reseed_dropout(model, rng)` gives every such layer a fresh generator (DpSgd does it
    before each step); in training mode without one it refuses to run. Under
    torch.func.vmap(randomness="different") each sample still gets its own mask.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            raise DropoutUnseeded("dropout needs a generator seeded from the Csprng (reseed_dropout)")
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def __deepcopy__(self, memo: dict[int, object]) -> CsprngDropout:
        # A copy never shares or replays the original's mask stream: it is reseeded before use.
        return CsprngDropout(self.p).train(self.training)


def reseed_dropout(model: nn.Module, rng: Csprng) -> None:
    """A fresh generator, seeded with 64 bits from `rng`, for every CsprngDropout in `model`."""
    for module in model.modules():
        if isinstance(module, CsprngDropout):
            module.generator = model_generator(rng)


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
    # The seed model: 784-128-10 with dropout (masks from the Csprng).
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        CsprngDropout(0.2),
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


# ScatterNet models (Tramer & Boneh 2021, models.py of ftramer/Handcrafted-DP): a fixed
# scattering transform (J=2, L=8: 81 channels of 7x7) normalised by GroupNorm with 27
# groups and no affine parameters, as in the paper, then a trainable classifier.
SCATTER_J = 2
SCATTER_L = 8
SCATTER_GROUPS = 27


def _scatter_front() -> list[nn.Module]:
    scattering = Scattering2d(J=SCATTER_J, shape=(28, 28), L=SCATTER_L)
    return [scattering, nn.GroupNorm(SCATTER_GROUPS, scattering.out_channels, affine=False)]


class TwoScaleScatter(nn.Module):
    """Scattering at J=2 (81 x 7 x 7, GroupNorm 27) and J=1 (9 x 14 x 14, GroupNorm 3), flat and joined.

    Both use L=8 and three channels per normalisation group, as the J=2 front end above.
    The J=1 coefficients keep twice the spatial resolution of the J=2 ones (order 0 and 1
    only), which a linear classifier cannot recover from the coarser scale; under DP the
    joined features train a more accurate linear model than the J=2 scale alone
    (bench/RESULTS.md). No parameters, no buffers: a fixed function of one record.
    """

    def __init__(self) -> None:
        super().__init__()
        self.coarse = Scattering2d(J=SCATTER_J, shape=(28, 28), L=SCATTER_L)
        self.fine = Scattering2d(J=1, shape=(28, 28), L=SCATTER_L)
        self.coarse_norm = nn.GroupNorm(SCATTER_GROUPS, self.coarse.out_channels, affine=False)
        self.fine_norm = nn.GroupNorm(self.fine.out_channels // 3, self.fine.out_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = self.coarse_norm(self.coarse(x)).flatten(1)
        fine = self.fine_norm(self.fine(x)).flatten(1)
        return torch.cat([coarse, fine], dim=1)


#: Features of `TwoScaleScatter`: 81 * 7 * 7 + 9 * 14 * 14.
TWO_SCALE_FEATURES = 81 * 7 * 7 + 9 * 14 * 14


def _scatter_linear() -> nn.Module:
    # ScatterNet + linear: 81 * 7 * 7 = 3969 features -> 10 logits.
    return nn.Sequential(*_scatter_front(), nn.Flatten(), nn.Linear(81 * 7 * 7, 10))


def _scatter2_linear() -> nn.Module:
    # Two-scale ScatterNet + linear: 5733 features -> 10 logits.
    return nn.Sequential(TwoScaleScatter(), nn.Linear(TWO_SCALE_FEATURES, 10))


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
        "scatter_linear": _spec("scatter_linear", (1, 28, 28), _scatter_linear),
        "scatter2_linear": _spec("scatter2_linear", (1, 28, 28), _scatter2_linear),
    }
)

#: Models whose first layers are a fixed function of one record: name -> how many
#: leading modules of the built nn.Sequential form that fixed front end.
_FIXED_FRONT: Mapping[str, int] = MappingProxyType({"scatter_linear": 2, "scatter2_linear": 1})


class FeatureTransformError(ConfigError):
    """A model handed to a feature transform is not the registered architecture it serves."""


@dataclass(frozen=True)
class FeatureTransform:
    """The fixed front end of a registered model, to apply once to a whole table.

    For a model built by `build_model(name)`, `head(model)(features(rows))` equals
    `model(preprocess(name, rows))` (to float32 rounding, chunking aside), and the head
    holds every parameter of the model (the same tensor objects), so an optimizer and
    DP-SGD engine built on the head train the model, and `model.state_dict()` is the
    checkpoint. The front end has no parameters and no buffers, and maps each record on
    its own through a deterministic, data-independent function: computing it for the
    whole private table once releases nothing and costs no privacy budget. Its output
    does not depend on train/eval mode.
    """

    name: str
    front_layers: int
    feature_shape: tuple[int, ...]

    def front(self, model: nn.Module) -> nn.Module:
        return self._split(model)[0]

    def head(self, model: nn.Module) -> nn.Module:
        return self._split(model)[1]

    def features(self, model: nn.Module, rows: np.ndarray | torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
        """uint8 pixel rows [N, 784] -> float32 front-end features [N, *feature_shape], no autograd."""
        front = self.front(model)
        if chunk < 1:
            raise FeatureTransformError(f"chunk must be positive, got {chunk}")
        out = torch.empty((len(rows), *self.feature_shape), dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, len(rows), chunk):
                stop = min(start + chunk, len(rows))
                out[start:stop] = front(preprocess(self.name, rows[start:stop]))
        return out

    def _split(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        if not isinstance(model, nn.Sequential) or len(model) <= self.front_layers:
            raise FeatureTransformError(f"model is not a built {self.name!r}")
        front, head = model[: self.front_layers], model[self.front_layers :]
        if any(True for _ in front.parameters()) or any(True for _ in front.buffers()):
            raise FeatureTransformError(f"the front end of {self.name!r} holds parameters or buffers")
        return front, head


def feature_transform(name: str) -> FeatureTransform | None:
    """The fixed front end of model `name`, or None when every layer is trainable."""
    spec = get_spec(name)
    layers = _FIXED_FRONT.get(name)
    if layers is None:
        return None
    return FeatureTransform(name=spec.name, front_layers=layers, feature_shape=_FEATURE_SHAPES[name])


_FEATURE_SHAPES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"scatter_linear": (81, 7, 7), "scatter2_linear": (TWO_SCALE_FEATURES,)}
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
