"""Per-layer rules of the ghost clipping engine ("fast"): per-sample norms and clipped sums.

Every rule receives, for one module, the inputs it was called with during the engine's
single forward pass and the gradients of the summed loss with respect to its outputs
(from the single backward pass), and returns a `Pending`: the squared per-sample norm
of each trainable parameter's gradient, and a function that, given the clip factors
c_i, returns sum_i c_i * grad_i(param) for each parameter.

The rules, with a the layer input and g the output gradient of sample i:

* Linear, input [n, T, d] (T = 1 for 2-D inputs): grad_i(W) = sum_t g_it a_it^T.
  T = 1: ||grad_i||^2 = ||a_i||^2 ||g_i||^2 ("ghost-outer"). T > 1: the Gram identity
  ||grad_i||^2 = <a_i a_i^T, g_i g_i^T> ("ghost-gram") when that is cheaper than
  materialising the [n, p, d] per-sample gradients, or when those would not fit the
  memory budget (see `use_gram`). Clipped sum: (c * g)^T a, one matmul.
* Conv1d/Conv2d: unfold (im2col) turns the convolution into the Linear case per group,
  with T = the number of output positions, and the same choice. The ghost clipped sum
  is the ordinary weight gradient of the convolution with c-scaled output gradients
  (aten's convolution_backward), so the unfolded input need not outlive the norms;
  materialised per-sample gradients give the clipped sum as one weighted sum.
* Embedding: grad_i(E) = sum_t onehot(idx_it) g_it^T, so ||grad_i||^2 =
  sum_{t,t'} [idx_it = idx_it'] <g_it, g_it'> ("ghost-gram" over positions); the
  clipped sum is one index_add.
* LayerNorm / RMSNorm / GroupNorm: per-sample gradients of the affine parameters are small
  ([n, normalized_shape] or [n, C]) and are materialised from the re-normalised input.
* Anything else with parameters ("fallback"): per-sample gradients of the module's own
  parameters by torch.func (vmap over samples of the vector-Jacobian product of the
  module applied to one sample as a batch of one, exactly like the reference engine).

Biases always take the materialised path: their per-sample gradient is [n, p].
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from enclave.training.clipping.rules import GhostClippingError

__all__ = [
    "MATERIALISE_BUDGET_BYTES",
    "PATH_FALLBACK",
    "PATH_GHOST_GRAM",
    "PATH_GHOST_OUTER",
    "PATH_MATERIALISED",
    "Call",
    "Pending",
    "Rule",
    "rule_for",
    "use_gram",
]

#: Names of the computation paths a parameter's norm can take (recorded for tests and logs).
PATH_GHOST_OUTER = "ghost-outer"
PATH_GHOST_GRAM = "ghost-gram"
PATH_MATERIALISED = "materialised"
PATH_FALLBACK = "fallback"


@dataclass
class Call:
    """One invocation of a module during the capture forward pass."""

    args: tuple[object, ...]
    kwargs: dict[str, object]
    #: (shape, dtype) of each output leaf that carries a gradient, None for the other leaves.
    out_meta: list[tuple[torch.Size, torch.dtype] | None]
    #: Gradients of the summed loss with respect to each output leaf (None: no gradient).
    grads: list[torch.Tensor | None] = field(default_factory=list)

    def out_grad(self, k: int = 0) -> torch.Tensor:
        """The gradient of output leaf k, zeros when the loss did not depend on it."""
        g = self.grads[k]
        if g is not None:
            return g
        meta = self.out_meta[k]
        assert meta is not None
        return torch.zeros(meta[0], dtype=meta[1])


@dataclass
class Pending:
    """Squared per-sample norms of a module's parameters and the deferred clipped sum."""

    sq_norms: dict[str, torch.Tensor]
    paths: dict[str, str]
    clipped_sum: Callable[[torch.Tensor], dict[str, torch.Tensor]]


def _sq(t: torch.Tensor) -> torch.Tensor:
    """[n] squared L2 norm of each sample's slice of t (no squared copy of t)."""
    result: torch.Tensor = torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1).square()
    return result


