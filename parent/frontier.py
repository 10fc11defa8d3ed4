"""Epsilon against steps or against the noise multiplier, for one recipe (q, sigma, steps, delta).

Every point is the accountant's own epsilon (`enclave.privacy.calibration.epsilon`), the
function the enclave plans and composes with. The plot is drawn with matplotlib (a
host-side dependency, which `hermetic report` needs too): it is imported when a PNG is asked for.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclave.errors import ConfigError
from enclave.privacy.calibration import epsilon
from parent.privacy_plan import json_float

VARY = ("steps", "noise")
DEFAULT_POINTS = 20
MAX_POINTS = 200


@dataclass(frozen=True)
class Frontier:
    vary: str  # "steps" or "noise"
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    accountant: str
    epsilon: float  # at the recipe itself
    points: tuple[tuple[float, float], ...]  # (x, epsilon), x ascending
    cap: float | None = None  # the dataset's, when known

    @property
    def own_x(self) -> float:
        return self.steps if self.vary == "steps" else self.noise_multiplier

    @property
    def x_label(self) -> str:
        return "steps" if self.vary == "steps" else "noise multiplier"

    def to_json(self) -> dict[str, Any]:
        return {"vary": self.vary, "sampling_rate": self.sampling_rate, "noise_multiplier": self.noise_multiplier,
                "steps": self.steps, "delta": self.delta, "accountant": self.accountant,
                "epsilon": json_float(self.epsilon), "cap": self.cap,
                "points": [{"x": x, "epsilon": json_float(e)} for x, e in self.points]}


def default_range(vary: str, sigma: float, steps: int) -> tuple[float, float]:
    """A tenth to twice the recipe's steps, or half to twice its noise multiplier."""
    if vary == "steps":
        return max(1, steps // 10), max(2, 2 * steps)
    return sigma / 2, sigma * 2


def xs(vary: str, start: float, stop: float, count: int) -> Sequence[float]:
    """`count` evenly spaced values from start to stop; whole and distinct step counts for steps."""
    start, stop = float(start), float(stop)
    if not 2 <= count <= MAX_POINTS:
        raise ConfigError(f"--points must be 2..{MAX_POINTS}, got {count}")
    if not (math.isfinite(start) and math.isfinite(stop)) or not 0 < start < stop:
        raise ConfigError(f"the range must be 0 < --from < --to, got {start:g} .. {stop:g}")
    if vary == "steps" and not (start.is_integer() and stop.is_integer()):
        raise ConfigError(f"a range of steps is whole numbers, got {start:g} .. {stop:g}")
    values = [start + (stop - start) * i / (count - 1) for i in range(count)]
    if vary == "steps":
        return sorted({round(v) for v in values})
    return values


def frontier(*, vary: str, q: float, sigma: float, steps: int, delta: float, accountant: str,
             start: float, stop: float, count: int, cap: float | None = None) -> Frontier:
    def at(x: float) -> float:
        if vary == "steps":
            return epsilon(q, sigma, int(x), delta, accountant)
        return epsilon(q, x, steps, delta, accountant)

    points = tuple((x, at(x)) for x in xs(vary, start, stop, count))
    return Frontier(vary, q, sigma, steps, delta, accountant, epsilon(q, sigma, steps, delta, accountant),
                    points, cap)


def render_png(f: Frontier) -> bytes:
    """The frontier as a PNG: the curve, the recipe's own point, and the cap as a horizontal line."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--png needs matplotlib (pip install matplotlib)") from None
    # A Figure of its own, not pyplot: no global state, no display backend.
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = [(x, e) for x, e in f.points if math.isfinite(e)]
    axes.plot([x for x, _ in shown], [e for _, e in shown], marker=".", label=f"epsilon ({f.accountant})")
    if math.isfinite(f.epsilon):
        axes.plot([f.own_x], [f.epsilon], "o", color="tab:red", label=f"this recipe: epsilon {f.epsilon:.3g}")
    if f.cap is not None:
        axes.axhline(f.cap, color="tab:gray", linestyle="--", label=f"dataset cap {f.cap:g}")
    fixed = (f"q={f.sampling_rate:.4g}, sigma={f.noise_multiplier:.4g}" if f.vary == "steps"
             else f"q={f.sampling_rate:.4g}, {f.steps} steps")
    axes.set_title(f"epsilon at delta {f.delta:g} against {f.x_label} ({fixed})")
    axes.set_xlabel(f.x_label)
    axes.set_ylabel("epsilon")
    axes.grid(True, alpha=0.3)
    axes.legend()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
