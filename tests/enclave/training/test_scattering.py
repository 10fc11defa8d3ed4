"""The fixed scattering front end: Kymatio's construction, and the properties it must keep."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError
from enclave.training.scattering import (
    Scattering2d,
    ScatteringConfigError,
    filter_bank,
    gabor_2d,
    morlet_2d,
    output_channels,
    padded_size,
)


@pytest.fixture(scope="module")
def scattering() -> Scattering2d:
    return Scattering2d(J=2, shape=(28, 28), L=8)


def _garment(shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A smooth, bright, shirt-like blob on a dark background (standardised-pixel range)."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    cy, cx = 14.0 + shift[0], 14.0 + shift[1]
    body = np.exp(-(((yy - cy) / 7.0) ** 4 + ((xx - cx) / 5.0) ** 4))
    sleeves = np.exp(-(((yy - cy + 4) / 3.0) ** 2 + ((np.abs(xx - cx) - 8) / 2.5) ** 2))
    image = np.clip(body + sleeves, 0, 1) * (1 + 0.3 * np.sin((xx - cx) / 2.0))
    return torch.from_numpy(((image / 1.3 - 0.286) / 0.353).astype(np.float32))


def test_fashion_mnist_shape_is_81_channels_of_7x7(scattering: Scattering2d) -> None:
    x = torch.randn(3, 1, 28, 28)
    out = scattering(x)
    assert out.shape == (3, 81, 7, 7) and out.dtype == torch.float32
    assert scattering.out_shape == (81, 7, 7) and scattering.out_channels == 81
    # [B, H, W] and [B, 1, H, W] are the same images.
    assert torch.equal(scattering(x[:, 0]), out)


@pytest.mark.parametrize(("J", "L", "channels"), [(1, 8, 9), (2, 8, 81), (3, 8, 217), (2, 4, 25), (2, 6, 49)])
def test_channel_count_formula_matches_the_output(J: int, L: int, channels: int) -> None:
    assert output_channels(J, L) == channels == 1 + J * L + L * L * J * (J - 1) // 2
    out = Scattering2d(J=J, shape=(32, 32), L=L)(torch.randn(2, 32, 32))
    assert out.shape == (2, channels, 32 // 2**J, 32 // 2**J)


def test_padding_follows_kymatio() -> None:
    assert padded_size(28, 2) == 36 and padded_size(32, 2) == 40 and padded_size(32, 3) == 48
    assert Scattering2d(J=2, shape=(28, 28)).pads == (4, 4, 4, 4)


def test_no_parameters_no_buffers_no_state(scattering: Scattering2d) -> None:
    assert list(scattering.parameters()) == []
    assert list(scattering.buffers()) == []
    assert scattering.state_dict() == {}


def test_deterministic_from_hyper_parameters() -> None:
    a, b = Scattering2d(), Scattering2d()
    for pa, pb in zip(a.bank.psi, b.bank.psi, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a.bank.phi, b.bank.phi, strict=True))
    x = torch.randn(4, 28, 28)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a(x))
    # Batch composition does not change a record's features (no cross-sample mixing).
    torch.testing.assert_close(a(x)[1:2], a(x[1:2]), rtol=1e-5, atol=1e-6)


def test_morlet_filters_have_zero_mean() -> None:
    bank = filter_bank(36, 36, 2, 8)
    for levels in bank.psi:
        for res, filters in enumerate(levels):
            assert filters.shape == (8, 36 // 2**res, 36 // 2**res)
            # The DC bin of each band-pass filter is zero; its peak is near 1.
            assert float(filters[:, 0, 0].abs().max()) < 1e-6
            assert 0.5 < float(filters.abs().amax(dim=(1, 2)).min())
    # The spatial Morlet sums to zero by construction; the Gabor it came from does not.
    wave = morlet_2d(36, 36, 0.8, math.pi / 8, 3 * math.pi / 4, 0.5)
    assert abs(wave.sum()) < 1e-9
    assert abs(gabor_2d(36, 36, 0.8, math.pi / 8, 3 * math.pi / 4, 0.5).sum()) > 1e-3


def test_low_pass_is_a_unit_gain_average() -> None:
    bank = filter_bank(36, 36, 2, 8)
    for res, phi in enumerate(bank.phi):
        assert phi.shape == (36 // 2**res, 36 // 2**res)
        assert abs(float(phi[0, 0]) - 1.0) < 1e-3
        assert float(phi.max()) == pytest.approx(float(phi[0, 0]))


@pytest.mark.parametrize("value", [-0.81, 0.0, 2.0])
def test_constant_image_keeps_only_its_average(scattering: Scattering2d, value: float) -> None:
    out = scattering(torch.full((1, 28, 28), value))
    torch.testing.assert_close(out[0, 0], torch.full((7, 7), value), rtol=1e-3, atol=1e-5)
    assert float(out[0, 1:].abs().max()) < 1e-5


def test_order_zero_is_the_low_pass_average_sampled_every_2_to_the_J(scattering: Scattering2d) -> None:
    # Independent computation in space: circular convolution of the reflect-padded image
    # with the periodised Gaussian, sampled every 4 pixels, border dropped.
    image = _garment().numpy().astype(np.float64)
    padded = np.pad(image, 4, mode="reflect")
    phi = np.real(gabor_2d(36, 36, 0.8 * 2, 0.0, 0.0))
    expected = np.empty((7, 7))
    for u in range(7):
        for v in range(7):
            p, q = 4 * (u + 1), 4 * (v + 1)
            rows = (p - np.arange(36)) % 36
            cols = (q - np.arange(36)) % 36
            expected[u, v] = (padded * phi[np.ix_(rows, cols)]).sum()
    got = scattering(torch.from_numpy(image.astype(np.float32))[None])[0, 0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_order_one_is_the_averaged_wavelet_modulus(scattering: Scattering2d) -> None:
    # |x * psi_{0,l}| computed in space by numpy's FFT, then averaged like order 0.
    image = _garment().numpy().astype(np.float64)
    padded = np.pad(image, 4, mode="reflect")
    phi = np.real(gabor_2d(36, 36, 1.6, 0.0, 0.0))
    got = scattering(torch.from_numpy(image.astype(np.float32))[None])[0]
    for theta in (0, 3, 6):
        psi = morlet_2d(36, 36, 0.8, (3 - theta) * math.pi / 8, 3 * math.pi / 4, 0.5)
        # Kymatio keeps only the real part of the filter's spectrum.
        response = np.abs(np.fft.ifft2(np.fft.fft2(padded) * np.real(np.fft.fft2(psi))))
        smooth = np.real(np.fft.ifft2(np.fft.fft2(response) * np.real(np.fft.fft2(phi))))
        expected = smooth[4:36:4, 4:36:4][:7, :7]
        np.testing.assert_allclose(got[1 + theta].double().numpy(), expected, rtol=1e-3, atol=1e-4)


def _striped(phase: float) -> torch.Tensor:
    """A fine texture (period 3 pixels) under a fixed smooth window, shifted by `phase` pixels."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    window = np.exp(-(((yy - 14) / 8.0) ** 4 + ((xx - 14) / 8.0) ** 4))
    return torch.from_numpy((window * (1 + np.cos(2 * math.pi * (xx - phase) / 3.0)) / 2).astype(np.float32))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_small_translations_change_features_little(scattering: Scattering2d) -> None:
    # A shifted fine texture: every pixel changes, the wavelet moduli hardly do.
    x = _striped(0.0)
    for phase in (1.0, 1.5, 2.0):
        moved = _striped(phase)
        assert _relative(moved, x) > 0.9
        assert _relative(scattering(moved[None]), scattering(x[None])) < 0.05
    # A whole object moved by a pixel or two changes its features less than its pixels.
    g = _garment()
    for shift in ((0, 1), (1, 0), (1, 1), (0, 2)):
        moved = _garment(shift)
        assert _relative(scattering(moved[None]), scattering(g[None])) < 0.85 * _relative(moved, g)
    # A large shift is not invisible: the features are stable, not blind.
    assert _relative(scattering(_garment((0, 6))[None]), scattering(g[None])) > 0.5


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["noise", "garment", "sparse"]))
def test_energy_is_not_amplified(scattering: Scattering2d, seed: int, kind: str) -> None:
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        x = torch.randn(28, 28, generator=g)
    elif kind == "garment":
        x = _garment((int(torch.randint(-3, 4, (1,), generator=g)), int(torch.randint(-3, 4, (1,), generator=g))))
    else:
        # Away from the border: reflect padding mirrors a pixel within 4 of it, adding its energy again.
        x = torch.zeros(28, 28)
        rows, cols = torch.randint(4, 24, (5,), generator=g), torch.randint(4, 24, (5,), generator=g)
        x[rows, cols] = torch.randn(5, generator=g) * 3
    out = scattering(x[None])
    # Each coefficient stands for a 2^J x 2^J block of pixels.
    assert 0 < float(out.norm()) * 4 <= 1.05 * float(x.norm())


def test_differentiable_and_chunked_features_match(scattering: Scattering2d) -> None:
    x = torch.randn(5, 28, 28, requires_grad=True)
    scattering(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    plain = torch.randn(7, 1, 28, 28)
    torch.testing.assert_close(scattering.features(plain, chunk=3), scattering(plain), rtol=1e-5, atol=1e-6)
    assert scattering.features(plain[:0]).shape == (0, 81, 7, 7)


@pytest.mark.parametrize(
    "kwargs",
    [{"J": 0}, {"J": 2.0}, {"L": 0}, {"shape": (30, 28)}, {"J": 4, "shape": (16, 16)}, {"J": 3, "shape": (8, 8)}],
)
def test_bad_hyper_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ScatteringConfigError) as info:
        Scattering2d(**kwargs)
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(2, 28, 27), (2, 3, 28, 28), (28, 28), (2, 1, 1, 28, 28)])
def test_wrong_input_shape_is_refused(scattering: Scattering2d, shape: tuple[int, ...]) -> None:
    with pytest.raises(ScatteringConfigError):
        scattering(torch.zeros(shape))
    with pytest.raises(ScatteringConfigError):
        scattering.features(torch.zeros(2, 28, 28), chunk=0)
