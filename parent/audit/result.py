"""The result of an empirical one-run privacy audit: what `hermetic audit --json` prints and `report --audit` reads.

The audit (Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run",
NeurIPS 2023) trains once with canaries, guesses which canaries were included, and
turns the number of correct guesses into a lower bound on epsilon that holds with the
stated confidence. It runs in-process on public or synthetic data, outside any enclave:
nothing attests it, so the report presents it as the operator's own statement, never as
evidence of the same standing as the certificate.

`parent.audit.canaries.audit_spec` returns an `EmpiricalAudit`, and `hermetic audit --json`
prints its `to_json()`. Read back, the file must be one JSON object with exactly those keys;
every value is type- and range-checked, and a file that fails any check is refused whole
(`AuditResultError`), so a report never shows half a result.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from parent.inputs import read_bounded

__all__ = ["MAX_AUDIT_RESULT_SIZE", "AuditResultError", "EmpiricalAudit", "parse_audit_result", "read_audit_result",
           "verdict"]

MAX_AUDIT_RESULT_SIZE = 64 * 1024
_MAX_TEXT = 256
#: The verdicts of a run that keeps its rule.
CONSISTENT, CAUGHT = "consistent", "caught"


class AuditResultError(ConfigError):
    """An empirical audit result file is not a well-formed result object."""


def verdict(*, control: bool, lower_bound: float, certified: float) -> str:
    """A noised run must not bound epsilon above the claim; a no-noise control must."""
    exceeds = lower_bound > certified
    if control:
        return CAUGHT if exceeds else "missed: the audit cannot tell a run without noise from the claim"
    return "VIOLATION: the implementation leaks more than the certificate says" if exceeds else CONSISTENT


@dataclass(frozen=True)
class EmpiricalAudit:
    """One empirical audit run, as its command reported it (module docstring)."""

    epsilon_certified: float  # the accountant's epsilon for the audited recipe
    epsilon_lower_bound: float  # what the guesses prove, at `confidence`
    ceiling: float  # the largest lower bound this many canaries and guesses could prove
    canaries: int
    canary_kind: str  # "dirac" or "gaussian"
    guesses: int
    correct: int
    confidence: float
    control: bool  # the control: trained with the noise switched off, so the bound must come out far above
    delta: float
    accountant: str
    sampling_rate: float
    noise_multiplier: float
    steps: int
    records: int
    seconds: float
    job: str
    verdict: str

    @property
    def holds(self) -> bool:
        """The run keeps its rule: a noised run is consistent, a control is caught."""
        return self.verdict == (CAUGHT if self.control else CONSISTENT)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FLOATS = ("epsilon_certified", "epsilon_lower_bound", "ceiling", "confidence", "delta", "sampling_rate",
           "noise_multiplier", "seconds")
_INTS = ("canaries", "guesses", "correct", "steps", "records")
_TEXTS = ("accountant", "canary_kind", "job", "verdict")
_KEYS = frozenset(f.name for f in fields(EmpiricalAudit))


def read_audit_result(path: Path) -> EmpiricalAudit:
    """Read and parse the file at `path`; AuditResultError for anything but a well-formed result."""
    data = read_bounded(str(path), MAX_AUDIT_RESULT_SIZE, "audit result", AuditResultError)
    return parse_audit_result(data, str(path))


def parse_audit_result(data: bytes, name: str = "audit result") -> EmpiricalAudit:
    """The result `data` (JSON bytes) holds; AuditResultError naming the first problem."""
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise AuditResultError(f"{name} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise AuditResultError(f"{name} is not a JSON object")
    keys = set(raw)
    if keys != _KEYS:
        missing, unknown = sorted(_KEYS - keys), sorted(repr(k)[:40] for k in keys - _KEYS)
        raise AuditResultError(f"{name}: keys wrong (missing {missing}, unknown {unknown})")
    values: dict[str, Any] = {}
    for key in _FLOATS:
        values[key] = _number(raw[key], f"{name}: {key}")
    for key in _INTS:
        values[key] = _integer(raw[key], f"{name}: {key}")
    for key in _TEXTS:
        values[key] = _text(raw[key], f"{name}: {key}")
    if type(raw["control"]) is not bool:
        raise AuditResultError(f"{name}: control is not true or false")
    values["control"] = raw["control"]
    audit = EmpiricalAudit(**values)
    _check_ranges(audit, name)
    return audit


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float):
        raise AuditResultError(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise AuditResultError(f"{what} is not a finite number >= 0")
    return number


def _integer(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise AuditResultError(f"{what} is not an integer >= 0")
    return value


def _text(value: Any, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= _MAX_TEXT or not value.isprintable():
        raise AuditResultError(f"{what} is not a printable text of 1..{_MAX_TEXT} characters")
    return value


def _check_ranges(audit: EmpiricalAudit, name: str) -> None:
    if not audit.correct <= audit.guesses <= audit.canaries:
        raise AuditResultError(f"{name}: correct ({audit.correct}) <= guesses ({audit.guesses}) <= canaries "
                               f"({audit.canaries}) does not hold")
    if not 0 < audit.confidence < 1:
        raise AuditResultError(f"{name}: confidence {audit.confidence!r} is not in (0, 1)")
    if not 0 < audit.delta < 1:
        raise AuditResultError(f"{name}: delta {audit.delta!r} is not in (0, 1)")
    if not 0 < audit.sampling_rate <= 1:
        raise AuditResultError(f"{name}: sampling_rate {audit.sampling_rate!r} is not in (0, 1]")
    if audit.epsilon_lower_bound > audit.ceiling * (1 + 1e-9):
        raise AuditResultError(f"{name}: epsilon_lower_bound {audit.epsilon_lower_bound!r} is above the ceiling "
                               f"{audit.ceiling!r} the canaries allow")
