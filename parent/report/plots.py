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
    shown = [(s, e) for s, e in curve if math.isfinite(e)]
    axes.plot([s for s, _ in shown], [e for _, e in shown], color=_BLUE, marker=".", markersize=4,
              label=f"epsilon spent ({accountant})")
    if shown:
        last_step, last = shown[-1]
        axes.plot([last_step], [last], "o", color=_RED, label=f"certified: {last:.3f} after {last_step} steps")
    axes.axhline(budget, color=_GREY, linestyle="--", label=f"job budget {budget:g}")
    if total > (shown[-1][1] if shown else 0.0) * (1 + 1e-9):
        axes.axhline(total, color=_GREEN, linestyle=":", label=f"with released DP metrics: {total:.3f}")
    axes.set_xlabel("training steps")
    axes.set_ylabel(f"epsilon at delta {delta:g}")
    axes.set_ylim(bottom=0)
    axes.set_xlim(left=0)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def budget_png(ledger: LedgerFact) -> bytes:
    """The dataset's cumulative epsilon after each ledger entry, this job's entries highlighted."""
    figure, axes = _figure()
    xs = list(range(1, len(ledger.entries) + 1))
    ys = [e.cumulative_epsilon for e in ledger.entries]
    axes.step([0, *xs], [0.0, *ys], where="post", color=_BLUE, label="dataset's cumulative epsilon")
    own = [(x, e.cumulative_epsilon) for x, e in zip(xs, ledger.entries, strict=True) if e.this_job]
    others = [(x, e.cumulative_epsilon) for x, e in zip(xs, ledger.entries, strict=True) if not e.this_job]
    if others:
        axes.plot([x for x, _ in others], [y for _, y in others], "o", color=_BLUE, label="other jobs' entries")
    if own:
        axes.plot([x for x, _ in own], [y for _, y in own], "o", color=_RED, markersize=8, label="this job's entry")
    axes.axhline(ledger.max_epsilon, color=_GREY, linestyle="--", label=f"dataset cap {ledger.max_epsilon:g}")
    axes.set_xticks(xs, [f"{e.slot}\n{e.job_id[:14]}" for e in ledger.entries] if len(xs) <= 8 else None)
    axes.set_xlabel("ledger entry (slot, job)")
    axes.set_ylabel(f"epsilon at delta {ledger.delta:g}")
    axes.set_ylim(0, max(ledger.max_epsilon, *ys, 0.0) * 1.12)
    axes.set_xlim(0, len(xs) + 0.5)
    axes.legend(loc="lower right", fontsize=8)
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
                      textcoords="offset points", xytext=(-8, -14), ha="right", fontsize=8)
    axes.set_xlabel("epsilon spent by training at the evaluation step")
    axes.set_ylabel("accuracy (public evaluation)")
    axes.set_xlim(left=0)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)
