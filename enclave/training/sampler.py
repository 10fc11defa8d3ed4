"""Poisson sampling of training batches, driven by the enclave CSPRNG.

Each step includes every record independently with probability q, so batch sizes are
Binomial(N, q) and an empty batch is a legal outcome. There is deliberately no cap on
the physical batch size: the privacy accountant charges for exactly Poisson(q)
subsampling, and a cap would turn it into truncated Poisson sampling, which the
accountant does not model. Memory is bounded elsewhere, by micro-batching the
per-sample gradient computation (`DpSgd(micro_batch=...)`).

Inclusion uses `Csprng.bernoulli`, whose realised rate q' satisfies q - 2^-53 < q' <= q:
never above the rate the accountant charges for.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng

__all__ = ["PoissonSampler", "SamplerConfigError"]

# Records are drawn in slices of this many so a huge dataset never needs one 8-byte
# word per record in memory at once; slicing does not change the output for a seed,
# because the keystream is consumed in record order either way.
_SLICE = 1 << 20


class SamplerConfigError(ConfigError):
    """The sampler was given an impossible dataset size, rate or step count."""


class PoissonSampler:
    """Batches of record indices, each record included independently with probability q."""

    def __init__(
        self,
        num_records: int,
        sampling_rate: float,
        rng: Csprng,
        *,
        steps: int | None = None,
    ) -> None:
        if not isinstance(num_records, int) or isinstance(num_records, bool) or num_records < 1:
            raise SamplerConfigError(f"num_records must be a positive integer, got {num_records!r}")
        rate = float(sampling_rate)
        if not (0.0 < rate <= 1.0):  # also rejects NaN
            raise SamplerConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise SamplerConfigError(f"steps must be a non-negative integer, got {steps!r}")
        if not isinstance(rng, Csprng):
            raise SamplerConfigError("the sampler needs the enclave Csprng as its randomness")
        self._n = num_records
        self._q = rate
        self._rng = rng
        self._steps = steps

    @property
    def num_records(self) -> int:
        return self._n

    @property
    def sampling_rate(self) -> float:
        return self._q

    @property
    def steps(self) -> int | None:
        return self._steps

    @property
    def expected_batch_size(self) -> float:
        """N * q: the denominator DP-SGD divides the noisy gradient sum by."""
        return self._n * self._q

    def sample(self) -> np.ndarray:
        """One batch: the sorted int64 indices of the records drawn this step (maybe none)."""
        parts: list[np.ndarray] = []
        for start in range(0, self._n, _SLICE):
            count = min(_SLICE, self._n - start)
            mask = self._rng.bernoulli(count, self._q)
            parts.append(np.flatnonzero(mask).astype(np.int64) + start)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def __len__(self) -> int:
        if self._steps is None:
            raise TypeError("this PoissonSampler was created without a step count")
        return self._steps

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._steps is None:
            raise SamplerConfigError("iterate a PoissonSampler only when it was given steps=")
        for _ in range(self._steps):
            yield self.sample()

    def __repr__(self) -> str:
        return f"PoissonSampler(num_records={self._n}, sampling_rate={self._q!r}, steps={self._steps})"
