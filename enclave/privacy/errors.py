"""Typed failures of the privacy accountants."""
from __future__ import annotations

from enclave.errors import ConfigError

__all__ = ["PrivacyParameterError", "BudgetSearchError"]


class PrivacyParameterError(ConfigError):
    """A sampling rate, noise multiplier, step count, delta, epsilon or accountant name is invalid."""


class BudgetSearchError(ConfigError):
    """No noise multiplier or step count meets the requested budget within the searched range."""
