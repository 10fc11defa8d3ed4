from __future__ import annotations

import pytest

import enclave.privacy.ledger
from enclave.certificate.errors import InconsistentCertificate
from parent.verify.accounting import recompute_epsilon

SEGMENT = {"q": 0.01, "sigma": 1.1, "steps": 100}


def test_unknown_accountant_is_refused() -> None:
    with pytest.raises(InconsistentCertificate, match="moments"):
        recompute_epsilon([SEGMENT], 1e-5, "moments")


def test_composition_of_segments_is_at_least_each_part() -> None:
    first = recompute_epsilon([SEGMENT], 1e-5, "prv")
    both = recompute_epsilon([SEGMENT, {"q": 0.02, "sigma": 1.5, "steps": 40}], 1e-5, "prv")
    assert both > first > 0


def test_rdp_is_not_tighter_than_prv() -> None:
    assert recompute_epsilon([SEGMENT], 1e-5, "rdp") >= recompute_epsilon([SEGMENT], 1e-5, "prv")


@pytest.mark.parametrize("failure", [ValueError("bad q"), OverflowError("too big")])
def test_accountant_failures_become_inconsistency(monkeypatch: pytest.MonkeyPatch,
                                                  failure: Exception) -> None:
    def broken(*args: object, **kwargs: object) -> float:
        raise failure

    monkeypatch.setattr(enclave.privacy.ledger, "compose_epsilon", broken)
    with pytest.raises(InconsistentCertificate, match="cannot replay"):
        recompute_epsilon([SEGMENT], 1e-5, "prv")


def test_nonsense_results_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enclave.privacy.ledger, "compose_epsilon", lambda *a, **k: float("nan"))
    with pytest.raises(InconsistentCertificate):
        recompute_epsilon([SEGMENT], 1e-5, "prv")
