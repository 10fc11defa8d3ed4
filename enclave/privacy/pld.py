"""Privacy loss distributions (PLD) of the Poisson-subsampled Gaussian, composed by FFT.

Neighbouring datasets differ by adding or removing one record. With sampling rate q
and noise multiplier sigma one step is the pair of output densities

    A = (1 - q) N(0, s^2) + q N(-1, s^2)        B = N(0, s^2)

("remove": loss l(x) = log A(x)/B(x) with x ~ A; "add": loss -l(x) with x ~ B, which
is the add/remove pair mirrored). Both directions are accounted and the larger
epsilon is reported, as dp-accounting's PLDAccountant does for ADD_OR_REMOVE_ONE.

Everything here errs on one side only, so the epsilon reported is never below the
true epsilon of the mechanism:

* Discretisation: losses live on the grid k*h. The loss range is cut into intervals
  [k h, (k+1) h]; the upper/lower-measure masses (P, Q) of each interval are split
  between its two endpoints so that both P and the lower mass Q are preserved
  (p_a + p_b = P, p_a e^-a + p_b e^-b = Q). The two-point pair dominates the
  interval's continuous pair (Blackwell), so the whole discrete PLD dominates the
  mechanism; it is the pessimistic "connect-the-dots" PLD of Doroshenko et al. 2022
  written per interval, which keeps relative precision in the far tails.
* Tails: noise beyond TAIL_Z standard deviations either goes to the infinite loss or
  is rounded up to the grid edge, whichever is the pessimistic side.
* Composition: the T-fold convolution is done with one real FFT of length L and a
  power in the frequency domain. The window of L bins is placed with Chernoff bounds
  from the exact moment generating function; mass above the window (<= WINDOW_TAIL)
  is added to the infinity mass, mass below it wraps to the top, which only raises
  delta.
* Grid: h = H_FLOOR (dp-accounting's default interval) unless the per-step range or
  the composed window would need more than N_STEP_MAX / N_FFT_TARGET bins; then h
  doubles along H_FLOOR * 2^j. Nested grids make coarser answers larger, never smaller.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from enclave.privacy.normal import interval_mass, lower_tail, tail_quantile

log = logging.getLogger(__name__)

__all__ = [
    "DiscretePld",
    "StepPld",
    "ComposedPld",
    "compose",
    "epsilon",
    "epsilon_for_delta",
    "grid_interval",
    "step_pld",
]

H_FLOOR = 1e-4
N_STEP_MAX = 2**19
N_FFT_TARGET = 2**20
N_COARSE = 2**11
TAIL_MASS = 1e-20
TAIL_Z = tail_quantile(TAIL_MASS)
WINDOW_TAIL = 1e-16
# Losses beyond this are treated as infinite (exp() of them would overflow).
LOSS_CAP = 600.0
# Orders (in 1/loss units) at which Chernoff bounds for the composed window are tried.
_ORDERS = 2.0 ** np.arange(-10, 23, dtype=np.float64)
_MGF_BINS = 2048

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class DiscretePld:
    """A sub-probability mass on losses (offset + i) * h plus a mass at +infinity."""

    h: float
    offset: int
    probs: FloatArray = field(repr=False)
    infinity_mass: float

    @property
    def top(self) -> int:
        return self.offset + len(self.probs) - 1

    @functools.cached_property
    def log_mgfs(self) -> tuple[FloatArray, FloatArray]:
        """Upper bounds on log E[exp(t L)] at t = +_ORDERS and t = -_ORDERS (Chernoff bounds)."""
        return _log_mgfs(self.offset, self.probs, self.h)

    @functools.cached_property
    def center(self) -> int:
        """The grid index nearest the mean loss: FFT phases stay small around it."""
        total = float(self.probs.sum())
        if total <= 0:
            return self.offset
        return self.offset + int(round(float(np.dot(self.probs, np.arange(len(self.probs)))) / total))


@dataclass(frozen=True, eq=False)
class StepPld:
    """One step's PLD in both directions; `add` is None when the two coincide (q = 1)."""

    q: float
    sigma: float
    h: float
    remove: DiscretePld
    add: DiscretePld | None

    @property
    def directions(self) -> tuple[DiscretePld, DiscretePld]:
        return (self.remove, self.add if self.add is not None else self.remove)


@dataclass(frozen=True, eq=False)
class ComposedPld:
    """The composition of several step PLDs, one DiscretePld per direction."""

    h: float
    directions: tuple[DiscretePld, ...]

    def epsilon(self, delta: float) -> float:
        return max(epsilon_for_delta(d, delta) for d in self.directions)


# --- one step -----------------------------------------------------------------------------


def _loss(q: float, sigma: float, x: float) -> float:
    """Remove-direction privacy loss log(A(x)/B(x))."""
    u = (-x - 0.5) / (sigma * sigma)
    if q == 1.0:
        return u
    return float(np.logaddexp(math.log1p(-q), math.log(q) + u))


