"""The enclave CSPRNG: keystream definition, determinism, secrecy, and its distributions."""
from __future__ import annotations

import copy
import math
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError, HermeticError
from enclave.hazmat import csprng as rng_module
from enclave.hazmat.csprng import (
    GUARD_TERMS,
    Csprng,
    CsprngNotSerialisable,
    RngArgumentError,
    SeedError,
    bernoulli_threshold,
    seed_from,
)

SEED = bytes(range(32))
# Pinned output of this construction for SEED (first 32 keystream bytes) and for the
# fork labelled b"noise" (first 16 bytes); the derivation test below recomputes the
# first from HKDF + raw AES, independently of the Csprng class.
KAT_STREAM = "17063733da692433936e10c00b969ffbd48c5ccce49b80286320f2673c50c03d"
KAT_FORK_NOISE = "549ff5e0cc30bc22466ded29a8891b3a"


def _hkdf(seed: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _ks_statistic(samples: np.ndarray, cdf) -> float:
    """Kolmogorov–Smirnov distance between the empirical CDF of samples and cdf."""
    xs = np.sort(samples.astype(np.float64))
    n = xs.size
    f = np.array([cdf(float(x)) for x in xs])
    upper = np.arange(1, n + 1) / n - f
    lower = f - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def _guard_terms_by_hand(seed: bytes, count: int, block: int) -> np.ndarray:
    """normal()'s [GUARD_TERMS, count] standard Box–Muller terms rebuilt in numpy from the
    raw uniforms, one block of at most 2 * block outputs at a time."""
    r = Csprng(seed)
    parts = []
    for start in range(0, count, 2 * block):
        size = min(2 * block, count - start)
        half = (size + 1) // 2
        u = r.uniform(2 * GUARD_TERMS * half).reshape(2, GUARD_TERMS, half)
        radius = np.sqrt(-2.0 * np.log(1.0 - u[0]))
        angle = 2.0 * np.pi * u[1]
        parts.append(np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :size])
    return np.concatenate(parts, axis=1)


# -- the keystream -------------------------------------------------------------------


def test_keystream_is_aes256_ctr_under_hkdf_stream_key() -> None:
    key = _hkdf(SEED, b"hermetic/csprng/v1/stream")
    counters = b"".join(i.to_bytes(16, "big") for i in range(4))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    expected = ecb.update(counters) + ecb.finalize()
    assert Csprng(SEED).random_bytes(64) == expected
    assert expected[:32].hex() == KAT_STREAM


def test_fork_known_answer_and_derivation() -> None:
    child = Csprng(SEED).fork(b"noise")
    assert child.random_bytes(16).hex() == KAT_FORK_NOISE
    manual = Csprng(_hkdf(SEED, b"hermetic/csprng/v1/fork\x00noise"))
    assert Csprng(SEED).fork(b"noise").random_bytes(64) == manual.random_bytes(64)


def test_stream_is_contiguous_across_calls_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = Csprng(SEED).random_bytes(1000)
    split = Csprng(SEED)
    assert split.random_bytes(7) + split.random_bytes(0) + split.random_bytes(993) == whole
    monkeypatch.setattr(rng_module, "_CHUNK", 48)
    assert Csprng(SEED).random_bytes(1000) == whole


def test_same_seed_same_outputs_for_every_method() -> None:
    a, b = Csprng(SEED), Csprng(SEED)
    assert a.random_bytes(33) == b.random_bytes(33)
    np.testing.assert_array_equal(a.uniform(100), b.uniform(100))
    np.testing.assert_array_equal(a.bernoulli(100, 0.3), b.bernoulli(100, 0.3))
    assert torch.equal(a.normal((5, 7), 1.5), b.normal((5, 7), 1.5))
    assert a.bytes_drawn == b.bytes_drawn


def test_different_seeds_differ() -> None:
    other = bytes([1]) + SEED[1:]
    assert Csprng(SEED).random_bytes(32) != Csprng(other).random_bytes(32)
    assert not torch.equal(Csprng(SEED).normal(16, 1.0), Csprng(other).normal(16, 1.0))


# -- the seed never leaves ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32, 12345, None])
def test_seed_must_be_32_bytes(seed: object) -> None:
    with pytest.raises(SeedError):
        Csprng(seed)  # type: ignore[arg-type]
    assert issubclass(SeedError, ConfigError)


def test_repr_hides_the_seed() -> None:
    r = Csprng(SEED)
    r.random_bytes(5)
    text = repr(r) + str(r)
    assert SEED.hex() not in text
    assert repr(SEED) not in text
    assert "drawn=5" in text


@pytest.mark.parametrize(
    "leak",
    [pickle.dumps, lambda r: pickle.dumps(r, protocol=0), copy.copy, copy.deepcopy, lambda r: r.__getstate__()],
)
def test_cannot_be_pickled_or_copied(leak) -> None:
    for r in (Csprng(SEED), Csprng(SEED).fork(b"child")):
        with pytest.raises(CsprngNotSerialisable):
            leak(r)
    assert issubclass(CsprngNotSerialisable, HermeticError)
    assert issubclass(CsprngNotSerialisable, TypeError)


