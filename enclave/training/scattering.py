"""A fixed 2-D wavelet scattering transform (Mallat 2012; Oyallon & Mallat 2015) in torch.

Tramer & Boneh (2021) train DP linear models and small CNNs on ScatterNet features of
Fashion-MNIST: the scattering transform with J=2 scales and L=8 orientations turns a
28x28 image into 81 channels of 7x7. The transform has no trainable parameters and
reads no data to build: its filters are a pure function of (J, L, image shape), so it
releases nothing about any record and needs no privacy accounting. It follows
Kymatio's `Scattering2D` (v0.3) construction so the features are the ones the paper
used:

* Morlet wavelets built in space on the padded grid (Gaussian envelope with sigma
  0.8 * 2^j, slant 4/L, centre frequency 3/4 * pi / 2^j, angle (L/2 - 1 - l) * pi / L,
  periodised over 5x5 neighbouring tiles), minus K times the envelope, with K chosen
  so each wavelet has exactly zero mean (a band-pass filter); then their 2-D DFT, of
  which only the real part is kept (the filters are even, the imaginary part is
  rounding noise).
* The low-pass phi: a Gaussian with sigma 0.8 * 2^(J-1) (Kymatio's choice; the
  averaging window then spans about 2^J pixels), no modulation.
* Reflect padding of the image to the next multiple of 2^J that leaves at least 2^J
  more rows (28 -> 36 for J=2), filtering by products in the Fourier domain,
  subsampling as periodisation in the Fourier domain, and dropping one coefficient
  each side at the end (9 -> 7).
* Coefficients: order 0, x * phi; order 1, |x * psi_{j1,l1}| * phi; order 2,
  ||x * psi_{j1,l1}| * psi_{j2,l2}| * phi for j2 > j1; all subsampled by 2^J. Channel
  order as Kymatio: order 0, then order 1 by (j1, l1), then order 2 by (j1, l1, j2, l2):
  1 + J L + L^2 J (J - 1) / 2 channels (81 for J=2, L=8).

`Scattering2d` is an nn.Module without parameters or registered buffers (the DP
engine refuses modules holding buffers, as buffers are released with the model
unnoised); its filters live in a frozen `FilterBank` attribute object, and it is
differentiable, so it may sit inside a model trained end to end, though it is best
applied once to a whole table (`Scattering2d.features`) since it never changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from enclave.errors import ConfigError

__all__ = [
    "FilterBank",
    "Scattering2d",
    "ScatteringConfigError",
    "filter_bank",
    "gabor_2d",
    "morlet_2d",
    "output_channels",
    "padded_size",
]

#: Periodisation range of the spatial filters: tiles -2..2 in each direction.
_TILES = range(-2, 3)


class ScatteringConfigError(ConfigError):
    """Scattering hyper-parameters or input shape that the transform cannot serve."""


def output_channels(J: int, L: int) -> int:
    """1 + J L + L^2 J (J - 1) / 2: channels of an order-2 scattering transform."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def padded_size(size: int, J: int) -> int:
    """Kymatio's padded side: the multiple of 2^J at least 2^J (and below 2^(J+1)) above `size`."""
    step = 2**J
    result: int = ((size + step) // step + 1) * step
    return result


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """A periodised 2-D Gabor filter on an M x N grid (complex128), as Kymatio's gabor_2d."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    curvature = rot @ np.diag([1.0, slant * slant]) @ rot.T / (2.0 * sigma * sigma)
    out = np.zeros((M, N), np.complex128)
    for ex in _TILES:
        for ey in _TILES:
            xx, yy = np.mgrid[ex * M : (ex + 1) * M, ey * N : (ey + 1) * N].astype(np.float64)
            quadratic = curvature[0, 0] * xx * xx + 2.0 * curvature[0, 1] * xx * yy + curvature[1, 1] * yy * yy
            phase = xi * (xx * math.cos(theta) + yy * math.sin(theta))
            out += np.exp(-quadratic + 1j * phase)
    # Kymatio's normalisation constant, pi truncated to 3.1415 included, so the
    # coefficients match its scale (only relative scales matter after GroupNorm).
    return out / (2.0 * 3.1415 * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 0.5) -> np.ndarray:
    """Gabor minus K times its envelope, K chosen so the filter sums to exactly zero."""
    wave = gabor_2d(M, N, sigma, theta, xi, slant)
    envelope = gabor_2d(M, N, sigma, theta, 0.0, slant)
    result: np.ndarray = wave - (wave.sum() / envelope.sum()) * envelope
    return result


def _periodize(hat: np.ndarray, res: int) -> np.ndarray:
    """A Fourier-domain filter for a signal already subsampled by 2^res (Kymatio's periodize_filter_fft).

    Frequencies that would alias (the middle band of each axis) are zeroed, then the
    spectrum is folded onto the smaller grid.
    """
    M, N = hat.shape
    k = 2**res
    masked = hat.copy()
    start_x, len_x = int(M * 2 ** (-res - 1)), int(M * (1 - 2 ** (-res)))
    start_y, len_y = int(N * 2 ** (-res - 1)), int(N * (1 - 2 ** (-res)))
    masked[start_x : start_x + len_x, :] = 0
    masked[:, start_y : start_y + len_y] = 0
    result: np.ndarray = masked.reshape(k, M // k, k, N // k).sum(axis=(0, 2))
    return result


@dataclass(frozen=True, eq=False)
class FilterBank:
    """Fourier-domain filters on the padded grid, real float32 tensors.

    psi[j][r]: the L wavelets of scale j, [L, M/2^r, N/2^r], at resolution r <= j
    (only r = 0 is used at order 1 and r = j1 at order 2); phi[r]: the low-pass at
    resolution r, [M/2^r, N/2^r].
    """

    J: int
    L: int
    M: int
    N: int
    psi: tuple[tuple[torch.Tensor, ...], ...]
    phi: tuple[torch.Tensor, ...]


def filter_bank(M: int, N: int, J: int, L: int = 8) -> FilterBank:
    """Kymatio's Morlet filter bank for an M x N padded grid (deterministic, data-free)."""
    psi = []
    for j in range(J):
        levels = []
        per_theta = []
        for theta in range(L):
            angle = (int(L - L / 2 - 1) - theta) * math.pi / L
            wavelet = morlet_2d(M, N, 0.8 * 2**j, angle, 3.0 / 4.0 * math.pi / 2**j, 4.0 / L)
            per_theta.append(np.real(np.fft.fft2(wavelet)))
        for res in range(min(j + 1, max(J - 1, 1))):
            stacked = np.stack([_periodize(hat, res) for hat in per_theta])
            levels.append(torch.from_numpy(stacked.astype(np.float32)))
        psi.append(tuple(levels))
    phi_hat = np.real(np.fft.fft2(gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    phi = tuple(torch.from_numpy(_periodize(phi_hat, res).astype(np.float32)) for res in range(J))
    return FilterBank(J=J, L=L, M=M, N=N, psi=tuple(psi), phi=phi)


@lru_cache(maxsize=8)
def _shared_bank(M: int, N: int, J: int, L: int) -> FilterBank:
    # Filters are a pure function of the hyper-parameters and never written to, so
    # models built with the same ones share them (a build then costs no filter design).
    return filter_bank(M, N, J, L)


def _filter_subsample(u_hat: torch.Tensor, filt: torch.Tensor, k: int) -> torch.Tensor:
    """(u * filt) subsampled by k in space, computed in the Fourier domain.

    Subsampling in space is periodisation in frequency: the mean of the k x k tiles of
    the spectrum. Multiplying tile by tile and accumulating never materialises the
    full-size product, which is most of the cost at order 2.
    """
    if k == 1:
        return u_hat * filt
    M, N = u_hat.shape[-2] // k, u_hat.shape[-1] // k
    total: torch.Tensor | None = None
    for a in range(k):
        for b in range(k):
            rows, cols = slice(a * M, (a + 1) * M), slice(b * N, (b + 1) * N)
            tile = u_hat[..., rows, cols] * filt[..., rows, cols]
            total = tile if total is None else total + tile
    assert total is not None
    return total / (k * k)


class Scattering2d(nn.Module):
    """Order-2 scattering of [B, H, W] or [B, 1, H, W] images -> [B, C, H / 2^J, W / 2^J].

    No parameters, no registered buffers; deterministic from (J, L, shape).
    """

    bank: FilterBank

    def __init__(self, J: int = 2, shape: tuple[int, int] = (28, 28), L: int = 8) -> None:
        super().__init__()
        if not (isinstance(J, int) and isinstance(L, int) and J >= 1 and L >= 1):
            raise ScatteringConfigError(f"scattering needs integers J >= 1 and L >= 1, got J={J!r} L={L!r}")
        height, width = (int(s) for s in shape)
        if height % 2**J or width % 2**J or height < 2**J or width < 2**J:
            raise ScatteringConfigError(f"image sides {height}x{width} must be positive multiples of 2^J = {2**J}")
        self.J, self.L = J, L
        self.shape = (height, width)
        self.M, self.N = padded_size(height, J), padded_size(width, J)
        self.pads = (
            (self.M - height) // 2, (self.M - height + 1) // 2, (self.N - width) // 2, (self.N - width + 1) // 2
        )
        if max(self.pads[:2]) >= height or max(self.pads[2:]) >= width:
            # Reflect padding cannot reach further than the image itself.
            raise ScatteringConfigError(f"image {height}x{width} is too small for J={J}")
        # A plain attribute, not a buffer: constant filters are not model state.
        object.__setattr__(self, "bank", _shared_bank(self.M, self.N, J, L))

    @property
    def out_channels(self) -> int:
        return output_channels(self.J, self.L)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.shape[0] // 2**self.J, self.shape[1] // 2**self.J)

    def extra_repr(self) -> str:
        return f"J={self.J}, L={self.L}, shape={self.shape}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 3 or tuple(x.shape[-2:]) != self.shape:
            raise ScatteringConfigError(
                f"scattering expects images shaped [B, {self.shape[0]}, {self.shape[1]}] or [B, 1, ...], "
                f"got {list(x.shape)}"
            )
        bank, J = self.bank, self.J
        top, bottom, left, right = self.pads
        padded = nn.functional.pad(x.unsqueeze(1), (left, right, top, bottom), mode="reflect")[:, 0]
        U0 = torch.fft.fft2(padded.to(torch.float32))

        def low_pass(u_hat: torch.Tensor, res: int) -> torch.Tensor:
            # (u * phi) subsampled to 2^J, back in space, real part, without the border.
            s_hat = _filter_subsample(u_hat, bank.phi[res], 2 ** (J - res))
            result: torch.Tensor = torch.fft.ifft2(s_hat).real[..., 1:-1, 1:-1]
            return result

        def modulus_hat(u_hat: torch.Tensor, psi: torch.Tensor, k: int) -> torch.Tensor:
            # |u * psi| subsampled by k, back in the Fourier domain.
            result: torch.Tensor = torch.fft.fft2(torch.fft.ifft2(_filter_subsample(u_hat, psi, k)).abs())
            return result

        order0 = [low_pass(U0, 0).unsqueeze(1)]
        order1: list[torch.Tensor] = []
        order2: list[torch.Tensor] = []
        for j1 in range(J):
            # [B, L, M/2^j1, N/2^j1]: |x * psi_{j1, l}| for every orientation at once.
            U1 = modulus_hat(U0.unsqueeze(1), bank.psi[j1][0], 2**j1)
            order1.append(low_pass(U1, j1))
            # [B, L1, L2, h, w] per j2, joined along L2 then flattened: Kymatio's
            # (j1, l1, j2, l2) channel order.
            deeper = [
                low_pass(modulus_hat(U1.unsqueeze(2), bank.psi[j2][j1], 2 ** (j2 - j1)), j2)
                for j2 in range(j1 + 1, J)
            ]
            if deeper:
                order2.append(torch.cat(deeper, dim=2).flatten(1, 2))
        return torch.cat(order0 + order1 + order2, dim=1)

    def features(self, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """The transform of a whole table, `chunk` images at a time, without autograd."""
        if chunk < 1:
            raise ScatteringConfigError(f"chunk must be positive, got {chunk}")
        with torch.no_grad():
            parts = [self(x[start : start + chunk]) for start in range(0, x.shape[0], chunk)]
        if not parts:
            return x.new_zeros((0, *self.out_shape), dtype=torch.float32)
        return torch.cat(parts)
