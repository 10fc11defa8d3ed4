"""Building a planned model: each op to plain torch modules, every parameter drawn from one generator.

`build_model(spec, input_shape=..., num_outputs=..., generator=g)` first plans the
model (`plan.plan_model`: shapes and every limit, no tensors), then constructs it on
the meta device, where constructors allocate nothing and draw no random numbers, and
fills each parameter in module order from `g` alone with PyTorch's default scheme for
its layer type — as `enclave.training.models` does for the registered models — so the
result is a deterministic function of (spec, input shape, class count, seed) and never
touches torch's global generator. The layers form builds an nn.Sequential (parameters
named `<layer>.weight`, as the registered models), the graph form a `GraphModel`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
from torch import nn

from enclave.training.modelfmt.layers import (
    Add,
    ClsPool,
    Concat,
    GraphModel,
    MeanPool,
    PaddingMask,
    Reshape,
    TransformerEncoderBlock,
)
from enclave.training.modelfmt.ops import TensorInfo
from enclave.training.modelfmt.params import (
    Args,
    arg_bool,
    arg_dims,
    arg_float,
    arg_int,
    arg_optional_int,
)
from enclave.training.modelfmt.plan import ModelPlan, plan_model
from enclave.training.modelfmt.spec import MODEL_INPUT, ModelFormat
from enclave.training.models import CsprngDropout
from enclave.training.scattering import Scattering2d

__all__ = ["FACTORIES", "build_model", "initialise", "parameter_shapes"]

log = logging.getLogger(__name__)

#: Builds one op's module from its arguments, its inputs' inferred tensors and the class count.
Factory = Callable[[Args, Sequence[TensorInfo], int], nn.Module]


def _linear(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    out = arg_optional_int(args, "out")
    return nn.Linear(inputs[0].shape[-1], num_outputs if out is None else out, bias=arg_bool(args, "bias"))


def _embedding(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return nn.Embedding(arg_int(args, "vocab"), arg_int(args, "dim"), padding_idx=arg_optional_int(args, "padding_idx"))


def _conv1d(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    (kernel,), (stride,), (padding,) = (arg_dims(args, key) for key in ("kernel", "stride", "padding"))
    return nn.Conv1d(
        inputs[0].shape[0], arg_int(args, "out_channels"), kernel, stride=stride, padding=padding,
        groups=arg_int(args, "groups"), bias=arg_bool(args, "bias"),
    )


def _conv2d(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    kernel, stride, padding = (_pair(arg_dims(args, key)) for key in ("kernel", "stride", "padding"))
    return nn.Conv2d(
        inputs[0].shape[0], arg_int(args, "out_channels"), kernel, stride=stride, padding=padding,
        groups=arg_int(args, "groups"), bias=arg_bool(args, "bias"),
    )


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    first, second = value
    return first, second


def _window(kind: type[nn.Module]) -> Factory:
    def make(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
        return kind(arg_dims(args, "kernel"), stride=arg_dims(args, "stride"), padding=arg_dims(args, "padding"))

    return make


def _adaptive(kind: type[nn.Module]) -> Factory:
    def make(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
        return kind(arg_dims(args, "output_size"))

    return make


def _plain(kind: type[nn.Module]) -> Factory:
    def make(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
        return kind()

    return make


def _reshape(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return Reshape(arg_dims(args, "shape"))


def _layer_norm(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return nn.LayerNorm(inputs[0].shape[-1], elementwise_affine=arg_bool(args, "affine"))


def _rms_norm(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return nn.RMSNorm(inputs[0].shape[-1], elementwise_affine=arg_bool(args, "affine"))


def _group_norm(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return nn.GroupNorm(arg_int(args, "groups"), inputs[0].shape[0], affine=arg_bool(args, "affine"))


def _dropout(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return CsprngDropout(arg_float(args, "p"))


def _concat(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    # Resolved against the inferred rank, so the module never sees a negative dim.
    return Concat(arg_int(args, "dim") % len(inputs[0].shape))


def _transformer(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return TransformerEncoderBlock(
        arg_int(args, "dim"), arg_int(args, "heads"), arg_int(args, "ff_dim"), arg_float(args, "dropout")
    )


def _padding_mask(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    return PaddingMask(arg_int(args, "pad"))


def _scatter(args: Args, inputs: Sequence[TensorInfo], num_outputs: int) -> nn.Module:
    height, width = inputs[0].shape[-2:]
    return Scattering2d(J=arg_int(args, "J"), shape=(height, width), L=arg_int(args, "L"))


#: op name -> module factory; the same keys as `ops.OPS` (a test holds them equal).
FACTORIES: Mapping[str, Factory] = MappingProxyType(
    {
        "linear": _linear,
        "embedding": _embedding,
        "conv1d": _conv1d,
        "conv2d": _conv2d,
        "max_pool1d": _window(nn.MaxPool1d),
        "max_pool2d": _window(nn.MaxPool2d),
        "avg_pool1d": _window(nn.AvgPool1d),
        "avg_pool2d": _window(nn.AvgPool2d),
        "adaptive_avg_pool1d": _adaptive(nn.AdaptiveAvgPool1d),
        "adaptive_avg_pool2d": _adaptive(nn.AdaptiveAvgPool2d),
        "flatten": _plain(nn.Flatten),
        "reshape": _reshape,
        "layer_norm": _layer_norm,
        "group_norm": _group_norm,
        "rms_norm": _rms_norm,
        "relu": _plain(nn.ReLU),
        "gelu": _plain(nn.GELU),
        "silu": _plain(nn.SiLU),
        "tanh": _plain(nn.Tanh),
        "sigmoid": _plain(nn.Sigmoid),
        "dropout": _dropout,
        "add": _plain(Add),
        "concat": _concat,
        "transformer_encoder": _transformer,
        "mean_pool": _plain(MeanPool),
        "cls_pool": _plain(ClsPool),
        "padding_mask": _padding_mask,
        "scatter": _scatter,
    }
)


def _kaiming_like_torch(module: nn.Linear | nn.Conv1d | nn.Conv2d, generator: torch.Generator) -> None:
    # PyTorch's default Linear/Conv init, drawing from `generator`: the scheme and draw
    # order of enclave.training.models, so a preset matches its registered model exactly.
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def initialise(model: nn.Module, generator: torch.Generator) -> None:
    """Every parameter of `model` set by its layer's PyTorch default, random draws from `generator`."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                _kaiming_like_torch(module, generator)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=generator)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].fill_(0.0)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
                for name, param in module.named_parameters(recurse=False):
                    param.fill_(1.0 if name == "weight" else 0.0)
            elif any(True for _ in module.parameters(recurse=False)):
                raise TypeError(f"no initialiser for layer {type(module).__name__}")