def _along_positions(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenation along dim 1, without the copy when there is a single part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _weighted(c: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
    """sum_i c_i per_sample[i] without a scaled copy of per_sample."""
    result: torch.Tensor = torch.tensordot(c.to(per_sample.dtype), per_sample, dims=1)
    return result


class Rule:
    """Base class: a module and its trainable parameters (local name -> full name)."""

    def __init__(self, module: nn.Module, names: Mapping[str, str]) -> None:
        self.module = module
        self.names = dict(names)

    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        raise NotImplementedError

    def _full(self, local: str) -> str | None:
        return self.names.get(local)


# -- Linear and convolutions: rows of (a, g) pairs -------------------------------------


def _gram_sq_norm(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """[b] <a a^T, g g^T> for a [b, T, d], g [b, T, p]: ||g^T a||_F^2 without forming g^T a."""
    gram_a = torch.bmm(a, a.transpose(1, 2))
    gram_g = torch.bmm(g, g.transpose(1, 2))
    return (gram_a * gram_g).sum(dim=(1, 2))


#: Largest per-layer stack of materialised per-sample weight gradients (bytes, float32)
#: before the Gram path is preferred whatever it costs in arithmetic.
MATERIALISE_BUDGET_BYTES = 64 * 1024 * 1024


#: Samples per chunk when materialising convolution per-sample gradients.
CONV_CHUNK = 32


def use_gram(n: int, steps: int, d: int, p: int, groups: int = 1) -> bool:
    """Whether a weight seen at `steps` positions (d inputs, p outputs in all) takes the Gram path.

    Both paths pay about steps * d * p per sample once (materialising the per-sample
    gradient, or the weight gradient of the clipped sum); the Gram path adds
    steps^2 * (d + p) for the two Gram matrices, materialising adds d * p (the weighted
    sum of per-sample gradients). So the Gram path is cheaper when
    steps^2 * (d + p) < d * p, which for steps = 1 always holds (the outer-product
    rule ||a|| ||g||); otherwise materialise, unless the n per-sample gradients would
    not fit the memory budget and the Gram matrices are smaller.
    """
    d_g, p_g = d // groups, p // groups
    if steps * steps * (d_g + p_g) < d_g * p_g:
        return True
    materialised = n * d_g * p_g * groups * 4
    return materialised > MATERIALISE_BUDGET_BYTES and steps * steps < d_g * p_g


class LinearRule(Rule):
    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        m = cast(nn.Linear, self.module)
        d, p = m.in_features, m.out_features
        # Several calls of one layer act as one call on their concatenated positions.
        a = _along_positions([cast(torch.Tensor, c.args[0]).reshape(n, -1, d) for c in calls])
        g = _along_positions([c.out_grad().reshape(n, -1, p) for c in calls])
        steps = a.shape[1]
        sq: dict[str, torch.Tensor] = {}
        paths: dict[str, str] = {}
        w_name, b_name = self._full("weight"), self._full("bias")
        per_sample_w: torch.Tensor | None = None
        if w_name is not None:
            if steps == 1:
                sq[w_name] = _sq(a) * _sq(g)
                paths[w_name] = PATH_GHOST_OUTER
            elif use_gram(n, steps, d, p):
                sq[w_name] = _gram_sq_norm(a, g)
                paths[w_name] = PATH_GHOST_GRAM
            else:
                per_sample_w = torch.bmm(g.transpose(1, 2), a)
                sq[w_name] = _sq(per_sample_w)
                paths[w_name] = PATH_MATERIALISED
        g_sum: torch.Tensor | None = None
        if b_name is not None:
            g_sum = g[:, 0] if steps == 1 else g.sum(dim=1)
            sq[b_name] = _sq(g_sum)
            paths[b_name] = PATH_MATERIALISED

        def clipped_sum(c: torch.Tensor) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            if w_name is not None:
                if per_sample_w is not None:
                    out[w_name] = _weighted(c, per_sample_w)
                else:
                    # sum_i c_i g_i^T a_i as one matmul over all n*T rows.
                    scaled = (g * c.to(g.dtype).view(n, 1, 1)).reshape(-1, p)
                    out[w_name] = torch.mm(scaled.t(), a.reshape(-1, d))
            if b_name is not None:
                assert g_sum is not None
                out[b_name] = _weighted(c, g_sum)
            return out

        return Pending(sq, paths, clipped_sum)


class ConvRule(Rule):
    """Conv1d and Conv2d (any stride, padding, dilation, groups, padding mode)."""

    def _padded(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The input as the convolution sees it with explicit padding, and that padding."""
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            # 'same' may pad asymmetrically and non-zero modes pad with data: pad by hand.
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            return F.pad(x, m._reversed_padding_repeated_twice, mode=mode), [0] * len(m.kernel_size)
        return x, list(m.padding)

    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(kernel, stride, dilation) as 2-D tuples; a Conv1d is a Conv2d of height 1."""
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        if isinstance(m, nn.Conv1d):
            return (1, m.kernel_size[0]), (1, m.stride[0]), (1, m.dilation[0])
        return tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)  # type: ignore[return-value]  # 2-D rules only

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel-last im2col of x: [n * groups, positions, kh * kw * C_in / groups].

        Row t of sample i (and group) holds the receptive field of output position t in
        (kh, kw, channel) order, so each row is gathered from runs of contiguous channels
        of a channels-last copy of the input, and the batched matmul that consumes it reads
        contiguous rows. The per-sample gradients come out in the same order;
        `_weight_layout` restores the weight's (channel, kh, kw) order once, on the clipped sum.
        """
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        x, padding = self._padded(x)
        if isinstance(m, nn.Conv1d):
            x = x.unsqueeze(2)
            padding = [0, *padding]
        (kh, kw), (sh_, sw_), (dh, dw) = self._geometry()
        n, c, h, w = x.shape
        ph, pw = padding
        # One copy: the channels-last input written into a zero-padded buffer.
        last = x.new_zeros((n, h + 2 * ph, w + 2 * pw, c))
        last[:, ph : ph + h, pw : pw + w].copy_(x.permute(0, 2, 3, 1))
        out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh_ + 1
        out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw_ + 1
        groups = m.groups
        sn, sy, sx, sc = last.stride()
        patches = last.as_strided(
            (n, groups, out_h, out_w, kh, kw, c // groups),
            (sn, sc * (c // groups), sy * sh_, sx * sw_, sy * dh, sx * dw, sc),
        )
        return patches.reshape(n * groups, out_h * out_w, kh * kw * (c // groups))

    def _weight_layout(self, t: torch.Tensor) -> torch.Tensor:
        """A [C_out, kh * kw * C_in/groups] gradient in `_columns`' order, as the weight is laid out."""
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        kernel, _, _ = self._geometry()
        return t.reshape(m.out_channels, *kernel, -1).permute(0, 3, 1, 2).reshape(m.weight.shape)

    def _per_sample_weight(self, x: torch.Tensor, g: torch.Tensor, n: int) -> torch.Tensor:
        """[n, C_out, kh * kw * C_in/groups] per-sample weight gradients (kernel-last order).

        Per sample and group, g_i cols_i, computed CONV_CHUNK samples at a time so each
        chunk's columns are still in cache when the batched matmul reads them.
        """
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        groups = m.groups
        p_g = m.out_channels // groups
        out = torch.empty((n, m.out_channels, m.weight[0].numel()), dtype=g.dtype)
        flat = out.view(n * groups, p_g, -1)
        for start in range(0, n, CONV_CHUNK):
            stop = min(n, start + CONV_CHUNK)
            torch.bmm(
                g[start:stop].reshape((stop - start) * groups, p_g, -1),
                self._columns(x[start:stop]),
                out=flat[start * groups : stop * groups],
            )
        return out

    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        groups = m.groups
        p_g = m.out_channels // groups
        d_g = m.weight[0].numel()
        w_name, b_name = self._full("weight"), self._full("bias")
        sq: dict[str, torch.Tensor] = {}
        paths: dict[str, str] = {}
        inputs = [c.args[0] for c in calls]
        grads = [c.out_grad() for c in calls]
        for x in inputs:
            if not isinstance(x, torch.Tensor) or x.dim() != len(m.kernel_size) + 2 or x.shape[0] != n:
                raise GhostClippingError(f"{type(m).__name__} was called without a leading batch dimension")
        per_sample_w: torch.Tensor | None = None
        if w_name is not None:
            positions = grads[0][0, 0].numel()
            # Several invocations: the norm of their sum needs the sum itself.
            if len(calls) == 1 and use_gram(n, positions, d_g * groups, p_g * groups, groups):
                x, g = inputs[0], grads[0]
                assert isinstance(x, torch.Tensor)
                g_rows = g.reshape(n * groups, p_g, positions).transpose(1, 2)
                sq[w_name] = _gram_sq_norm(self._columns(x), g_rows).view(n, groups).sum(dim=1)
                paths[w_name] = PATH_GHOST_GRAM
            else:
                for x, g in zip(inputs, grads, strict=True):
                    assert isinstance(x, torch.Tensor)
                    part = self._per_sample_weight(x, g, n)
                    per_sample_w = part if per_sample_w is None else per_sample_w + part
                assert per_sample_w is not None
                sq[w_name] = _sq(per_sample_w)
                paths[w_name] = PATH_MATERIALISED
        g_sum: torch.Tensor | None = None
        if b_name is not None:
            for g in grads:
                part = g.reshape(n, m.out_channels, -1).sum(dim=2)
                g_sum = part if g_sum is None else g_sum + part
            assert g_sum is not None
            sq[b_name] = _sq(g_sum)
            paths[b_name] = PATH_MATERIALISED

        def clipped_sum(c: torch.Tensor) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            if w_name is not None:
                if per_sample_w is not None:
                    out[w_name] = self._weight_layout(_weighted(c, per_sample_w))
                else:
                    x, g = inputs[0], grads[0]
                    assert isinstance(x, torch.Tensor)
                    scale = c.to(g.dtype).view(n, *([1] * (g.dim() - 1)))
                    out[w_name] = self._weight_grad(x, g * scale)
            if b_name is not None:
                assert g_sum is not None
                out[b_name] = _weighted(c, g_sum)
            return out

        return Pending(sq, paths, clipped_sum)

    def _weight_grad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The convolution's ordinary weight gradient for input x and output gradient g."""
        m = cast(nn.Conv1d | nn.Conv2d, self.module)
        x, padding = self._padded(x)
        _, grad_w, _ = torch.ops.aten.convolution_backward(
            g, x, m.weight.detach(), None, list(m.stride), padding, list(m.dilation),
            False, [0] * len(padding), m.groups, [False, True, False],
        )
        result: torch.Tensor = grad_w
        return result


# -- Embedding ---------------------------------------------------------------------------


class EmbeddingRule(Rule):
    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        m = cast(nn.Embedding, self.module)
        w_name = self._full("weight")
        assert w_name is not None
        p = m.embedding_dim
        idx = _along_positions([cast(torch.Tensor, c.args[0]).reshape(n, -1) for c in calls])
        g = _along_positions([c.out_grad().reshape(n, -1, p) for c in calls])
        if m.padding_idx is not None:
            # The padding row never receives a gradient.
            g = g.masked_fill((idx == m.padding_idx).unsqueeze(2), 0.0)
        steps = idx.shape[1]
        if steps == 1:
            sq = _sq(g)
            path = PATH_GHOST_OUTER
        else:
            same = idx.unsqueeze(2) == idx.unsqueeze(1)
            sq = (torch.bmm(g, g.transpose(1, 2)) * same).sum(dim=(1, 2))
            path = PATH_GHOST_GRAM

        def clipped_sum(c: torch.Tensor) -> dict[str, torch.Tensor]:
            scaled = (g * c.to(g.dtype).view(n, 1, 1)).reshape(-1, p)
            total = torch.zeros(m.weight.shape, dtype=g.dtype)
            return {w_name: total.index_add_(0, idx.reshape(-1), scaled)}

        return Pending({w_name: sq}, {w_name: path}, clipped_sum)


# -- normalisation layers: small per-sample gradients, materialised ---------------------


class _AffineNormRule(Rule):
    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _per_sample(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """Sum of y over every axis but the sample axis and the parameter's axes."""
        raise NotImplementedError

    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        w_name, b_name = self._full("weight"), self._full("bias")
        per: dict[str, torch.Tensor] = {}
        for call in calls:
            x = call.args[0]
            assert isinstance(x, torch.Tensor)
            g = call.out_grad()
            parts: dict[str, torch.Tensor] = {}
            if w_name is not None:
                parts[w_name] = self._per_sample(g * self._normalised(x), n)
            if b_name is not None:
                parts[b_name] = self._per_sample(g, n)
            for name, value in parts.items():
                per[name] = value if name not in per else per[name] + value
        sq = {name: _sq(value) for name, value in per.items()}

        def clipped_sum(c: torch.Tensor) -> dict[str, torch.Tensor]:
            return {name: _weighted(c, value) for name, value in per.items()}

        return Pending(sq, {name: PATH_MATERIALISED for name in per}, clipped_sum)


class LayerNormRule(_AffineNormRule):
    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        m = cast(nn.LayerNorm, self.module)
        return F.layer_norm(x, m.normalized_shape, None, None, m.eps)

    def _per_sample(self, y: torch.Tensor, n: int) -> torch.Tensor:
        return _over_positions(y, n, cast(nn.LayerNorm, self.module).normalized_shape)


class RMSNormRule(_AffineNormRule):
    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        m = cast(nn.RMSNorm, self.module)
        return F.rms_norm(x, m.normalized_shape, None, m.eps)

    def _per_sample(self, y: torch.Tensor, n: int) -> torch.Tensor:
        return _over_positions(y, n, cast(nn.RMSNorm, self.module).normalized_shape)


def _over_positions(y: torch.Tensor, n: int, shape: Sequence[int]) -> torch.Tensor:
    """[n, ..., *shape] summed over the positions between the sample axis and the normalised axes."""
    return y.reshape(n, -1, *tuple(shape)).sum(dim=1)


class GroupNormRule(_AffineNormRule):
    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        m = cast(nn.GroupNorm, self.module)
        return F.group_norm(x, m.num_groups, None, None, m.eps)

    def _per_sample(self, y: torch.Tensor, n: int) -> torch.Tensor:
        m = cast(nn.GroupNorm, self.module)
        return y.reshape(n, m.num_channels, -1).sum(dim=2)


# -- anything else: torch.func on the module alone ---------------------------------------


class FallbackRule(Rule):
    """Per-sample gradients of the module's own parameters by vmap(grad) over samples."""

    def prepare(self, calls: Sequence[Call], n: int) -> Pending:
        m = self.module
        own = {local: getattr(m, local).detach() for local in self.names}
        per: dict[str, torch.Tensor] = {}
        for call in calls:
            grads = [call.out_grad(k) if meta is not None else None for k, meta in enumerate(call.out_meta)]
            # Positional and keyword tensors whose leading dimension is the batch are
            # per-sample; everything else (flags, shared constants) is passed as is.
            flat, spec = tree_flatten((call.args, call.kwargs))
            batched = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in flat]

            def sample_dot(
                params: dict[str, torch.Tensor], flat_in: list[object], outs: list[torch.Tensor | None]
            ) -> torch.Tensor:
                # Each sample runs alone as a batch of one, as in the reference engine.
                one = [a.unsqueeze(0) if b else a for a, b in zip(flat_in, batched, strict=True)]  # type: ignore[attr-defined]  # noqa: B023 - flat_in holds tensors where batched; used only in this iteration
                args, kwargs = tree_unflatten(one, spec)  # noqa: B023 - used only in this iteration
                out = functional_call(m, params, tuple(args), kwargs)
                total = torch.zeros(())
                for leaf, g in zip(tree_flatten(out)[0], outs, strict=True):
                    if g is not None and isinstance(leaf, torch.Tensor):
                        total = total + (leaf * g.unsqueeze(0)).sum()
                return total

            in_flat = [0 if b else None for b in batched]
            out_dims = [0 if g is not None else None for g in grads]
            per_call = vmap(
                grad(sample_dot), in_dims=(None, in_flat, out_dims), randomness="different"
            )(own, flat, grads)
            for local, value in per_call.items():
                name = self.names[local]
                per[name] = value if name not in per else per[name] + value
        sq = {name: _sq(value) for name, value in per.items()}

        def clipped_sum(c: torch.Tensor) -> dict[str, torch.Tensor]:
            return {name: _weighted(c, value) for name, value in per.items()}

        return Pending(sq, {name: PATH_FALLBACK for name in per}, clipped_sum)


def rule_for(module: nn.Module, names: Mapping[str, str]) -> Rule:
    """The rule for `module` (exact type match: subclasses may override forward)."""
    kind = type(module)
    if kind is nn.Linear:
        return LinearRule(module, names)
    if kind in (nn.Conv1d, nn.Conv2d):
        return ConvRule(module, names)
    if kind is nn.Embedding and not module.scale_grad_by_freq:
        return EmbeddingRule(module, names)
    if kind is nn.LayerNorm:
        return LayerNormRule(module, names)
    if kind is nn.RMSNorm:
        return RMSNormRule(module, names)
    if kind is nn.GroupNorm:
        return GroupNormRule(module, names)
    return FallbackRule(module, names)
