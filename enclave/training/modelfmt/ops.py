"""The closed op set: every layer type the format knows, its parameters and its shape rule.

This table is the whole vocabulary of a model: a layer's `type` is looked up here and
nowhere else (never as an attribute of torch), and each op declares its parameters
(`params.Param`), how many inputs it takes, cross-checks between its parameters, and
how it maps the per-example shapes and kinds of its inputs to its output's, with its
parameter count and the size of any large internal activations. `plan.plan_model`
runs these rules over a whole model before anything is built; `build` maps each op to
plain torch modules.

Shapes are per example (no batch dimension). A tensor is float features, integer token
ids (only the model input can be ids; only `embedding` and `padding_mask` take them)
or a boolean padding mask (`padding_mask`'s output: True at real tokens; taken as the
optional second input of `transformer_encoder`, `mean_pool` and `cls_pool`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from enclave.training.modelfmt.errors import LimitExceeded, ModelFormatError, ShapeMismatch
from enclave.training.modelfmt.limits import (
    MAX_HEADS,
    MAX_INPUTS,
    MAX_KERNEL,
    MAX_RANK,
    MAX_SCATTER_J,
    MAX_SCATTER_L,
    MAX_SEQUENCE_LENGTH,
    MAX_STRIDE,
    MAX_VOCAB,
)
from enclave.training.modelfmt.params import (
    Args,
    Param,
    Value,
    arg_bool,
    arg_dims,
    arg_int,
    arg_optional_int,
)

__all__ = [
    "OPS",
    "REFUSED",
    "Context",
    "Inferred",
    "OpDef",
    "TensorInfo",
    "TensorKind",
]

TensorKind = Literal["float", "ids", "mask"]


@dataclass(frozen=True)
class TensorInfo:
    """One example's tensor as shape inference sees it."""

    shape: tuple[int, ...]
    kind: TensorKind = "float"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        dims = f"[{', '.join(str(s) for s in self.shape)}]"
        return {"float": dims, "ids": f"token ids {dims}", "mask": f"a padding mask {dims}"}[self.kind]


@dataclass(frozen=True)
class Inferred:
    """What one layer produces for one example, and what it costs."""

    out: TensorInfo
    parameters: int = 0
    #: Per-example elements the layer holds internally beyond its output (attention scores...).
    scratch: int = 0


@dataclass(frozen=True)
class Context:
    """Where shape inference is (for messages) and what the model must output."""

    at: str
    num_outputs: int

    def fail(self, message: str) -> ShapeMismatch:
        return ShapeMismatch(f"{self.at}: {message}")


Infer = Callable[[Args, Sequence[TensorInfo], Context], Inferred]
Finish = Callable[[dict[str, Value], str], None]


@dataclass(frozen=True)
class OpDef:
    """One op of the closed set."""

    name: str
    params: tuple[Param, ...]
    infer: Infer
    min_inputs: int = 1
    max_inputs: int = 1
    #: Derives defaults from other parameters and cross-checks them, after each is read.
    finish: Finish | None = None
    #: Its first input is integer token ids rather than float features.
    takes_ids: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def read_args(self, table: Mapping[str, object], at: str) -> dict[str, Value]:
        """Every declared parameter read from `table` (defaults filled in), cross-checked."""
        args = {p.name: p.read(table, at) for p in self.params}
        if self.finish is not None:
            self.finish(args, at)
        return args


# -- inference helpers -------------------------------------------------------------------------


def _features(t: TensorInfo, ctx: Context, layout: str, *, rank: int | None = None) -> tuple[int, ...]:
    """The shape of a float input of the given rank (any rank >= 1 when None)."""
    if t.kind != "float":
        raise ctx.fail(f"takes float features {layout}, got {t}")
    if rank is not None and len(t.shape) != rank:
        raise ctx.fail(f"takes {layout}, got {t}")
    return t.shape


def _mask(inputs: Sequence[TensorInfo], ctx: Context, length: int) -> None:
    """Check the optional padding mask (second input) against a sequence of `length` positions."""
    if len(inputs) < 2:
        return
    mask = inputs[1]
    if mask.kind != "mask" or mask.shape != (length,):
        raise ctx.fail(f"takes a padding mask [{length}] as its second input, got {mask}")


def _sequence(t: TensorInfo, ctx: Context) -> tuple[int, int]:
    length, width = _features(t, ctx, "[positions, features]", rank=2)
    if length > MAX_SEQUENCE_LENGTH:
        raise LimitExceeded(f"{ctx.at}: {length} positions, more than the limit of {MAX_SEQUENCE_LENGTH}")
    return length, width