def _assemble(spec: ModelFormat, plan: ModelPlan) -> nn.Module:
    modules = [
        FACTORIES[node.op](node.arguments, [plan.tensor(name) for name in node.inputs], plan.num_outputs)
        for node in spec.nodes
    ]
    if spec.form == "layers":
        return nn.Sequential(*modules)
    position = {MODEL_INPUT: 0} | {node.name: i + 1 for i, node in enumerate(spec.nodes)}
    sources = [tuple(position[name] for name in node.inputs) for node in spec.nodes]
    return GraphModel(modules, sources, position[spec.output] - 1)


def build_model(
    spec: ModelFormat, *, input_shape: Sequence[int], num_outputs: int, generator: torch.Generator
) -> nn.Module:
    """The model `spec` describes for this input shape and class count, initialised from `generator`, in train mode.

    ModelFormatError (before any tensor is allocated) when a layer cannot take its
    input or a limit is exceeded.
    """
    plan = plan_model(spec, input_shape=input_shape, num_outputs=num_outputs)
    with torch.device("meta"):
        model = _assemble(spec, plan)
    model = model.to_empty(device="cpu")
    initialise(model, generator)
    buffers = [name for name, _ in model.named_buffers()]
    built = sum(p.numel() for p in model.parameters())
    if buffers or built != plan.parameters:
        # The plan is what the limits were checked against: a model that differs from it is a bug here.
        raise RuntimeError(f"built model differs from its plan (buffers {buffers}, {built} != {plan.parameters})")
    log.debug(
        "built %s-form model %s: %d layers, %d parameters, %d activation elements per example",
        spec.form, spec.sha256[:16], len(spec.nodes), plan.parameters, plan.activation_elements,
    )
    return model.train()


def parameter_shapes(spec: ModelFormat, *, input_shape: Sequence[int], num_outputs: int) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the built model's state_dict, from a meta-device build: no weights allocated."""
    plan = plan_model(spec, input_shape=input_shape, num_outputs=num_outputs)
    with torch.device("meta"):
        model = _assemble(spec, plan)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
