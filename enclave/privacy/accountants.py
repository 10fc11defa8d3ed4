"""The accountant registry: every name the spec, ledger, trainer and certificate accept.

Both accountants are for add/remove-one neighbours and take a composition as
(q, sigma, steps) segments. "prv" (privacy loss distributions, pessimistic
discretisation) is the primary; "rdp" (Renyi DP) is the cross-check, never tighter.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from enclave.privacy import pld, rdp
from enclave.privacy.errors import PrivacyParameterError

__all__ = ["ACCOUNTANTS", "NAMES", "PRIMARY", "Accountant", "check_accountant"]

Composition = Sequence[tuple[float, float, int]]


@dataclass(frozen=True)
class Accountant:
    name: str
    description: str
    epsilon: Callable[[Composition, float], float]


ACCOUNTANTS: Mapping[str, Accountant] = MappingProxyType(
    {
        "prv": Accountant("prv", "privacy loss distributions (PLD/PRV), pessimistic", pld.epsilon),
        "rdp": Accountant("rdp", "Renyi DP with the improved conversion", rdp.epsilon),
    }
)
NAMES: tuple[str, ...] = tuple(ACCOUNTANTS)
PRIMARY = "prv"


def check_accountant(value: Any) -> str:
    """`value` if it names a registered accountant; PrivacyParameterError otherwise."""
    if not isinstance(value, str) or value not in ACCOUNTANTS:
        shown = value[:32] if isinstance(value, str) else type(value).__name__
        raise PrivacyParameterError(f"unknown accountant {shown!r}; expected one of {', '.join(NAMES)}")
    return value
