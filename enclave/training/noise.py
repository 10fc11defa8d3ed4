"""The per-step Gaussian noise of DP-SGD, drawn one step ahead on a worker thread.

The noise of a step does not depend on the data, so there is no reason to draw it
after the gradients: `StepNoise` draws step t+1's noise (every parameter, in order,
from the noise Csprng) on one worker thread while step t's forward and backward run,
and hands it over at the end of the step. The heavy parts of the draw (AES-CTR in
OpenSSL, torch's vectorised float64 kernels) release the GIL, so on a machine with a
spare core the draw costs the step almost nothing.

Drawing ahead only pays when a core is free for it. With torch's thread pool already
using every core (the default), a third busy thread competes with the pool's threads
for the cores and the step gets slower than drawing in line (bench/RESULTS.md), so
`spare_core()` is the default test DpSgd uses.

The worker limits its own OpenMP and MKL thread counts to one (`one_thread`; both are
per-thread settings, the main thread's pool is untouched). Left at torch's defaults, the
worker's first large element-wise or transcendental op starts a second OpenMP team for
it (MKL's vector math starts its own as well), and once libgomp manages more threads
than there are CPUs it stops spinning at barriers and sleeps on a futex instead — for
every team, the main one included, which slows even a non-private step while the
worker merely exists (bench/RESULTS.md).

A step's noise is one `Csprng.normal` call over all parameters laid end to end (one
call per run of parameters of the same dtype), split into views of each parameter's
shape. One call instead of one per parameter pays the sampler's fixed cost per call
once per step (bench/RESULTS.md).

What drawing ahead does not change: the stream. Exactly one draw per step, in parameter
order, all on the one worker, so the outputs are the same function of the seed as a
synchronous draw and the stream position after k steps is k draws (k + 1 when drawing
ahead) whatever the data — `close()` waits for the draw in flight, so it can be
checked. The drawn-ahead noise of the last step is simply never used; it never leaves
the process.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby

import torch

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng
from enclave.native.threads import one_thread

__all__ = ["NoiseClosed", "StepNoise", "spare_core"]

log = logging.getLogger(__name__)

def spare_core() -> bool:
    """Whether this process may run on more cores than torch's intra-op pool uses."""
    return len(os.sched_getaffinity(0)) > torch.get_num_threads()


class NoiseClosed(ConfigError):
    """Noise was asked of a StepNoise after close()."""


class StepNoise:
    """One step's noise per `take()`: N(0, std^2) for each (shape, dtype), guarded, from `rng`.

    Each run of consecutive specs with one dtype is a single `rng.normal` over their
    values laid end to end, split into views of the specs' shapes.
    """

    def __init__(
        self,
        rng: Csprng,
        specs: Sequence[tuple[torch.Size, torch.dtype]],
        std: float,
        *,
        ahead: bool = True,
    ) -> None:
        self._rng = rng
        # Consecutive specs of one dtype, each run drawn as one flat vector: (dtype, shapes, sizes).
        self._runs: list[tuple[torch.dtype, list[torch.Size], list[int]]] = []
        for dtype, run in groupby(specs, key=lambda spec: spec[1]):
            shapes = [torch.Size(shape) for shape, _ in run]
            self._runs.append((dtype, shapes, [s.numel() for s in shapes]))
        self._std = float(std)
        self._ahead = ahead
        self._pool: ThreadPoolExecutor | None = None
        self._next: Future[list[torch.Tensor]] | None = None
        self._closed = False

    def _draw(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for dtype, shapes, sizes in self._runs:
            flat = self._rng.normal(sum(sizes), std=self._std, dtype=dtype)
            out.extend(part.view(shape) for part, shape in zip(torch.split(flat, sizes), shapes, strict=True))
        return out

    def take(self) -> list[torch.Tensor]:
        """This step's noise, one tensor per spec; starts drawing the next step's."""
        if self._closed:
            raise NoiseClosed("the step noise source is closed")
        if not self._ahead:
            return self._draw()
        # The first step draws in line: a draw made at construction would be wasted
        # by callers that never step.
        noise = self._draw() if self._next is None else self._next.result()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dp-noise", initializer=one_thread)
        self._next = self._pool.submit(self._draw)
        return noise

    def close(self) -> None:
        """Wait for the draw in flight and stop the worker (idempotent)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._next = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
