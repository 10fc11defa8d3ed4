"""The ghost clipping engine ("fast"): ghost norms and book-keeping, one forward and one backward.

`GhostClipping(model, max_grad_norm=C).clipped_sum(inputs, targets)` returns the same
clipped sum sum_i min(1, C / (||g_i|| + 1e-6)) g_i as the reference engine
(`enclave.training.clipping.reference`, vmap over per-sample gradients), computed as
follows for each micro-batch:

1. one forward pass with forward hooks on every module that owns trainable parameters,
   recording the inputs of each call (references, not copies: backward keeps them
   anyway) and the gradient edge of each output;
2. one backward pass, `torch.autograd.grad` of the summed per-sample losses with
   respect to those outputs only — autograd then skips the parameter-gradient
   products altogether, so this is cheaper than an ordinary backward. Gradient edges
   (not the output tensors) are used so an in-place operation applied to an output
   afterwards (ReLU(inplace=True)) cannot shift which gradient is returned;
3. per-sample squared norms per layer from (input, output gradient) by the rules in
   `ghost_layers` (ghost norms for Linear, Conv and Embedding where cheaper than
   materialising, small materialised gradients for norm layers, torch.func otherwise);
4. the clip factors, then each layer's clipped sum as one weighted product (for Linear,
   (c * g)^T a; for Conv, the convolution's weight gradient with c-scaled output
   gradients). No second backward pass.

Parameters shared between modules are refused (the norm of a sum is not separable);
the reference engine ("vmap") handles them. Two things the hooks cannot see would make
a clipped norm understate the real one, which voids the privacy guarantee: a parameter
used outside the module that owns it (`F.linear(x, self.child.weight)` in a parent's
forward), and a layer whose input carries the samples along a dimension other than the
first (the rules group rows by the leading dimension). So on its first batch of two or
more samples the engine checks, once, on up to three of them in eval mode, that its
unclipped sum equals autograd's gradient for every trainable parameter and that its
per-sample norms equal the reference engine's, and refuses the model (GhostClippingError,
an UnsupportedLayer) otherwise. The outcome depends on the model's structure, not on
the values of the samples, for any model it accepts or refuses in practice.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.func import vmap
from torch.utils._pytree import tree_flatten

from enclave.training.clipping.engine import ClipResult
from enclave.training.clipping.ghost_layers import Call, Pending, Rule, rule_for
from enclave.training.clipping.reference import per_sample_gradients, per_sample_norms
from enclave.training.clipping.rules import (
    GhostClippingError,
    check_batch,
    check_privatizable,
    clip_factors,
    huber_sum,
    loss_function,
    mse_sum,
    positive,
    positive_int,
    trainable_parameters,
)

__all__ = ["GhostClipping"]

log = logging.getLogger(__name__)

#: Relative tolerance of the one-time coverage check (float32 sums over a few samples).
_CHECK_RTOL = 1e-3
#: Samples used by the one-time check (odd, so it rarely coincides with another dimension).
_CHECK_SAMPLES = 3


def _versions(tree: object) -> tuple[int, ...]:
    """Version counters of the tensors in `tree` (they change on every in-place write)."""
    return tuple(a._version for a in tree_flatten(tree)[0] if isinstance(a, torch.Tensor))


def _summed_loss(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """sum_i loss(logits_i as a batch of one, target_i): what the reference differentiates per sample."""
    fn = loss_function(loss)
    if fn is F.cross_entropy:
        return lambda logits, targets: F.cross_entropy(logits, targets, reduction="sum")
    if fn is mse_sum or fn is huber_sum:
        return fn  # already the sum of per-sample losses
    per_sample = vmap(lambda lg, t: fn(lg.unsqueeze(0), t.unsqueeze(0)))
    return lambda logits, targets: per_sample(logits, targets).sum()


class GhostClipping:
    """Per-sample clipped gradient sums for `model` without per-sample gradients where avoidable."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_grad_norm: float,
        loss: str = "cross_entropy",
        micro_batch: int = 1024,
    ) -> None:
        check_privatizable(model)
        self.model = model
        self.loss = loss
        self._loss_sum = _summed_loss(loss)
        self.max_grad_norm = positive(max_grad_norm, "max_grad_norm")
        self.micro_batch = positive_int(micro_batch, "micro_batch")
        self._rules: list[Rule] = []
        self._trainable = trainable_parameters(model)
        # A module reused in several places is fine (its calls are combined); one
        # parameter owned by two different modules is not.
        owners: dict[int, tuple[int, str]] = {}
        for prefix, module in model.named_modules(remove_duplicate=False):
            for local, p in module.named_parameters(recurse=False):
                full = f"{prefix}.{local}" if prefix else local
                if id(p) in owners and owners[id(p)][0] != id(module):
                    raise GhostClippingError(
                        f"parameter {full} is shared with {owners[id(p)][1]}; the fast engine cannot clip tied "
                        "parameters (use engine='vmap')"
                    )
                owners.setdefault(id(p), (id(module), full))
        seen: set[int] = set()
        for prefix, module in model.named_modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            names = {
                local: (f"{prefix}.{local}" if prefix else local)
                for local, p in module.named_parameters(recurse=False)
                if p.requires_grad
            }
            if not names:
                continue
            if isinstance(module, nn.Embedding) and module.max_norm is not None:
                raise GhostClippingError(
                    f"layer {prefix or '<root>'} (Embedding) renormalises its weights in place from the "
                    "data it looks up (max_norm), an un-noised data-dependent update"
                )
            self._rules.append(rule_for(module, names))
        self._verified = False
        log.debug(
            "fast clipping over %d layers: %s",
            len(self._rules),
            ", ".join(f"{type(r).__name__}({type(r.module).__name__})" for r in self._rules),
        )

    # -- capture ---------------------------------------------------------------------

    @contextmanager
    def _capture(
        self, calls: dict[int, list[Call]], versions: dict[int, tuple[list[int | None], tuple[int, ...]]]
    ) -> Iterator[list[torch.autograd.graph.GradientEdge]]:
        """Forward hooks recording every call of a rule's module; yields the output edges.

        `versions` maps id(call) to (the edge index of each output leaf, the version
        counters of the call's tensor inputs).
        """
        edges: list[torch.autograd.graph.GradientEdge] = []
        handles = []

        def make_hook(index: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: object) -> None:
                leaves, _ = tree_flatten(output)
                meta: list[tuple[torch.Size, torch.dtype] | None] = []
                slots: list[int | None] = []
                for leaf in leaves:
                    if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
                        meta.append((leaf.shape, leaf.dtype))
                        slots.append(len(edges))
                        edges.append(get_gradient_edge(leaf))
                    else:
                        meta.append(None)
                        slots.append(None)
                call = Call(args=args, kwargs=kwargs, out_meta=meta)
                calls[index].append(call)
                versions[id(call)] = (slots, _versions((args, kwargs)))

            return hook

        try:
            for index, rule in enumerate(self._rules):
                calls[index] = []
                handles.append(rule.module.register_forward_hook(make_hook(index), with_kwargs=True))
            yield edges
        finally:
            for handle in handles:
                handle.remove()

    def _forward_backward(
        self, inputs: torch.Tensor, targets: torch.Tensor, extra: list[torch.Tensor] | None = None
    ) -> tuple[dict[int, list[Call]], list[torch.Tensor | None]]:
        """One forward, one backward to the recorded outputs (and to `extra`, for the check)."""
        calls: dict[int, list[Call]] = {}
        versions: dict[int, tuple[list[int | None], tuple[int, ...]]] = {}
        with torch.enable_grad(), self._capture(calls, versions) as edges:
            logits = self.model(inputs)
        for index in range(len(self._rules)):
            for call in calls[index]:
                if _versions((call.args, call.kwargs)) != versions[id(call)][1]:
                    # Checked before the backward, whose own check covers saved tensors only.
                    raise GhostClippingError(
                        f"the input of {type(self._rules[index].module).__name__} was modified in place after "
                        "the layer used it; the fast engine needs the values the layer saw"
                    )
        loss = self._loss_sum(logits, targets)
        wanted: list[Any] = [*edges, *(extra or [])]
        grads: list[torch.Tensor | None] = list(torch.autograd.grad(loss, wanted, allow_unused=True)) if wanted else []
        for index in range(len(self._rules)):
            for call in calls[index]:
                call.grads = [None if k is None else grads[k] for k in versions[id(call)][0]]
        return calls, grads[len(edges) :]

    def _pending(self, calls: dict[int, list[Call]], n: int) -> list[Pending]:
        pending = []
        # Layer inputs are activations that require grad: nothing after the backward
        # pass is differentiated, so no graph is recorded (torch.func.grad in the
        # fallback rule still differentiates inside its own transform).
        with torch.no_grad():
            for index, rule in enumerate(self._rules):
                if calls[index]:
                    pending.append(rule.prepare(calls[index], n))
        return pending

    # -- public ----------------------------------------------------------------------

    def per_sample_norms(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[n] norms of each sample's unclipped gradient over all trainable parameters."""
        n = check_batch(inputs, targets)
        if n == 0:
            return torch.zeros(0)
        calls, _ = self._forward_backward(inputs, targets)
        return self._norms(self._pending(calls, n), n)

    def _norms(self, pending: list[Pending], n: int) -> torch.Tensor:
        total = torch.zeros(n)
        for p in pending:
            for sq in p.sq_norms.values():
                total = total + sq
        return total.sqrt()

    def clipped_sum(self, inputs: torch.Tensor, targets: torch.Tensor) -> ClipResult:
        """sum_i min(1, C / (||g_i|| + 1e-6)) g_i for every trainable parameter (zeros when empty).

        `paths` reports each parameter's computation path (`ghost_layers.PATH_*`) in the
        last micro-batch.
        """
        n = check_batch(inputs, targets)
        sums = {name: torch.zeros_like(p, memory_format=torch.contiguous_format) for name, p in self._trainable.items()}
        norms: list[torch.Tensor] = []
        paths: dict[str, str] = {}
        clipped = 0
        x_all, y_all = inputs.detach(), targets.detach()
        if n >= 2 and not self._verified:
            # A batch of one cannot be mis-grouped; the check waits for two samples or more.
            self._verify(x_all[:_CHECK_SAMPLES], y_all[:_CHECK_SAMPLES])
        step = self.micro_batch
        for start in range(0, n, step):
            x, y = x_all[start : start + step], y_all[start : start + step]
            m = int(x.shape[0])
            calls, _ = self._forward_backward(x, y)
            pending = self._pending(calls, m)
            chunk_norms = self._norms(pending, m)
            factors = clip_factors(chunk_norms, self.max_grad_norm)
            clipped += int((factors < 1.0).sum())
            with torch.no_grad():
                for p in pending:
                    paths.update(p.paths)
                    for name, value in p.clipped_sum(factors).items():
                        # One micro-batch (the usual case): keep the product, skip a copy.
                        sums[name] = value if m == n else sums[name].add_(value)
            norms.append(chunk_norms)
        return ClipResult(
            sums=sums,
            batch_size=n,
            norms=torch.cat(norms) if norms else torch.zeros(0),
            clipped=clipped,
            paths=paths,
        )

    def _verify(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse the model unless, on a few samples, it matches the reference engine.

        Two checks: the unclipped per-sample sum equals autograd's batch gradient for
        every trainable parameter (catches a parameter used outside the module that
        owns it), and the per-sample norms equal the reference's (catches a layer that
        sees its samples along some dimension other than the first, where the rules'
        per-sample grouping would be wrong). Run in eval mode, so a fallback layer's
        per-sample re-run sees the same (no) dropout mask as the batch forward.
        """
        names = list(self._trainable)
        n = int(x.shape[0])
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            calls, param_grads = self._forward_backward(x, y, extra=[self._trainable[k] for k in names])
            with torch.no_grad():
                pending = self._pending(calls, n)
                ours = {name: torch.zeros_like(p) for name, p in self._trainable.items()}
                for p in pending:
                    for name, value in p.clipped_sum(torch.ones(n)).items():
                        ours[name] += value
                norms = self._norms(pending, n)
            # functional_call replaces the parameters of a module registered twice with
            # the tensors it is given and never restores them: run the reference on a copy then.
            every = len(list(self.model.named_modules(remove_duplicate=False)))
            shared = every != len(list(self.model.named_modules()))
            reference_model = copy.deepcopy(self.model) if shared else self.model
            reference = per_sample_norms(per_sample_gradients(reference_model, x, y, loss=self.loss))
        finally:
            for module, mode in modes:
                module.training = mode
        for name, expected_grad in zip(names, param_grads, strict=True):
            expected = torch.zeros_like(ours[name]) if expected_grad is None else expected_grad
            if not _close(ours[name], expected):
                raise GhostClippingError(
                    f"parameter {name} receives gradient outside the module that owns it (or through a layer "
                    "the fast engine mis-handles); use engine='vmap'"
                )
        if not _close(norms, reference):
            raise GhostClippingError(
                "per-sample norms differ from the reference engine's (a layer seeing its samples along a "
                "dimension other than the first?); use engine='vmap'"
            )
        self._verified = True


def _close(ours: torch.Tensor, expected: torch.Tensor) -> bool:
    error = float(torch.linalg.vector_norm(ours - expected))
    return error <= _CHECK_RTOL * float(torch.linalg.vector_norm(expected)) + 1e-6
