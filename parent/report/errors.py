"""Typed failures of `hermetic report` beyond the verifiers' own (which propagate unchanged)."""
from __future__ import annotations

from enclave.errors import ConfigError
from enclave.ledger.store import LedgerError

__all__ = ["LedgerEvidenceError", "ReportError"]


class ReportError(ConfigError):
    """An input of the report cannot be used (not a verification failure of the certificate)."""


class LedgerEvidenceError(LedgerError):
    """The dataset's budget ledger given with `--ledger` does not verify, or is not this job's."""