def test_seed_from_uses_32_bytes_of_the_source() -> None:
    asked: list[int] = []

    def source(n: int) -> bytes:
        asked.append(n)
        return SEED

    r = seed_from(source)
    assert asked == [32]
    assert r.random_bytes(32).hex() == KAT_STREAM
    assert seed_from(os.urandom).random_bytes(32) != seed_from(os.urandom).random_bytes(32)


@pytest.mark.parametrize("returned", [bytes(31), SEED + b"\x00", bytes(32), "not bytes"])
def test_seed_from_refuses_bad_sources(returned: object) -> None:
    with pytest.raises(SeedError):
        seed_from(lambda n: returned)  # type: ignore[arg-type,return-value]


# -- forks --------------------------------------------------------------------------


def test_forks_are_independent_of_parent_position_and_of_each_other() -> None:
    fresh = Csprng(SEED)
    used = Csprng(SEED)
    used.random_bytes(12345)
    assert fresh.fork(b"sampler").random_bytes(32) == used.fork(b"sampler").random_bytes(32)
    parent = Csprng(SEED)
    streams = {
        parent.fork(b"sampler").random_bytes(32),
        parent.fork(b"noise").random_bytes(32),
        parent.fork(b"init").random_bytes(32),
        Csprng(SEED).random_bytes(32),
    }
    assert len(streams) == 4


def test_fork_label_reuse_and_empty_labels_are_refused() -> None:
    r = Csprng(SEED)
    r.fork(b"noise")
    with pytest.raises(RngArgumentError, match="already forked"):
        r.fork(b"noise")
    for bad in (b"", "noise", None):
        with pytest.raises(RngArgumentError):
            r.fork(bad)  # type: ignore[arg-type]


# -- uniform and bernoulli ----------------------------------------------------------------


def test_uniform_is_53_bit_grid_on_unit_interval() -> None:
    u = Csprng(SEED).uniform(200_000)
    assert u.dtype == np.float64 and u.shape == (200_000,)
    assert u.min() >= 0.0 and u.max() < 1.0
    scaled = u * 2.0**53
    np.testing.assert_array_equal(scaled, np.floor(scaled))
    # Some values use the low bits (not a 32-bit generator widened to float64).
    assert np.any(scaled % 2**21 != 0)
    # Mean 1/2, sd of the mean sqrt(1/12 / n): a 5-sigma z-test.
    z = (u.mean() - 0.5) / math.sqrt(1.0 / 12.0 / u.size)
    assert abs(z) < 5.0
    assert Csprng(SEED).uniform(0).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=0, max_value=3000), seed=st.binary(min_size=32, max_size=32))
def test_bernoulli_edge_probabilities(n: int, seed: bytes) -> None:
    r = Csprng(seed)
    never = r.bernoulli(n, 0.0)
    always = r.bernoulli(n, 1.0)
    assert never.dtype == np.bool_ and never.shape == (n,) and not never.any()
    assert always.dtype == np.bool_ and always.shape == (n,) and always.all()
    # Below 2^-53 the threshold floors to zero: the rate is rounded down, never up.
    assert Csprng(seed).bernoulli(n, 2.0**-54).sum() == 0