def _window(ctx: Context, t: TensorInfo, sides: tuple[int, ...], args: Args) -> tuple[int, ...]:
    """Output sides of a convolution or pooling window (floor mode, no dilation)."""
    kernel, stride, padding = arg_dims(args, "kernel"), arg_dims(args, "stride"), arg_dims(args, "padding")
    out = []
    for side, k, s, p in zip(sides, kernel, stride, padding, strict=True):
        if side + 2 * p < k:
            raise ctx.fail(f"kernel {list(kernel)} does not fit input {t} padded by {list(padding)}")
        out.append((side + 2 * p - k) // s + 1)
    return tuple(out)


# -- parameter cross-checks -------------------------------------------------------------------


def _finish_conv(args: dict[str, Value], at: str) -> None:
    groups, out = arg_int(args, "groups"), arg_int(args, "out_channels")
    if out % groups:
        raise ModelFormatError(f"{at}: out_channels {out} is not divisible by groups {groups}")


def _finish_pool(args: dict[str, Value], at: str) -> None:
    kernel = arg_dims(args, "kernel")
    if args["stride"] is None:
        args["stride"] = kernel
    padding = arg_dims(args, "padding")
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        # torch refuses more padding than half the window: a window of padding alone.
        raise ModelFormatError(f"{at}: padding {list(padding)} exceeds half the kernel {list(kernel)}")


def _finish_embedding(args: dict[str, Value], at: str) -> None:
    pad, vocab = arg_optional_int(args, "padding_idx"), arg_int(args, "vocab")
    if pad is not None and pad >= vocab:
        raise ModelFormatError(f"{at}: padding_idx {pad} is not below vocab {vocab}")


def _finish_transformer(args: dict[str, Value], at: str) -> None:
    dim, heads = arg_int(args, "dim"), arg_int(args, "heads")
    if dim % heads:
        raise ModelFormatError(f"{at}: dim {dim} is not divisible by heads {heads}")


# -- shape rules -------------------------------------------------------------------------------


def _linear(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    shape = _features(inputs[0], ctx, "[..., features]")
    out = arg_optional_int(args, "out")
    width = ctx.num_outputs if out is None else out
    count = shape[-1] * width + (width if arg_bool(args, "bias") else 0)
    return Inferred(TensorInfo((*shape[:-1], width)), count)


def _embedding(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    ids = inputs[0]
    if ids.kind != "ids":
        raise ctx.fail(f"takes integer token ids, got {'float features ' if ids.kind == 'float' else ''}{ids}")
    if ids.numel > MAX_SEQUENCE_LENGTH:
        raise LimitExceeded(
            f"{ctx.at}: {ids.numel} token ids per example, more than the limit of {MAX_SEQUENCE_LENGTH}"
        )
    vocab, dim = arg_int(args, "vocab"), arg_int(args, "dim")
    return Inferred(TensorInfo((*ids.shape, dim)), vocab * dim)


def _conv(d: int) -> Infer:
    layout = "[channels, length]" if d == 1 else "[channels, height, width]"

    def infer(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
        shape = _features(inputs[0], ctx, layout, rank=d + 1)
        channels, groups = shape[0], arg_int(args, "groups")
        if channels % groups:
            raise ctx.fail(f"input channels {channels} (input {inputs[0]}) are not divisible by groups {groups}")
        out = arg_int(args, "out_channels")
        sides = _window(ctx, inputs[0], shape[1:], args)
        weights = out * (channels // groups) * math.prod(arg_dims(args, "kernel"))
        return Inferred(TensorInfo((out, *sides)), weights + (out if arg_bool(args, "bias") else 0))

    return infer


def _pool(d: int) -> Infer:
    layout = "[channels, length]" if d == 1 else "[channels, height, width]"

    def infer(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
        shape = _features(inputs[0], ctx, layout, rank=d + 1)
        return Inferred(TensorInfo((shape[0], *_window(ctx, inputs[0], shape[1:], args))))

    return infer


def _adaptive_pool(d: int) -> Infer:
    layout = "[channels, length]" if d == 1 else "[channels, height, width]"

    def infer(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
        shape = _features(inputs[0], ctx, layout, rank=d + 1)
        return Inferred(TensorInfo((shape[0], *arg_dims(args, "output_size"))))

    return infer


def _flatten(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    return Inferred(TensorInfo((math.prod(_features(inputs[0], ctx, "[...]")),)))


def _reshape(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    shape, target = _features(inputs[0], ctx, "[...]"), arg_dims(args, "shape")
    if math.prod(shape) != math.prod(target):
        raise ctx.fail(
            f"cannot reshape {inputs[0]} ({math.prod(shape)} elements) to {list(target)} ({math.prod(target)} elements)"
        )
    return Inferred(TensorInfo(target))


def _layer_norm(per_feature: int) -> Infer:
    def infer(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
        shape = _features(inputs[0], ctx, "[..., features]")
        count = per_feature * shape[-1] if arg_bool(args, "affine") else 0
        return Inferred(TensorInfo(shape), count)

    return infer


def _group_norm(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    shape = _features(inputs[0], ctx, "[channels, ...]")
    groups = arg_int(args, "groups")
    if shape[0] % groups:
        raise ctx.fail(f"input channels {shape[0]} (input {inputs[0]}) are not divisible by groups {groups}")
    return Inferred(TensorInfo(shape), 2 * shape[0] if arg_bool(args, "affine") else 0)


def _elementwise(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    return Inferred(TensorInfo(_features(inputs[0], ctx, "[...]")))


def _add(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    first = _features(inputs[0], ctx, "[...]")
    for other in inputs[1:]:
        if _features(other, ctx, "[...]") != first:
            raise ctx.fail(f"inputs have different shapes {inputs[0]} and {other}")
    return Inferred(TensorInfo(first))


def _concat(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    shapes = [_features(t, ctx, "[...]") for t in inputs]
    rank, dim = len(shapes[0]), arg_int(args, "dim")
    if not -rank <= dim < rank:
        raise ctx.fail(f"dim {dim} is out of range for inputs of {rank} dimensions ({inputs[0]})")
    axis = dim % rank
    for t, shape in zip(inputs[1:], shapes[1:], strict=True):
        if len(shape) != rank or shape[:axis] + shape[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]:
            raise ctx.fail(f"cannot concatenate {inputs[0]} and {t} along dim {dim}")
    joined = sum(shape[axis] for shape in shapes)
    return Inferred(TensorInfo((*shapes[0][:axis], joined, *shapes[0][axis + 1 :])))


def _dropout(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    return _elementwise(args, inputs, ctx)


def _transformer(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    length, width = _sequence(inputs[0], ctx)
    dim, heads, ff = arg_int(args, "dim"), arg_int(args, "heads"), arg_int(args, "ff_dim")
    if width != dim:
        raise ctx.fail(f"dim is {dim} but the input is {inputs[0]}")
    _mask(inputs, ctx, length)
    # Two LayerNorms, query/key/value/output projections, the two feed-forward layers.
    count = 2 * 2 * dim + 4 * (dim * dim + dim) + (dim * ff + ff) + (ff * dim + dim)
    # Scores and weights per head, the projections and residual branches, the hidden layer.
    scratch = 2 * heads * length * length + 8 * length * dim + 2 * length * ff
    return Inferred(TensorInfo((length, dim)), count, scratch)


def _sequence_pool(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    length, width = _sequence(inputs[0], ctx)
    _mask(inputs, ctx, length)
    return Inferred(TensorInfo((width,)))


def _padding_mask(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    ids = inputs[0]
    if ids.kind != "ids":
        raise ctx.fail(f"takes integer token ids, got {ids}")
    return Inferred(TensorInfo(ids.shape, "mask"))


def _scatter(args: Args, inputs: Sequence[TensorInfo], ctx: Context) -> Inferred:
    # Deferred: the scattering module loads torch, which parsing and planning otherwise never need
    # (the host reads job specs without it).
    from enclave.training.scattering import output_channels, padded_size

    layout = "one-channel images [1, height, width] or [height, width]"
    shape = _features(inputs[0], ctx, layout)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise ctx.fail(f"takes {layout}, got {inputs[0]}")
    J, L = arg_int(args, "J"), arg_int(args, "L")
    step = 2**J
    height, width = shape
    if height % step or width % step:
        raise ctx.fail(f"image sides of {inputs[0]} must be multiples of 2^J = {step}")
    padded = (padded_size(height, J), padded_size(width, J))
    # Reflect padding reaches at most the image's own side (Scattering2d's own check).
    if (padded[0] - height + 1) // 2 >= height or (padded[1] - width + 1) // 2 >= width:
        raise ctx.fail(f"image {inputs[0]} is too small for J = {J}")
    channels = output_channels(J, L)
    # Complex spectra of every scattering path on the padded grid bound what a forward holds.
    scratch = 2 * (1 + J * L + L * L * J) * padded[0] * padded[1]
    return Inferred(TensorInfo((channels, height // step, width // step)), 0, scratch)


# -- the registry ------------------------------------------------------------------------------


def _kernel(d: int) -> tuple[Param, Param, Param]:
    return (
        Param("kernel", "dims", low=1, high=MAX_KERNEL, required=True, dims=d),
        Param("stride", "dims", low=1, high=MAX_STRIDE, default=(1,) * d, dims=d),
        Param("padding", "dims", low=0, high=MAX_KERNEL, default=(0,) * d, dims=d),
    )


def _conv_op(d: int) -> OpDef:
    params = (
        Param("out_channels", "int", low=1, required=True),
        *_kernel(d),
        Param("groups", "int", low=1, default=1),
        Param("bias", "bool", default=True),
    )
    return OpDef(f"conv{d}d", params, _conv(d), finish=_finish_conv)


def _pool_op(name: str, d: int) -> OpDef:
    kernel, stride, padding = _kernel(d)
    # A pooling stride defaults to the kernel (torch's default), derived in _finish_pool.
    stride = Param("stride", "dims", low=1, high=MAX_STRIDE, dims=d)
    return OpDef(f"{name}{d}d", (kernel, stride, padding), _pool(d), finish=_finish_pool)


def _adaptive_op(d: int) -> OpDef:
    params = (Param("output_size", "dims", low=1, required=True, dims=d),)
    return OpDef(f"adaptive_avg_pool{d}d", params, _adaptive_pool(d))


def _plain(name: str) -> OpDef:
    return OpDef(name, (), _elementwise)


_AFFINE = Param("affine", "bool", default=True)

_ALL: tuple[OpDef, ...] = (
    OpDef("linear", (Param("out", "int", low=1), Param("bias", "bool", default=True)), _linear),
    OpDef(
        "embedding",
        (
            Param("vocab", "int", low=1, high=MAX_VOCAB, required=True),
            Param("dim", "int", low=1, required=True),
            Param("padding_idx", "int", low=0, high=MAX_VOCAB - 1),
        ),
        _embedding,
        finish=_finish_embedding,
        takes_ids=True,
    ),
    _conv_op(1),
    _conv_op(2),
    _pool_op("max_pool", 1),
    _pool_op("max_pool", 2),
    _pool_op("avg_pool", 1),
    _pool_op("avg_pool", 2),
    _adaptive_op(1),
    _adaptive_op(2),
    OpDef("flatten", (), _flatten),
    OpDef("reshape", (Param("shape", "shape", low=1, required=True),), _reshape),
    OpDef("layer_norm", (_AFFINE,), _layer_norm(2)),
    OpDef("group_norm", (Param("groups", "int", low=1, required=True), _AFFINE), _group_norm),
    OpDef("rms_norm", (_AFFINE,), _layer_norm(1)),
    _plain("relu"),
    _plain("gelu"),
    _plain("silu"),
    _plain("tanh"),
    _plain("sigmoid"),
    OpDef("dropout", (Param("p", "float", low=0.0, high=1.0, required=True, high_open=True),), _dropout),
    OpDef("add", (), _add, min_inputs=2, max_inputs=MAX_INPUTS),
    OpDef(
        "concat", (Param("dim", "int", low=-MAX_RANK, high=MAX_RANK - 1, required=True),), _concat,
        min_inputs=2, max_inputs=MAX_INPUTS,
    ),
    OpDef(
        "transformer_encoder",
        (
            Param("dim", "int", low=1, required=True),
            Param("heads", "int", low=1, high=MAX_HEADS, required=True),
            Param("ff_dim", "int", low=1, required=True),
            Param("dropout", "float", low=0.0, high=1.0, default=0.0, high_open=True),
        ),
        _transformer,
        max_inputs=2,
        finish=_finish_transformer,
    ),
    OpDef("mean_pool", (), _sequence_pool, max_inputs=2),
    OpDef("cls_pool", (), _sequence_pool, max_inputs=2),
    OpDef("padding_mask", (Param("pad", "int", low=0, high=MAX_VOCAB - 1, default=0),), _padding_mask,
          takes_ids=True),
    OpDef(
        "scatter",
        (
            Param("J", "int", low=1, high=MAX_SCATTER_J, default=2),
            Param("L", "int", low=1, high=MAX_SCATTER_L, default=8),
        ),
        _scatter,
    ),
)

#: The closed op set, read-only: type name -> OpDef.
OPS: Mapping[str, OpDef] = MappingProxyType({op.name: op for op in _ALL})

_MIXES = "{name} mixes examples in a batch, which per-example clipping cannot bound; use group_norm or layer_norm"

#: Layer types refused on purpose, with the reason given to the job's author.
REFUSED: Mapping[str, str] = MappingProxyType(
    {
        name: _MIXES.format(name=name)
        for name in ("batch_norm", "batch_norm1d", "batch_norm2d", "batch_norm3d", "batchnorm", "sync_batch_norm")
    }
)
