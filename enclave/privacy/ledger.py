"""The privacy ledger: every (q, sigma) the trainer actually used, and for how many steps.

A ledger is what checkpoints carry and certificates state; its epsilon is always
recomputed from the segments, never stored. `to_dict()` holds only plain ints,
floats and strings so it serialises to CBOR/JSON unchanged.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from enclave.privacy.accountants import ACCOUNTANTS, PRIMARY, check_accountant
from enclave.privacy.errors import PrivacyParameterError
from enclave.privacy.params import check_delta, check_q, check_sigma, check_steps

__all__ = ["LEDGER_VERSION", "PrivacyLedger", "Segment", "compose_epsilon"]

LEDGER_VERSION = 1


@dataclass(frozen=True)
class Segment:
    """`steps` consecutive steps at sampling rate `q` with noise multiplier `sigma`."""

    q: float
    sigma: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", check_q(self.q))
        object.__setattr__(self, "sigma", check_sigma(self.sigma))
        object.__setattr__(self, "steps", check_steps(self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.q, "sigma": self.sigma, "steps": self.steps}

    @classmethod
    def from_triple(cls, item: Any) -> Segment:
        """A segment stored as [q float, sigma float, steps int], strict about types; PrivacyParameterError."""
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], float)
                or not isinstance(item[1], float) or isinstance(item[2], bool) or not isinstance(item[2], int)):
            raise PrivacyParameterError("a segment is [q float, sigma float, steps int]")
        return cls(item[0], item[1], item[2])


def compose_epsilon(segments: Iterable[Segment], delta: float, accountant: str) -> float:
    """Epsilon at `delta` of all `segments` composed, under `accountant`."""
    # Composition is commutative: equal (q, sigma) pairs pool their steps, and a canonical
    # order makes equal histories hit the same cache entry and give the same bits.
    pooled: dict[tuple[float, float], int] = {}
    for seg in segments:
        if seg.steps:
            key = (seg.q, seg.sigma)
            pooled[key] = pooled.get(key, 0) + seg.steps
    parts = tuple(sorted((q, sigma, steps) for (q, sigma), steps in pooled.items()))
    if not parts:
        return 0.0
    return ACCOUNTANTS[accountant].epsilon(parts, delta)


class PrivacyLedger:
    """Append-only history of Segments at a fixed delta."""

    def __init__(self, delta: float, accountant: str = PRIMARY, segments: Iterable[Segment] = ()) -> None:
        self._delta = check_delta(delta)
        self._accountant = check_accountant(accountant)
        self._segments: list[Segment] = []
        for seg in segments:
            if not isinstance(seg, Segment):
                raise PrivacyParameterError(f"ledger segments must be Segment, got {type(seg).__name__}")
            self._append(seg)

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def accountant(self) -> str:
        return self._accountant

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    @property
    def steps(self) -> int:
        return sum(seg.steps for seg in self._segments)

    def record(self, q: float, sigma: float, steps: int = 1) -> None:
        """Account `steps` more steps at (q, sigma), merged into the last segment if it matches."""
        self._append(Segment(q, sigma, steps))

    def _append(self, seg: Segment) -> None:
        if seg.steps == 0:
            return
        if self._segments and (self._segments[-1].q, self._segments[-1].sigma) == (seg.q, seg.sigma):
            last = self._segments[-1]
            self._segments[-1] = Segment(last.q, last.sigma, last.steps + seg.steps)
        else:
            self._segments.append(seg)

    def epsilon(self, accountant: str | None = None) -> float:
        """Epsilon spent so far at the ledger's delta (default: the ledger's accountant)."""
        chosen = self._accountant if accountant is None else check_accountant(accountant)
        return compose_epsilon(self._segments, self._delta, chosen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LEDGER_VERSION,
            "delta": self._delta,
            "accountant": self._accountant,
            "segments": [seg.to_dict() for seg in self._segments],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        if not isinstance(data, Mapping):
            raise PrivacyParameterError(f"a privacy ledger must be a mapping, got {type(data).__name__}")
        expected = {"version", "delta", "accountant", "segments"}
        if set(data) != expected:
            raise PrivacyParameterError(
                f"a privacy ledger has exactly the keys {', '.join(sorted(expected))}"
            )
        if data["version"] != LEDGER_VERSION or isinstance(data["version"], bool):
            raise PrivacyParameterError(f"unsupported privacy ledger version {data['version']!r}")
        raw = data["segments"]
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
            raise PrivacyParameterError("privacy ledger segments must be a list")
        segments = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or set(item) != {"q", "sigma", "steps"}:
                raise PrivacyParameterError(f"ledger segment {i} must have exactly the keys q, sigma, steps")
            segments.append(Segment(item["q"], item["sigma"], item["steps"]))
        return cls(data["delta"], data["accountant"], segments)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        return (f"PrivacyLedger(delta={self._delta!r}, accountant={self._accountant!r}, "
                f"segments={tuple(self._segments)!r})")