@settings(max_examples=300, deadline=None)
@given(p=st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_bernoulli_threshold_is_exact_and_never_above_p(p: float) -> None:
    t = bernoulli_threshold(p)
    exact = Fraction(p)
    assert Fraction(t, 2**53) <= exact < Fraction(t + 1, 2**53)


def test_bernoulli_compares_53_bit_integers_against_the_threshold() -> None:
    p = 0.3
    bits = Csprng(SEED)._bits53(10_000)
    expected = bits < np.uint64(bernoulli_threshold(p))
    np.testing.assert_array_equal(Csprng(SEED).bernoulli(10_000, p), expected)


def test_bernoulli_frequency() -> None:
    n, p = 1_000_000, 0.3
    hits = int(Csprng(SEED).bernoulli(n, p).sum())
    z = (hits - n * p) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 5.0


@pytest.mark.parametrize("p", [-0.1, 1.0000001, float("nan"), float("inf")])
def test_bernoulli_refuses_impossible_probabilities(p: float) -> None:
    with pytest.raises(RngArgumentError):
        Csprng(SEED).bernoulli(10, p)


# -- normal -------------------------------------------------------------------------


def test_normal_empirical_std_matches_with_a_million_samples() -> None:
    std = 2.5
    x = Csprng(SEED).normal(1_000_000, std, dtype=torch.float64).numpy()
    n = x.size
    # sum(x^2)/std^2 ~ chi-square(n): mean n, sd sqrt(2n). 5-sigma bound.
    chi2 = float(np.sum(x * x)) / std**2
    assert abs(chi2 - n) / math.sqrt(2 * n) < 5.0
    assert abs(x.mean()) / (std / math.sqrt(n)) < 5.0
    # Relative error of the sample std is about 1/sqrt(2n) = 7e-4; allow 5 of those.
    assert abs(x.std() / std - 1.0) < 5.0 / math.sqrt(2 * n)


def test_normal_passes_kolmogorov_smirnov_against_the_erf_cdf() -> None:
    std = 0.7
    x = Csprng(SEED).normal(200_000, std).numpy()
    d = _ks_statistic(x, lambda v: _normal_cdf(v / std))
    # Asymptotic critical value at alpha = 0.001: sqrt(-ln(alpha / 2) / 2) / sqrt(n).
    critical = math.sqrt(-math.log(0.0005) / 2.0) / math.sqrt(x.size)
    assert d < critical
    # The same test rejects a wrongly scaled sampler (e.g. the guard terms not rescaled).
    assert _ks_statistic(x * 2.0, lambda v: _normal_cdf(v / std)) > critical


def test_normal_is_the_documented_sum_of_guard_terms() -> None:
    """Rebuild normal() from the raw uniforms by hand: GUARD_TERMS Box–Muller terms per output."""
    assert GUARD_TERMS >= 4
    count, std = 1001, 3.0
    terms = _guard_terms_by_hand(SEED, count, block=count)
    expected = terms.sum(axis=0) * (std / math.sqrt(GUARD_TERMS))
    got = Csprng(SEED).normal(count, std, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # A single Box–Muller term (no guard) would be a different output.
    assert not np.allclose(got, terms[0] * std)


def test_normal_consumes_guard_terms_pairs_per_two_outputs() -> None:
    r = Csprng(SEED)
    r.normal(10, 1.0)
    assert r.bytes_drawn == 10 // 2 * GUARD_TERMS * 2 * 8


def test_normal_blocks_do_not_change_the_mapping_within_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # Block size is part of the stream layout, but every block is drawn in order:
    # the first block's outputs equal a standalone draw of that size.
    monkeypatch.setattr(rng_module, "_NORMAL_BLOCK", 8)
    long = Csprng(SEED).normal(40, 1.0, dtype=torch.float64)
    first = Csprng(SEED).normal(16, 1.0, dtype=torch.float64)
    assert torch.equal(long[:16], first)


@pytest.mark.parametrize("shape", [7, (3, 4), torch.Size([2, 3, 4]), (0,), (5, 0)])
def test_normal_shapes_and_dtypes(shape) -> None:
    r = Csprng(SEED)
    expected = (shape,) if isinstance(shape, int) else tuple(shape)
    x32 = r.normal(shape, 1.0)
    x64 = r.normal(shape, 1.0, dtype=torch.float64)
    assert x32.dtype == torch.float32 and tuple(x32.shape) == expected
    assert x64.dtype == torch.float64 and tuple(x64.shape) == expected


def test_normal_with_zero_std_is_zero() -> None:
    assert torch.count_nonzero(Csprng(SEED).normal(100, 0.0)) == 0


@pytest.mark.parametrize("std", [-1.0, float("nan"), float("inf")])
def test_normal_refuses_bad_std(std: float) -> None:
    with pytest.raises(RngArgumentError):
        Csprng(SEED).normal(10, std)


def test_normal_refuses_bad_shape_and_dtype() -> None:
    with pytest.raises(RngArgumentError):
        Csprng(SEED).normal((3, -1), 1.0)
    with pytest.raises(RngArgumentError):
        Csprng(SEED).normal(3, 1.0, dtype=torch.int64)


@pytest.mark.parametrize("count", [16 * 3, 16 * 7 + 5, 16 * 9 + 1, 16 * 12])
def test_normal_groups_of_blocks_keep_the_block_by_block_mapping(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    # Blocks of 16 outputs, computed 3 at a time: full groups, a short group, a short
    # last block. The outputs are those of drawing block after block, bit for bit.
    monkeypatch.setattr(rng_module, "_NORMAL_BLOCK", 8)
    monkeypatch.setattr(rng_module, "_NORMAL_GROUP", 1)
    one_by_one = Csprng(SEED).normal(count, 1.5, dtype=torch.float64)
    monkeypatch.setattr(rng_module, "_NORMAL_GROUP", 3)
    r = Csprng(SEED)
    grouped = r.normal(count, 1.5, dtype=torch.float64)
    assert torch.equal(grouped, one_by_one)
    assert r.bytes_drawn == sum(
        (min(16, count - s) + 1) // 2 * 2 * GUARD_TERMS * 8 for s in range(0, count, 16)
    )
    by_hand = _guard_terms_by_hand(SEED, count, block=8).sum(axis=0) * (1.5 / math.sqrt(GUARD_TERMS))
    np.testing.assert_allclose(grouped.numpy(), by_hand, rtol=1e-12, atol=1e-12)


def test_normal_scales_in_float64_before_rounding_to_dtype() -> None:
    wide = Csprng(SEED).normal(3001, 2.5, dtype=torch.float64)
    narrow = Csprng(SEED).normal(3001, 2.5, dtype=torch.float32)
    assert torch.equal(narrow, wide.to(torch.float32))
