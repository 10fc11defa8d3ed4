"""The one source of randomness for privacy: a keyed CSPRNG and the samplers built on it.

`Csprng(seed)` is AES-256 in counter mode. The 32-byte seed comes from NSM GetRandom
inside the enclave (`os.urandom` in local mode) and is only ever used as HKDF input
keying material:

* stream key = HKDF-SHA256(seed, info="hermetic/csprng/v1/stream"), and the output
  is the AES-256-CTR keystream under that key with the 128-bit counter block starting
  at zero. Every method consumes the stream in call order, so all outputs are a
  deterministic function of (seed, sequence of calls) — tests rely on it, production
  relies on the seed being fresh and secret.
* `fork(label)` gives a child whose seed is HKDF-SHA256(seed, info="hermetic/csprng/v1/
  fork" || 0x00 || label): independent streams for the sampler and the noise, without
  one consumer's draw count shifting the other's output.

The seed is never serialised or logged: `repr` omits it, and pickling or copying
raises (a copy would replay the same noise, which voids the privacy guarantee).

Gaussian noise (`normal`) is guarded against floating-point attacks on the sampler
(Mironov 2012 for the Laplace mechanism; Jin et al. 2022, "Are we there yet? Timing and
floating-point attacks on differential privacy systems", for Gaussians): a single
Box–Muller output computed in floating point has a sparse, irregular set of
reachable values from which an observer of a noisy release can learn about the
un-noised value. Following Holohan & Braghin 2021 ("Secure random sampling in
differential privacy", the mitigation Opacus' `secure_mode` uses), each output is the
sum of `GUARD_TERMS` independent Gaussians of variance std^2/GUARD_TERMS, generated in
float64 from 53-bit CSPRNG uniforms, and only then cast to the requested dtype.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.errors import ConfigError, HermeticError

__all__ = [
    "GUARD_TERMS",
    "SEED_BYTES",
    "Csprng",
    "CsprngNotSerialisable",
    "RngArgumentError",
    "SeedError",
    "bernoulli_threshold",
    "seed_from",
]

log = logging.getLogger(__name__)

#: Length of a Csprng seed (an AES-256 / HKDF-SHA256 key's worth of entropy).
SEED_BYTES = 32

#: Number of independent Gaussians summed per output (Holohan & Braghin 2021). Four is
#: what Opacus' secure_mode uses; it also makes the per-term scale std/2, a power-of-two
#: factor that is exact in binary floating point and so adds no rounding of its own.
#: Each of the four terms in one output comes from a distinct Box–Muller uniform pair
#: (their footnote: terms must not share uniforms).
GUARD_TERMS = 4

_MANTISSA_BITS = 53
_TWO_53 = 1 << _MANTISSA_BITS
_STREAM_INFO = b"hermetic/csprng/v1/stream"
_FORK_INFO = b"hermetic/csprng/v1/fork\x00"
# The keystream is produced by encrypting zeros in chunks of this size, which keeps
# the scratch input small and cache-friendly without changing the stream.
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
# normal() lays its outputs out in blocks of at most 2 * _NORMAL_BLOCK, each drawn from
# its own run of the stream (see `_guarded_blocks`); the block size is therefore part of
# how the stream maps to outputs and is fixed. How many consecutive blocks are computed
# together is not: _NORMAL_GROUP full blocks go through each torch operation at once,
# which saves per-operation dispatch and, above ATen's parallel grain (32768 elements),
# lets the element-wise arithmetic use the thread pool too. The outputs are the same
# for any group size; 8 is the fastest measured that keeps the float64 scratch near
# 10 MB (bench/RESULTS.md).
_NORMAL_BLOCK = 8000
_NORMAL_GROUP = 8


class SeedError(ConfigError):
    """A CSPRNG seed has the wrong type or length, or is obviously not random."""


class RngArgumentError(ConfigError):
    """A CSPRNG method was called with an invalid argument."""


class CsprngNotSerialisable(HermeticError, TypeError):
    """Someone tried to pickle or copy a Csprng (its key must never leave the enclave)."""


def _hkdf(seed: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(seed)


def bernoulli_threshold(p: float) -> int:
    """floor(p * 2^53): a 53-bit uniform integer below it has probability in (p - 2^-53, p].

    `p * 2^53` is exact in float64 (scaling by a power of two), so the floor is exact
    and the realised probability never exceeds p — for Poisson sampling that means the
    rate actually used is at most the rate the accountant charges for.
    """
    value = float(p)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise RngArgumentError(f"probability must be in [0, 1], got {p!r}")
    return math.floor(value * _TWO_53)


def _shape_tuple(shape: int | Sequence[int] | torch.Size) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise RngArgumentError(f"shape must be non-negative integers, got {shape!r}")
    return tuple(int(d) for d in dims)


def _count(n: int, what: str) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise RngArgumentError(f"{what} must be a non-negative integer, got {n!r}")
    return int(n)


class Csprng:
    """AES-256-CTR keystream generator; see the module docstring for the construction."""

    __slots__ = ("_seed", "_encryptor", "_lock", "_drawn", "_forks")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, (bytes, bytearray, memoryview)):
            raise SeedError(f"seed must be bytes, got {type(seed).__name__}")
        material = bytes(seed)
        if len(material) != SEED_BYTES:
            raise SeedError(f"seed must be {SEED_BYTES} bytes, got {len(material)}")
        self._seed = material
        key = _hkdf(material, _STREAM_INFO)
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._lock = threading.Lock()
        self._drawn = 0
        self._forks: set[bytes] = set()

    # -- never leave the process ---------------------------------------------------------

    def __repr__(self) -> str:
        return f"Csprng(<seed hidden>, drawn={self._drawn} bytes)"

    def _refuse(self, *_: object) -> NoReturn:
        raise CsprngNotSerialisable("a Csprng cannot be pickled or copied: its key never leaves the enclave")

    __getstate__ = _refuse
    __reduce__ = _refuse
    __reduce_ex__ = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse

    # -- raw stream ----------------------------------------------------------------------

    @property
    def bytes_drawn(self) -> int:
        """How many keystream bytes have been consumed (not secret; useful for tests)."""
        return self._drawn

    def _keystream_into(self, out: bytearray | memoryview, n: int) -> None:
        # update_into wants room for a block's worth of slack beyond the input length,
        # so `out` must be at least n + 15 bytes long.
        view = memoryview(out)
        zeros = memoryview(_ZEROS)
        with self._lock:
            offset = 0
            while offset < n:
                m = min(_CHUNK, n - offset)
                self._encryptor.update_into(zeros[:m], view[offset : offset + m + 15])
                offset += m
            self._drawn += n

    def random_bytes(self, n: int) -> bytes:
        """The next n bytes of the keystream."""
        n = _count(n, "n")
        buf = bytearray(n + 16)
        self._keystream_into(buf, n)
        return bytes(buf[:n])

    def _bits53(self, n: int) -> np.ndarray:
        """n independent uniform integers in [0, 2^53) as uint64 (8 keystream bytes each)."""
        # Two spare words give update_into the block of slack it asks for; np.empty
        # avoids zero-filling memory the keystream overwrites anyway.
        words = np.empty(n + 2, dtype="<u8")
        self._keystream_into(words.data.cast("B"), 8 * n)
        bits = words[:n]
        bits >>= np.uint64(64 - _MANTISSA_BITS)
        return bits

    # -- distributions -------------------------------------------------------------------

    def uniform(self, n: int) -> np.ndarray:
        """n float64 values k * 2^-53, k uniform in [0, 2^53): uniform on [0, 1), 53 random bits each."""
        n = _count(n, "n")
        values = self._bits53(n).astype(np.float64)
        values *= 1.0 / _TWO_53
        return values

    def bernoulli(self, n: int, p: float) -> np.ndarray:
        """n independent booleans, each True with probability p' where p - 2^-53 < p' <= p.

        Exact integer comparison of a 53-bit uniform against floor(p * 2^53) (see
        `bernoulli_threshold`): no floating-point rounding inside the comparison, p=0
        never and p=1 always gives True, and the bias is below 2^-53, always downwards.
        """
        n = _count(n, "n")
        threshold = bernoulli_threshold(p)
        return self._bits53(n) < np.uint64(threshold)

    def normal(
        self,
        shape: int | Sequence[int] | torch.Size,
        std: float,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Samples of N(0, std^2), floating-point-attack guarded, as a CPU tensor of dtype.

        Each output is the sum of GUARD_TERMS Box–Muller Gaussians of std std/sqrt(GUARD_TERMS),
        computed in float64 from 53-bit uniforms and cast at the end. Box–Muller on 53-bit
        uniforms bounds each term's radius by sqrt(2 * 53 * ln 2) ≈ 8.57, a tail cut
        whose mass is 2^-53 per term — far below any delta the accountant is asked for.
        """
        dims = _shape_tuple(shape)
        scale = float(std)
        if not math.isfinite(scale) or scale < 0.0:
            raise RngArgumentError(f"std must be a finite non-negative number, got {std!r}")
        if not dtype.is_floating_point:
            raise RngArgumentError(f"normal() needs a floating dtype, got {dtype}")
        size = math.prod(dims)
        out = torch.empty(size, dtype=dtype)
        factor = scale / math.sqrt(GUARD_TERMS)
        per_block = 2 * _NORMAL_BLOCK
        full = size // per_block
        # Full blocks in groups, then the short last block; every product is taken in
        # float64 and rounded once, on the write, to dtype.
        for first in range(0, full, _NORMAL_GROUP):
            blocks = min(_NORMAL_GROUP, full - first)
            start = first * per_block
            torch.mul(self._guarded_blocks(blocks, per_block), factor, out=out[start : start + blocks * per_block])
        if full * per_block < size:
            torch.mul(self._guarded_blocks(1, size - full * per_block), factor, out=out[full * per_block :])
        return out.reshape(dims)

    def _guarded_blocks(self, blocks: int, count: int) -> torch.Tensor:
        """`blocks` consecutive blocks of `count` float64 outputs each, laid end to end.

        Each output is a sum of GUARD_TERMS independent N(0, 1) (variance GUARD_TERMS).
        """
        half = (count + 1) // 2
        # One Box–Muller pair yields a cos and a sin output. Within a block the pairs
        # are laid out as [GUARD_TERMS, half]: output j sums the cos of the GUARD_TERMS
        # pairs in column j, output half + j the sin of the same pairs, so no sum
        # contains two values derived from the same uniforms. Block b takes the b-th
        # run of 2 * GUARD_TERMS * half uniforms, so computing blocks together leaves
        # the mapping unchanged. The uniforms are k * 2^-53 for the 53-bit integers k
        # of `_bits53` (the same values `uniform` returns), converted in torch's
        # vectorised kernels rather than numpy's.
        k = torch.from_numpy(self._bits53(blocks * 2 * GUARD_TERMS * half).view(np.int64))
        k = k.view(blocks, 2, GUARD_TERMS, half)
        # 1 - u = (2^53 - k) * 2^-53 is exact and lies in (0, 1], so the log is finite.
        radius = torch.sub(_TWO_53, k[:, 0]).to(torch.float64).mul_(1.0 / _TWO_53).log_().mul_(-2.0).sqrt_()
        angle = k[:, 1].to(torch.float64).mul_(2.0 * math.pi / _TWO_53)
        out = torch.empty(blocks, 2, half, dtype=torch.float64)
        torch.sum(torch.cos(angle).mul_(radius), dim=1, out=out[:, 0])
        torch.sum(angle.sin_().mul_(radius), dim=1, out=out[:, 1])
        return out.view(blocks, 2 * half)[:, :count].reshape(-1)

    # -- derivation ----------------------------------------------------------------------

    def fork(self, label: bytes) -> Csprng:
        """An independent Csprng derived by HKDF from this one's seed and `label`.

        The child does not depend on how much of this stream has been consumed. Each
        label may be forked once per instance: two forks with the same label would
        produce the same stream (for noise, a catastrophic reuse), so it is refused.
        """
        if not isinstance(label, (bytes, bytearray)) or not label:
            raise RngArgumentError("fork label must be non-empty bytes")
        tag = bytes(label)
        with self._lock:
            if tag in self._forks:
                raise RngArgumentError(f"Csprng already forked with label {tag!r}")
            self._forks.add(tag)
        return Csprng(_hkdf(self._seed, _FORK_INFO + tag))


def seed_from(get_random: Callable[[int], bytes]) -> Csprng:
    """A Csprng seeded with 32 bytes from `get_random` (NSM GetRandom, or os.urandom locally)."""
    seed = get_random(SEED_BYTES)
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        got = len(seed) if isinstance(seed, (bytes, bytearray)) else type(seed).__name__
        raise SeedError(f"random source returned {got} instead of {SEED_BYTES} bytes")
    if not any(seed):
        raise SeedError("random source returned an all-zero seed")
    log.debug("seeded a Csprng from %s", getattr(get_random, "__qualname__", "a random source"))
    return Csprng(bytes(seed))
