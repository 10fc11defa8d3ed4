"""DP-SGD (Abadi et al. 2016): a clipping engine, CSPRNG Gaussian noise and an optimizer.

One step on a Poisson-sampled batch:

1. the clipping engine (`enclave.training.clipping`) returns the sum over the batch of
   the per-sample gradients, each scaled to norm at most C;
2. N(0, sigma^2 C^2) noise is added to every coordinate of that sum (`Csprng.normal`,
   floating-point-attack guarded), and the result divided by the *expected* batch size
   B = N q — not the realised batch size, which is data-dependent and would leak; an
   empty batch therefore yields noise / B. The noise does not depend on the data, so
   when a core is spare it is drawn one step ahead on a worker thread
   (`enclave.training.noise.StepNoise`), off the step's critical path;
3. that is written into `p.grad` and `optimizer.step()` called.

Dropout layers are `CsprngDropout`, reseeded before every step from a fork of the
noise Csprng (`reseed_dropout`); a layer that would draw from torch's global generator
(nn.Dropout and its kin) is refused.

Engines ("fast", the default, and "vmap", the reference) give the same clipped sum to
float32 rounding; the noise is drawn identically whichever computes it.

Audit-only hooks (`DpSgd.audit_hooks`, used by the host-side empirical privacy audit in
`parent.audit` and nothing else): extra clipped gradients added to a step's sum (white-box
canaries), and a switch that leaves the drawn noise out (the audit's control). They are
set by a method rather than the constructor, whose arguments are all the enclave's
trainer passes, so no job spec value can reach them; the enclave never calls the method
(tests/enclave/training/test_dpsgd_audit_hooks.py checks both).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.registry import DEFAULT_ENGINE, make_engine
from enclave.training.clipping.rules import DpSgdConfigError, positive, trainable_parameters
from enclave.training.models import reseed_dropout
from enclave.training.noise import StepNoise, spare_core

__all__ = ["DpSgd", "ExtraClipped", "StepStats"]

#: Audit-only: the sum of this step's extra clipped gradients by parameter name, or None for none.
ExtraClipped = Callable[[], Mapping[str, torch.Tensor] | None]

log = logging.getLogger(__name__)


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


class DpSgd:
    """Drives `optimizer` with clipped, noised, B-normalised gradients; see the module docstring."""

    # The audit-only hooks' production values; only `audit_hooks` changes them.
    _extra_clipped: ExtraClipped | None = None
    _add_noise: bool = True

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
        engine: str = DEFAULT_ENGINE,
        noise_ahead: bool | None = None,
    ) -> None:
        # The engine refuses the model, loss, clip norm or micro-batch size it cannot use.
        self.engine = make_engine(engine, model, max_grad_norm=max_grad_norm, loss=loss, micro_batch=micro_batch)
        self.max_grad_norm = self.engine.max_grad_norm
        # sigma = 0 would be plain SGD with an infinite epsilon: refused, not warned about.
        self.noise_multiplier = positive(noise_multiplier, "noise_multiplier")
        self.expected_batch_size = positive(expected_batch_size, "expected_batch_size")
        if not isinstance(rng, Csprng):
            raise DpSgdConfigError("DP-SGD noise must come from the enclave Csprng")
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                raise DpSgdConfigError(
                    f"layer {name or '<root>'} ({type(module).__name__}) draws from torch's global generator; "
                    "use CsprngDropout"
                )
        # Dropout masks: a stream of their own, so the noise stream is the same with or without dropout.
        self._dropout_rng = rng.fork(b"dropout")
        trainable = trainable_parameters(model)
        if not trainable:
            raise DpSgdConfigError("the model has no trainable parameters")
        known = {id(p) for p in trainable.values()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in known:
                    raise DpSgdConfigError("the optimizer updates a tensor that is not a trainable model parameter")
        self.model = model
        self.optimizer = optimizer
        self._noise = StepNoise(
            rng,
            [(p.shape, p.dtype) for p in trainable.values()],
            self.noise_std,
            ahead=spare_core() if noise_ahead is None else noise_ahead,
        )
        # Configuration only (public in the job spec); per-step stats are never logged here.
        log.debug(
            "DP-SGD (%s engine): C=%g sigma=%g B=%g micro_batch=%d over %d parameter tensors",
            engine, self.max_grad_norm, self.noise_multiplier, self.expected_batch_size, micro_batch, len(trainable),
        )

    @property
    def noise_std(self) -> float:
        """sigma * C: the standard deviation of the noise added to each coordinate of the sum."""
        return self.noise_multiplier * self.max_grad_norm

    def audit_hooks(self, *, extra_clipped: ExtraClipped | None = None, add_noise: bool = True) -> None:
        """AUDIT ONLY, never called in the enclave: inject canary gradients, or train without noise.

        `extra_clipped` is called once per step and its tensors (each the sum of per-sample
        gradients already clipped to norm C: canaries are treated exactly like records) are
        added to the clipped sum before the noise. `add_noise=False` still draws the noise,
        so the CSPRNG stream is that of a noised run, but leaves it out: plain clipped SGD,
        whose epsilon is infinite, as the audit's control that must be caught.
        """
        self._extra_clipped = extra_clipped
        self._add_noise = bool(add_noise)
        log.info("DP-SGD audit hooks set: canaries %s, noise %s",
                 "on" if extra_clipped is not None else "off", "on" if self._add_noise else "OFF")

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepStats:
        """One DP-SGD step on a (possibly empty) Poisson batch."""
        self.model.train()
        # Fresh masks for this step, from the Csprng: never torch's global generator.
        reseed_dropout(self.model, self._dropout_rng)
        result = self.engine.clipped_sum(inputs, targets)
        trainable = trainable_parameters(self.model)
        # Noise is drawn for every step and every parameter in named_parameters order,
        # whatever the batch held, so the CSPRNG stream position never depends on data.
        drawn = self._noise.take()
        extra = self._extra_clipped() if self._extra_clipped is not None else None
        if len(drawn) != len(trainable):
            raise DpSgdConfigError("the model's trainable parameters changed after DP-SGD was set up")
        if extra is not None and not extra.keys() <= trainable.keys():
            # A canary part that no parameter takes would silently shrink the canary below norm C.
            raise DpSgdConfigError("audit canaries name a tensor that is not a trainable parameter")
        for (name, p), noise in zip(trainable.items(), drawn, strict=True):
            total = result.sums.get(name)
            if total is None or total.shape != p.shape or noise.shape != p.shape or noise.dtype != p.dtype:
                raise DpSgdConfigError(f"parameter {name} changed shape or dtype after DP-SGD was set up")
            if extra is not None and name in extra:
                total.add_(extra[name].to(device=total.device, dtype=total.dtype))
            if self._add_noise:
                total.add_(noise.to(p.device))
            p.grad = total.div_(self.expected_batch_size)
        self.optimizer.step()
        return StepStats(batch_size=result.batch_size, clipped_fraction=result.clipped_fraction)

    def close(self) -> None:
        """Stop drawing noise ahead (waits for the draw in flight); the engine takes no more steps."""
        self._noise.close()
