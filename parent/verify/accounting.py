"""Recomputing a certificate's epsilon from its ledger, independently of what it states.

The verifier trusts no number the enclave wrote about privacy loss: it replays
the ledger through `enclave.privacy` with every accountant it knows. Anything
the accountant cannot digest counts as an inconsistent certificate, never as a
crash, because the ledger arrives from a file an attacker may have crafted
(behind a valid attestation only if the enclave itself misbehaved).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from enclave.certificate.body import CertificateBody, SearchRecord
from enclave.certificate.checks import search_charge
from enclave.certificate.errors import InconsistentCertificate
from enclave.errors import HermeticError
from enclave.privacy.accountants import ACCOUNTANTS, NAMES
from enclave.privacy.ledger import PrivacyLedger
from enclave.privacy.searches import compose

__all__ = ["REL_TOLERANCE", "recompute_body_epsilons", "recompute_epsilon", "recompute_search_epsilon"]

#: Stated values may differ from the replay only by float noise, never by a real amount.
REL_TOLERANCE = 1e-6


def recompute_epsilon(segments: Sequence[Mapping[str, Any]], delta: float, accountant: str) -> float:
    """Epsilon at `delta` of the composed `segments` ({"q", "sigma", "steps"}) under `accountant`."""
    if accountant not in ACCOUNTANTS:
        raise InconsistentCertificate(f"accountant {accountant[:32]!r} is not one of {', '.join(NAMES)}")
    try:
        ledger = PrivacyLedger(delta, accountant=accountant)
        for seg in segments:
            ledger.record(seg["q"], seg["sigma"], steps=seg["steps"])
        value = ledger.epsilon()
    except (HermeticError, ValueError, ArithmeticError) as err:
        raise InconsistentCertificate(
            f"the {accountant} accountant cannot replay the ledger: {err}"
        ) from None
    value = float(value)
    if math.isnan(value) or value < 0:
        raise InconsistentCertificate(f"the {accountant} accountant returned {value!r}")
    return value


def recompute_search_epsilon(search: SearchRecord, delta: float) -> float:
    """The whole search's epsilon at `delta`: repeat-and-select over its stated runs (RDP)."""
    charge = search_charge(search)
    try:
        value = float(compose([], [charge], delta, "rdp"))
    except (HermeticError, ValueError, ArithmeticError) as err:
        raise InconsistentCertificate(f"the search's epsilon cannot be recomputed: {err}") from None
    if math.isnan(value) or value < 0:
        raise InconsistentCertificate(f"the search's epsilon recomputed as {value!r}")
    return value


def recompute_body_epsilons(body: CertificateBody, delta: float) -> dict[str, float]:
    """Every accountant's epsilon of the body's job at `delta`: its ledger, or for a search (rdp only) the search."""
    if body.search is not None:
        return {"rdp": recompute_search_epsilon(body.search, delta)}
    return {name: recompute_epsilon(body.ledger, delta, name) for name in NAMES}
