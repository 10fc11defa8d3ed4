"""DP-SGD (Abadi et al. 2016) with per-sample clipping and CSPRNG Gaussian noise.

One step on a Poisson-sampled batch:

1. per-sample gradients g_i of the loss, via torch.func (functional_call + vmap(grad)),
   in micro-batches so memory stays bounded however large the Poisson batch is;
2. each g_i scaled by min(1, C / (||g_i|| + 1e-6)), the L2 norm taken over all
   trainable parameters together, so every clipped gradient has norm at most C;
3. the clipped gradients summed, N(0, sigma^2 C^2) noise added to every coordinate
   (`Csprng.normal`, floating-point-attack guarded), and the result divided by the
   *expected* batch size B = N q — not the realised batch size, which is data-dependent
   and would leak; an empty batch therefore yields noise / B. The noise does not depend
   on the data, so when a core is spare it is drawn one step ahead on a worker thread
   (`enclave.training.noise.StepNoise`), off the step's critical path;
4. that written into `p.grad` and `optimizer.step()` called.

Two engines compute steps 1-3 and give the same result to float32 rounding:
`engine="fast"` (the default; `enclave.training.fastclip`: ghost norms and one weighted
product per layer from a single forward and backward, no per-sample gradients for
Linear/Conv/Embedding where avoidable) and `engine="vmap"` (the reference above, which
also handles parameters shared between layers). Noise is drawn identically by both.

Sensitivity note: the clipped norm is C * n / (n + 1e-6) <= C in exact arithmetic;
float32 rounding of the scaled sum can exceed that by a relative ~1e-7, far inside the
accountant's pessimistic discretisation.

Dropout masks under `vmap(randomness="different")` come from torch's own generator.
That is acceptable: the masks are independent of the data, and the Gaussian mechanism's
guarantee holds for every fixed mask because each clipped g_i still has norm <= C. Only
the sampling and the noise need the CSPRNG.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from enclave.errors import ConfigError, DatasetError
from enclave.training.noise import StepNoise, spare_core
from enclave.hazmat.csprng import Csprng

__all__ = [
    "CLIP_EPSILON",
    "ENGINES",
    "LOSSES",
    "BatchMismatch",
    "DpSgd",
    "DpSgdConfigError",
    "StepStats",
    "UnknownLoss",
    "UnsupportedLayer",
    "check_privatizable",
    "clip_per_sample",
    "per_sample_gradients",
    "per_sample_norms",
]

log = logging.getLogger(__name__)

#: Per-sample clipping engines DpSgd accepts.
ENGINES = ("fast", "vmap")

#: Added to each per-sample norm before dividing, so a zero gradient needs no special case.
CLIP_EPSILON = 1e-6

#: Per-sample losses by name; each maps (logits [1, K], target [1]) to a scalar.
LOSSES: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = MappingProxyType(
    {"cross_entropy": F.cross_entropy}
)


class UnsupportedLayer(ConfigError):
    """The model contains a layer DP-SGD cannot privatise."""


class UnknownLoss(ConfigError):
    """The job named a loss that is not registered."""


class DpSgdConfigError(ConfigError):
    """DP-SGD was configured with an impossible clip norm, noise, batch size or optimizer."""


class BatchMismatch(DatasetError):
    """Inputs and targets of a step do not describe the same records."""


@dataclass(frozen=True)
class StepStats:
    """What one step did.

    `clipped_fraction` (share of the batch whose gradient was scaled down) and
    `batch_size` are functions of the private data and are not covered by the DP
    guarantee: they stay inside the enclave (diagnostics, logs kept in the enclave)
    and must never be released in results, metrics or certificates.
    """

    batch_size: int
    clipped_fraction: float


def check_privatizable(model: nn.Module) -> None:
    """Raise UnsupportedLayer for the first layer whose output or state mixes samples.

    BatchNorm (any variant, SyncBatchNorm included) normalises with batch statistics;
    any layer keeping running statistics (InstanceNorm with track_running_stats) or
    holding buffers at all would carry data-derived state that DP-SGD does not noise
    — only parameters are privatised — and that state is released with the model.
    """
    for name, module in model.named_modules():
        where = f"layer {name or '<root>'} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise UnsupportedLayer(f"{where} mixes samples through batch statistics; use GroupNorm or LayerNorm")
        if getattr(module, "track_running_stats", False):
            raise UnsupportedLayer(f"{where} tracks running statistics of the data, which DP-SGD does not noise")
        buffers = [b for b, _ in module.named_buffers(recurse=False)]
        if buffers:
            raise UnsupportedLayer(f"{where} holds buffers {buffers}; only parameters are privatised")


def _loss_fn(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    fn = LOSSES.get(loss) if isinstance(loss, str) else None
    if fn is None:
        raise UnknownLoss(f"unknown loss {loss!r}; registered losses: {', '.join(sorted(LOSSES))}")
    return fn


def _check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> int:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise BatchMismatch("inputs and targets must be tensors")
    if inputs.dim() < 1 or targets.dim() != 1 or inputs.shape[0] != targets.shape[0]:
        raise BatchMismatch(
            f"inputs {list(inputs.shape)} and targets {list(targets.shape)} do not describe the same records"
        )
    return int(inputs.shape[0])


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _micro_batches(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    micro_batch: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Per-sample gradients, micro_batch samples at a time, as {name: [m, *param.shape]}."""
    loss_fn = _loss_fn(loss)
    params = {name: p.detach() for name, p in _trainable(model).items()}
    # Frozen parameters and buffers are passed along but not differentiated.
    fixed = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    fixed.update({name: b.detach() for name, b in model.named_buffers()})

    def sample_loss(
        p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        # Inside vmap every sample runs alone as a batch of one: no layer can mix samples.
        logits = functional_call(model, (p, fixed), (x.unsqueeze(0),))
        return loss_fn(logits, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    x_all, y_all = inputs.detach(), targets.detach()
    for start in range(0, x_all.shape[0], micro_batch):
        yield per_sample(params, x_all[start : start + micro_batch], y_all[start : start + micro_batch])


def per_sample_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: str = "cross_entropy",
    micro_batch: int = 1024,
) -> dict[str, torch.Tensor]:
    """Unclipped per-sample gradients {name: [n, *param.shape]} of every trainable parameter.

    Uses the model in whatever mode it is in (eval for deterministic comparisons).
    """
    n = _check_batch(inputs, targets)
    trainable = _trainable(model)
    if n == 0:
        return {name: p.new_zeros((0, *p.shape)) for name, p in trainable.items()}
    chunks = list(_micro_batches(model, inputs, targets, loss, micro_batch))
    return {name: torch.cat([c[name] for c in chunks]) for name in trainable}


def per_sample_norms(grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[n] L2 norms of each sample's gradient over all parameters together."""
    per_param = [torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads.values()]
    return torch.linalg.vector_norm(torch.stack(per_param, dim=1), dim=1)


def _clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    return (max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)


def clip_per_sample(
    grads: Mapping[str, torch.Tensor], max_grad_norm: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each sample's gradient scaled by min(1, C / (norm + 1e-6)); returns (clipped, factors)."""
    factors = _clip_factors(per_sample_norms(grads), max_grad_norm)
    clipped = {
        name: g * factors.reshape(-1, *([1] * (g.dim() - 1))).to(g.dtype) for name, g in grads.items()
    }
    return clipped, factors


def _positive(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise DpSgdConfigError(f"{what} must be a finite positive number, got {value!r}")
    return number


class DpSgd:
    """Drives `optimizer` with clipped, noised, B-normalised gradients; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        rng: Csprng,
        loss: str = "cross_entropy",
        micro_batch: int = 1024,
        engine: str = "fast",
        noise_ahead: bool | None = None,
    ) -> None:
        check_privatizable(model)
        if engine not in ENGINES:
            raise DpSgdConfigError(f"unknown DP-SGD engine {engine!r}; engines: {', '.join(ENGINES)}")
        self.max_grad_norm = _positive(max_grad_norm, "max_grad_norm")
        # sigma = 0 would be plain SGD with an infinite epsilon: refused, not warned about.
        self.noise_multiplier = _positive(noise_multiplier, "noise_multiplier")
        self.expected_batch_size = _positive(expected_batch_size, "expected_batch_size")
        if not isinstance(micro_batch, int) or isinstance(micro_batch, bool) or micro_batch < 1:
            raise DpSgdConfigError(f"micro_batch must be a positive integer, got {micro_batch!r}")
        if not isinstance(rng, Csprng):
            raise DpSgdConfigError("DP-SGD noise must come from the enclave Csprng")
        _loss_fn(loss)
        trainable = _trainable(model)
        if not trainable:
            raise DpSgdConfigError("the model has no trainable parameters")
        known = {id(p) for p in trainable.values()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in known:
                    raise DpSgdConfigError("the optimizer updates a tensor that is not a trainable model parameter")
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.micro_batch = micro_batch
        self.engine = engine
        self._noise = StepNoise(
            rng,
            [(p.shape, p.dtype) for p in trainable.values()],
            self.noise_std,
            ahead=spare_core() if noise_ahead is None else noise_ahead,
        )
        self._fast = None
        if engine == "fast":
            # Imported here: fastclip builds on this module's definitions.
            from enclave.training.fastclip import FastClip

            self._fast = FastClip(model, loss)
        # Configuration only (public in the job spec); per-step stats are never logged here.
        log.debug(
            "DP-SGD (%s engine): C=%g sigma=%g B=%g micro_batch=%d over %d parameter tensors",
            engine, self.max_grad_norm, self.noise_multiplier, self.expected_batch_size, micro_batch, len(trainable),
        )

    @property
    def noise_std(self) -> float:
        """sigma * C: the standard deviation of the noise added to each coordinate of the sum."""
        return self.noise_multiplier * self.max_grad_norm

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepStats:
        """One DP-SGD step on a (possibly empty) Poisson batch."""
        n = _check_batch(inputs, targets)
        self.model.train()
        trainable = _trainable(self.model)
        sums = {name: torch.zeros_like(p) for name, p in trainable.items()}
        clipped = 0
        if n and self._fast is not None:
            result = self._fast.clipped_sum(inputs, targets, self.max_grad_norm, micro_batch=self.micro_batch)
            clipped = result.clipped
            for name, total in result.sums.items():
                sums[name].add_(total)
        elif n:
            for grads in _micro_batches(self.model, inputs, targets, self.loss, self.micro_batch):
                factors = _clip_factors(per_sample_norms(grads), self.max_grad_norm)
                clipped += int((factors < 1.0).sum())
                for name, g in grads.items():
                    # sum_i factor_i * g_i without materialising the clipped copies.
                    sums[name].add_(torch.tensordot(factors.to(g.dtype), g, dims=1))
        # Noise is drawn for every step and every parameter in named_parameters order,
        # whatever the batch held, so the CSPRNG stream position never depends on data.
        drawn = self._noise.take()
        if len(drawn) != len(trainable):
            raise DpSgdConfigError("the model's trainable parameters changed after DP-SGD was set up")
        for (name, p), noise in zip(trainable.items(), drawn):
            if noise.shape != p.shape or noise.dtype != p.dtype:
                raise DpSgdConfigError(f"parameter {name} changed shape or dtype after DP-SGD was set up")
            p.grad = sums[name].add_(noise.to(p.device)).div_(self.expected_batch_size)
        self.optimizer.step()
        return StepStats(batch_size=n, clipped_fraction=clipped / n if n else 0.0)

    def close(self) -> None:
        """Stop drawing noise ahead (waits for the draw in flight); the engine takes no more steps."""
        self._noise.close()
