"""Checking accountant inputs: every bad number is refused with a one-line reason."""
from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from enclave.privacy.errors import PrivacyParameterError

__all__ = [
    "check_delta",
    "check_epsilon",
    "check_q",
    "check_sigma",
    "check_steps",
]

def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PrivacyParameterError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if math.isnan(number):
        raise PrivacyParameterError(f"{name} must be a number, got NaN")
    return number


def check_q(value: Any) -> float:
    q = _real(value, "sampling rate q")
    if not 0.0 < q <= 1.0:
        raise PrivacyParameterError(f"sampling rate q must be in (0, 1], got {q!r}")
    return q


def check_sigma(value: Any) -> float:
    sigma = _real(value, "noise multiplier sigma")
    if not 0.0 < sigma < math.inf:
        raise PrivacyParameterError(f"noise multiplier sigma must be positive and finite, got {sigma!r}")
    return sigma


def check_steps(value: Any) -> int:
    if isinstance(value, bool):
        raise PrivacyParameterError("steps must be an integer, got bool")
    try:
        steps = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            steps = int(value)
        else:
            raise PrivacyParameterError(f"steps must be an integer, got {value!r}") from None
    if steps < 0:
        raise PrivacyParameterError(f"steps must be >= 0, got {steps}")
    return steps


def check_delta(value: Any) -> float:
    delta = _real(value, "delta")
    if not 0.0 < delta < 1.0:
        raise PrivacyParameterError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def check_epsilon(value: Any, name: str = "epsilon", allow_zero: bool = False) -> float:
    eps = _real(value, name)
    if not (eps >= 0.0 if allow_zero else eps > 0.0) or math.isinf(eps):
        bound = ">= 0" if allow_zero else "> 0"
        raise PrivacyParameterError(f"{name} must be finite and {bound}, got {eps!r}")
    return eps
