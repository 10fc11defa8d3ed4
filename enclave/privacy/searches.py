"""A hyper-parameter search as something a budget is charged for, and composition with one.

A `SearchCharge` is what a tuning job spends: its candidates' distinct (q, sigma, steps)
runs (hyper-parameters that do not change q or steps, such as the learning rate or the
clipping norm, are one run to the accountant), and the law of its trial count as
dp-accounting's (mean, shape). Its cost is `repeat_select.search_rdp`.

`compose` is the one composition rule for anything that may hold a search: without one
it is `compose_epsilon` under the caller's accountant, exactly as before searches
existed, so ledgers and certificates without searches keep their numbers; with one, every
part is composed in RDP (plain segments' curves plus each search's repeat-and-select
curve) and converted once, because the repeat-and-select bound exists only as an RDP
curve and RDP curves add under composition.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from enclave.privacy import rdp
from enclave.privacy.errors import PrivacyParameterError
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.privacy.repeat_select import MAX_MEAN, distribution_shape, search_rdp

__all__ = ["MAX_SEARCH_RUNS", "SearchCharge", "compose"]

# 16 batch sizes times 16 epoch counts: the most distinct runs a spec's grid can give.
MAX_SEARCH_RUNS = 256


@dataclass(frozen=True)
class SearchCharge:
    """The distinct runs a search may draw (sorted, no repeats), and its trial count's law."""

    runs: tuple[Segment, ...]
    distribution: str
    mean: float
    shape: float | None = None  # given for the truncated negative binomial only

    def __post_init__(self) -> None:
        if not isinstance(self.runs, tuple) or not 0 < len(self.runs) <= MAX_SEARCH_RUNS:
            raise PrivacyParameterError(f"a search has 1..{MAX_SEARCH_RUNS} distinct runs")
        if not all(isinstance(r, Segment) and r.steps > 0 for r in self.runs):
            raise PrivacyParameterError("a search's runs each take at least one step")
        keys = [(r.q, r.sigma, r.steps) for r in self.runs]
        if keys != sorted(set(keys)):
            raise PrivacyParameterError("a search's runs must be sorted and distinct")
        if (not isinstance(self.mean, float) or not math.isfinite(self.mean)
                or not 1.0 <= self.mean <= MAX_MEAN):
            raise PrivacyParameterError(f"a search's mean number of trials is in [1, {MAX_MEAN:g}]")
        if self.shape is not None and not isinstance(self.shape, float):
            raise PrivacyParameterError("a search's shape is a float or null")
        distribution_shape(self.distribution, self.shape)

    @classmethod
    def of(cls, runs: Iterable[tuple[float, float, int]], distribution: str, mean: float,
           shape: float | None = None) -> SearchCharge:
        """From runs in any order, repeats dropped."""
        distinct = sorted({(float(q), float(s), int(t)) for q, s, t in runs})
        return cls(tuple(Segment(q, s, t) for q, s, t in distinct), distribution, float(mean),
                   None if shape is None else float(shape))

    @property
    def shape_value(self) -> float:
        """The RepeatAndSelect shape: 0 logarithmic, 1 geometric, inf Poisson, else the TNB's own."""
        return distribution_shape(self.distribution, self.shape)

    def curve(self) -> rdp.FloatArray:
        return search_rdp([(r.q, r.sigma, r.steps) for r in self.runs], self.mean, self.shape_value)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [[r.q, r.sigma, r.steps] for r in self.runs], "distribution": self.distribution,
                "mean": self.mean, "shape": self.shape}

    @classmethod
    def from_dict(cls, raw: Any) -> SearchCharge:
        """The inverse of `to_dict`, strict about types (PrivacyParameterError)."""
        if not isinstance(raw, dict) or set(raw) != {"runs", "distribution", "mean", "shape"}:
            raise PrivacyParameterError("a search is a map of exactly runs, distribution, mean and shape")
        runs = raw["runs"]
        if not isinstance(runs, list) or len(runs) > MAX_SEARCH_RUNS:
            raise PrivacyParameterError(f"a search's runs are a list of at most {MAX_SEARCH_RUNS}")
        parsed = [Segment.from_triple(item) for item in runs]
        if not isinstance(raw["distribution"], str):
            raise PrivacyParameterError("a search's distribution is a string")
        return cls(tuple(parsed), raw["distribution"], raw["mean"], raw["shape"])


def compose(segments: Sequence[Segment], searches: Sequence[SearchCharge], delta: float, accountant: str) -> float:
    """Epsilon at `delta` of plain `segments` and `searches` together (see the module docstring)."""
    if not searches:
        return compose_epsilon(segments, delta, accountant)
    parts = [(s.q, s.sigma, s.steps) for s in segments if s.steps]
    curve = rdp.rdp_curve(parts) + np.sum([search.curve() for search in searches], axis=0)
    return rdp.epsilon_from_rdp(rdp.ORDERS, curve, delta)