def _loss_range(q: float, sigma: float) -> tuple[float, float]:
    """Losses between which all but TAIL_MASS of the noise (each side) falls, capped."""
    top = _loss(q, sigma, -1.0 - TAIL_Z * sigma)
    bottom = _loss(q, sigma, TAIL_Z * sigma)
    return max(bottom, -LOSS_CAP), min(top, LOSS_CAP)


def _inverse_loss(q: float, sigma: float, losses: FloatArray) -> FloatArray:
    """x with loss(x) = losses (the loss is decreasing in x); +inf at or below log(1-q)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if q == 1.0:
            u = losses
        else:
            u = np.log(np.expm1(losses) + q) - math.log(q)
        x = -0.5 - sigma * sigma * u
    if q < 1.0:
        x = np.where(losses <= math.log1p(-q), np.inf, x)
    return x


def _log_mgfs(offset: int, probs: FloatArray, h: float) -> tuple[FloatArray, FloatArray]:
    """Upper bounds on log E[exp(t L)] at t = +_ORDERS and t = -_ORDERS.

    The pmf is grouped into at most _MGF_BINS chunks and each chunk's mass spread to the
    chunk's two end points keeping its mean (exp(t l) lies below its chords): the result
    bounds the exact MGF from above while adding only chunk_width^2/4 of variance per
    step, so windows stay tight for long compositions.
    """
    n = len(probs)
    chunk = max(1, -(-n // _MGF_BINS))
    pad = (-n) % chunk
    idx = np.arange(n + pad, dtype=np.float64).reshape(-1, chunk)
    padded = np.concatenate([probs, np.zeros(pad)]).reshape(-1, chunk)
    masses = padded.sum(axis=1)
    first = (padded * idx).sum(axis=1)
    start = idx[:, 0]
    end = np.minimum(idx[:, -1], n - 1)
    width = end - start
    keep = masses > 0
    masses, first, start, end, width = masses[keep], first[keep], start[keep], end[keep], width[keep]
    # Share of each chunk's mass put on its upper end (mean-preserving); point chunks keep all.
    with np.errstate(invalid="ignore", divide="ignore"):
        w_hi = np.where(width > 0, (first - start * masses) / np.where(width > 0, width, 1.0), 0.0)
    w_hi = np.clip(w_hi, 0.0, masses)
    w_lo = masses - w_hi
    weights = np.concatenate([w_lo, w_hi])
    losses = (offset + np.concatenate([start, end])) * h
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    live = weights > 0
    log_w, losses = log_w[live], losses[live]
    pos = _logsumexp_rows(log_w[None, :] + _ORDERS[:, None] * losses[None, :])
    neg = _logsumexp_rows(log_w[None, :] - _ORDERS[:, None] * losses[None, :])
    return pos, neg


def _logsumexp_rows(a: FloatArray) -> FloatArray:
    if a.shape[1] == 0:
        return np.full(a.shape[0], -np.inf)
    m = a.max(axis=1)
    out: FloatArray = m + np.log(np.exp(a - m[:, None]).sum(axis=1))
    return out


def _make_discrete(h: float, offset: int, probs: FloatArray, infinity_mass: float) -> DiscretePld:
    return DiscretePld(h=h, offset=offset, probs=np.ascontiguousarray(probs, dtype=np.float64),
                       infinity_mass=float(infinity_mass))


@functools.lru_cache(maxsize=16)
def step_pld(q: float, sigma: float, h: float) -> StepPld:
    """The pessimistic discrete PLD of one Poisson-subsampled Gaussian step on the grid h."""
    bottom, top = _loss_range(q, sigma)
    k_lo = math.floor(bottom / h)
    k_hi = math.ceil(top / h) if top < LOSS_CAP else math.floor(LOSS_CAP / h)
    k_hi = max(k_hi, k_lo + 1)
    ks = np.arange(k_lo, k_hi + 1, dtype=np.float64)
    lam = ks * h
    x = _inverse_loss(q, sigma, lam)  # decreasing; x[0] may be +inf

    z0 = x / sigma            # B = N(0, s^2) and the (1-q) part of A
    z1 = (x + 1.0) / sigma    # the q part of A, N(-1, s^2)
    s0, s1 = lower_tail(z0), lower_tail(z1)
    d0 = interval_mass(z0[:-1], z0[1:], s0[:-1], s0[1:])
    d1 = interval_mass(z1[:-1], z1[1:], s1[:-1], s1[1:])
    mass_a = (1.0 - q) * d0 + q * d1  # upper measure of "remove"
    mass_b = d0                        # lower measure of "remove" = upper of "add"

    a, b = lam[:-1], lam[1:]
    gap = -math.expm1(-h)
    # remove: the part of each interval's mass that goes to its upper end b.
    # P - Q e^a = q D1 - (e^a - 1 + q) D0, written so nothing overflows for a <= LOSS_CAP.
    up = (q * d1 - (np.expm1(a) + q) * d0) / gap
    up = np.clip(up, 0.0, mass_a)
    remove = np.zeros(len(ks))
    remove[:-1] += mass_a - up
    remove[1:] += up

    def cdf(i: int, z: FloatArray, s: FloatArray) -> float:
        return float(s[i]) if z[i] <= 0 else float(1.0 - s[i])

    def sf(i: int, z: FloatArray, s: FloatArray) -> float:
        return float(s[i]) if z[i] >= 0 else float(1.0 - s[i])

    # Noise beyond the top cut (x < x[-1]) has loss above the grid: infinite for remove.
    remove_inf = (1.0 - q) * cdf(-1, z0, s0) + q * cdf(-1, z1, s1)
    bottom_tail = math.isfinite(x[0])
    if bottom_tail:
        # Loss below the grid: rounded up to its lowest point.
        remove[0] += (1.0 - q) * sf(0, z0, s0) + q * sf(0, z1, s1)
    remove_pld = _make_discrete(h, k_lo, remove, remove_inf)

    if q == 1.0:
        return StepPld(q, sigma, h, remove_pld, None)

    # add: losses -l with x ~ B; the interval [a, b] becomes [-b, -a] with the roles of the
    # measures swapped. The part going to the upper end -a is (Q - P e^-b) / (1 - e^-h).
    with np.errstate(over="ignore"):
        eb = np.exp(-b)
    up_add = (d0 * (1.0 - (1.0 - q) * eb) - q * eb * d1) / gap
    up_add = np.clip(up_add, 0.0, mass_b)
    add = np.zeros(len(ks))  # indexed like ks; reversed below
    add[:-1] += up_add
    add[1:] += mass_b - up_add
    add[-1] += cdf(-1, z0, s0)  # add-loss below -k_hi*h: rounded up to it
    add_inf = sf(0, z0, s0) if bottom_tail else 0.0
    add_pld = _make_discrete(h, -k_hi, add[::-1], add_inf)
    return StepPld(q, sigma, h, remove_pld, add_pld)


# --- composition ----------------------------------------------------------------------------


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast for numpy's pocketfft)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _window(parts: Sequence[tuple[DiscretePld, int]]) -> tuple[int, int, bool]:
    """Index range holding all but WINDOW_TAIL of the composed mass on each side."""
    hard_lo = sum(t * d.offset for d, t in parts)
    hard_hi = sum(t * d.top for d, t in parts)
    h = parts[0][0].h
    slack = math.log(1.0 / WINDOW_TAIL)
    with np.errstate(invalid="ignore"):
        pos = sum(t * d.log_mgfs[0] for d, t in parts)
        neg = sum(t * d.log_mgfs[1] for d, t in parts)
        hi_bounds = (pos + slack) / _ORDERS
        lo_bounds = -(neg + slack) / _ORDERS
    hi_bounds = hi_bounds[np.isfinite(hi_bounds)]
    lo_bounds = lo_bounds[np.isfinite(lo_bounds)]
    hi, truncated = hard_hi, False
    if hi_bounds.size:
        cand = math.floor(float(hi_bounds.min()) / h) + 1
        if cand < hard_hi:
            hi, truncated = cand, True
    lo = hard_lo
    if lo_bounds.size:
        lo = max(hard_lo, math.ceil(float(lo_bounds.max()) / h) - 1)
    lo = min(lo, hi)
    return lo, hi, truncated


def window_width(parts: Sequence[tuple[DiscretePld, int]]) -> int:
    lo, hi, _ = _window(parts)
    return hi - lo + 1


def _compose_direction(parts: Sequence[tuple[DiscretePld, int]]) -> DiscretePld:
    """Convolve each part's pmf with itself t times and with the others, in one FFT window."""
    if len(parts) == 1 and parts[0][1] == 1:
        return parts[0][0]
    h = parts[0][0].h
    log_keep = 0.0
    for d, t in parts:
        if d.infinity_mass >= 1.0:
            log_keep = -math.inf
        elif d.infinity_mass > 0.0:
            log_keep += t * math.log1p(-d.infinity_mass)
    infinity = -math.expm1(log_keep)
    lo, hi, truncated = _window(parts)
    if truncated:
        infinity += WINDOW_TAIL
    size = _fast_len(hi - lo + 1)
    log_abs = np.zeros(size // 2 + 1)
    phase = np.zeros(size // 2 + 1)
    shift = 0
    for d, t in parts:
        # Folding modulo the window length is exact for circular convolution; centring on
        # the mean keeps phases small. The t-th power is taken in polar form, exp(t log F).
        positions = (np.arange(len(d.probs)) + (d.offset - d.center)) % size
        folded = np.bincount(positions, weights=d.probs, minlength=size)
        spectrum = np.fft.rfft(folded)
        with np.errstate(divide="ignore"):
            log_abs += t * np.log(np.abs(spectrum))
        phase += t * np.angle(spectrum)
        shift += t * d.center
    spectrum = np.exp(log_abs + 1j * phase)
    circular = np.fft.irfft(spectrum, n=size)
    probs = np.roll(circular, -((lo - shift) % size))
    np.maximum(probs, 0.0, out=probs)
    return _make_discrete(h, lo, probs, min(1.0, infinity))


def grid_interval(segments: Sequence[tuple[float, float, int]]) -> float:
    """The grid h for composing `segments` (q, sigma, steps): H_FLOOR * 2^j, as small as affordable."""
    need = H_FLOOR
    widest = 0.0
    for q, sigma, _ in segments:
        bottom, top = _loss_range(q, sigma)
        widest = max(widest, top - bottom)
    need = max(need, widest / N_STEP_MAX)
    coarse = _ladder(max(H_FLOOR, widest / N_COARSE))
    steps = [step_pld(q, sigma, coarse) for q, sigma, _ in segments]
    for direction in (0, 1):
        parts = [(s.directions[direction], t) for s, (_, _, t) in zip(steps, segments, strict=True)]
        width = window_width(parts) * coarse
        need = max(need, width / N_FFT_TARGET)
    return _ladder(need)


def _ladder(x: float) -> float:
    j = max(0, math.ceil(math.log2(x / H_FLOOR) - 1e-9))
    return H_FLOOR * 2.0**j


def compose(segments: Sequence[tuple[float, float, int]]) -> ComposedPld:
    """Compose steps given as (q, sigma, steps) triples (steps >= 1) on a common grid."""
    if not segments:
        raise ValueError("nothing to compose")
    h = grid_interval(segments)
    steps = [step_pld(q, sigma, h) for q, sigma, _ in segments]
    directions = []
    symmetric = all(s.add is None for s in steps)
    for direction in ((0,) if symmetric else (0, 1)):
        parts = [(s.directions[direction], t) for s, (_, _, t) in zip(steps, segments, strict=True)]
        directions.append(_compose_direction(parts))
    log.debug("composed %d segment(s) on h=%g", len(segments), h)
    return ComposedPld(h, tuple(directions))


@functools.lru_cache(maxsize=4)
def _composed_cached(segments: tuple[tuple[float, float, int], ...]) -> ComposedPld:
    return compose(segments)


def epsilon(segments: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at `delta` of the composition of (q, sigma, steps) segments; 0 for none."""
    live = tuple((float(q), float(s), int(t)) for q, s, t in segments if t > 0)
    if not live:
        return 0.0
    return _composed_cached(live).epsilon(delta)


# --- epsilon from a PLD ---------------------------------------------------------------------


def epsilon_for_delta(pld: DiscretePld, delta: float) -> float:
    """Smallest eps >= 0 with hockey-stick divergence <= delta (as dp-accounting computes it)."""
    if pld.infinity_mass > delta:
        return math.inf
    losses = (pld.offset + np.arange(len(pld.probs))) * pld.h
    first = int(np.searchsorted(losses, 0.0, side="right"))
    p = pld.probs[first:]
    lo = losses[first:]
    if p.size == 0:
        return 0.0
    # Suffix sums over losses strictly above each grid point.
    upper = pld.infinity_mass + np.cumsum(p[::-1])[::-1]          # sum_{j>=i} p_j + inf
    with np.errstate(under="ignore"):
        weighted = p * np.exp(-lo)
    lower = np.cumsum(weighted[::-1])[::-1]                         # sum_{j>=i} p_j e^-l_j
    if upper[0] - lower[0] <= delta:
        return 0.0
    upper_next = np.append(upper[1:], pld.infinity_mass)
    lower_next = np.append(lower[1:], 0.0)
    finite = lo <= LOSS_CAP
    with np.errstate(over="ignore", invalid="ignore"):
        at_grid = upper_next - np.exp(np.minimum(lo, LOSS_CAP)) * lower_next
    ok = (at_grid <= delta) & finite
    if not ok.any():
        # Beyond the range where exp() is usable: the tail mass alone bounds delta from above.
        tail_ok = upper_next <= delta
        return float(lo[int(np.argmax(tail_ok))])
    i = int(np.argmax(ok))
    if lower[i] <= 0.0:
        return float(max(0.0, lo[i]))
    eps = math.log((upper[i] - delta) / lower[i])
    floor = lo[i - 1] if i > 0 else 0.0
    return float(min(max(eps, floor, 0.0), lo[i]))
