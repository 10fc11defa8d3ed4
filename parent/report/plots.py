"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function draws only numbers from `ReportFacts`; which figures exist is the
caller's choice (a search certificate has no curve over steps, a report without
`--ledger` has no budget over jobs).
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from parent.report.facts import AccuracyPoint, LedgerFact

__all__ = ["accuracy_png", "budget_png", "epsilon_curve_png"]

_SIZE = (7.2, 3.6)
_DPI = 110
_BLUE, _RED, _GREY, _GREEN = "#1f4e79", "#b03a2e", "#7f8c8d", "#1e8449"


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, alpha=0.3)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure, axes


def _png(figure: Any) -> bytes:
    out = io.BytesIO()
    # Reproducible bytes: no software or creation-time metadata in the PNG.
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def epsilon_curve_png(curve: Sequence[tuple[int, float]], *, delta: float, accountant: str,
                      budget: float, total: float) -> bytes:
    """Training's epsilon against steps, the budget as a dashed line, the job's final epsilon marked."""
    figure, axes = _figure()
    shown = [(0, 0.0), *((s, e) for s, e in curve if math.isfinite(e))]
    axes.plot([s for s, _ in shown], [e for _, e in shown], color=_BLUE, marker=".", markersize=4,
              label=f"epsilon spent ({accountant})")
    if len(shown) > 1:
        last_step, last = shown[-1]
        axes.plot([last_step], [last], "o", color=_RED, label=f"certified: {last:.3f} after {last_step} steps")
    axes.axhline(budget, color=_GREY, linestyle="--", label=f"job budget {budget:g}")
    if total > shown[-1][1] * (1 + 1e-9):
        axes.axhline(total, color=_GREEN, linestyle=":", label=f"with released DP metrics: {total:.3f}")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("training steps")
    axes.set_ylabel(f"epsilon at delta {delta:g}")
    axes.set_ylim(0, max(budget, total, *(e for _, e in shown)) * 1.15)
    axes.set_xlim(left=0)
    axes.legend(loc="best", fontsize=8)
    return _png(figure)


def budget_png(ledger: LedgerFact) -> bytes:
    """The dataset's cumulative epsilon after each ledger entry (one bar per entry), this job's in red."""
    figure, axes = _figure()
    xs = list(range(1, len(ledger.entries) + 1))
    ys = [e.cumulative_epsilon for e in ledger.entries]
    colours = [_RED if e.this_job else _BLUE for e in ledger.entries]
    axes.bar(xs, ys, color=colours, width=0.6)
    for x, y in zip(xs, ys, strict=True):
        axes.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    axes.axhline(ledger.max_epsilon, color=_GREY, linestyle="--")
    handles = [Line2D([], [], color=_GREY, linestyle="--", label=f"dataset cap {ledger.max_epsilon:g}"),
               Patch(color=_RED, label="after this job's entry")]
    if any(not e.this_job for e in ledger.entries):
        handles.append(Patch(color=_BLUE, label="after another job's entry"))
    labels = [f"slot {e.slot}\n{e.job_id[:16]}" for e in ledger.entries]
    if len(xs) <= 10:
        axes.set_xticks(xs, labels, fontsize=8)
    axes.set_xlabel("budget ledger entry (oldest first)")
    axes.set_ylabel(f"dataset's cumulative epsilon (delta {ledger.delta:g})")
    axes.set_ylim(0, max(ledger.max_epsilon, *ys, 0.0) * 1.18)
    axes.set_xlim(0.3, len(xs) + 0.7)
    axes.legend(handles=handles, loc="upper left", fontsize=8)
    return _png(figure)


def accuracy_png(points: Sequence[AccuracyPoint]) -> bytes:
    """Each released accuracy metric against training's epsilon at the step it was evaluated."""
    figure, axes = _figure()
    names = sorted({p.name for p in points})
    for name in names:
        mine = sorted((p for p in points if p.name == name), key=lambda p: p.step)
        axes.plot([p.epsilon for p in mine], [p.value for p in mine], marker="o", label=name)
        last = mine[-1]
        axes.annotate(f"{last.value:.3f} at step {last.step}", (last.epsilon, last.value),
                      textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    values = [p.value for p in points]
    low, high = min(values), max(values)
    pad = max(0.05, (high - low) * 0.25)
    axes.set_ylim(max(0.0, low - pad), high + 1.5 * pad)
    axes.set_xlim(0, max(p.epsilon for p in points) * 1.15)
    axes.set_xlabel("epsilon spent by training at the evaluation step")
    axes.set_ylabel("accuracy (public evaluation)")
    axes.legend(loc="best", fontsize=8)
    return _png(figure)
