from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from enclave.certificate.body import CertificateBody, DatasetRecord, ReleasedMetric, ResumedFrom
from enclave.certificate.checks import check_attested_pcrs, check_body, metrics_epsilon, tightest_budget
from enclave.certificate.errors import BudgetExceeded, CertificatePcrMismatch, InconsistentCertificate
from tests.support.certificates import (
    MAX_EPSILON,
    PCRS,
    context,
    make_body,
    replace,
    sha256_hex,
)


def test_consistent_body_passes() -> None:
    check_body(make_body())
    body = make_body()
    check_body(replace(body, resumed_from=ResumedFrom("ab" * 32, body.steps)))


def test_heterogeneous_ledger_passes_with_any_top_level_parameters() -> None:
    ledger = [{"q": 0.01, "sigma": 1.1, "steps": 60}, {"q": 0.02, "sigma": 1.5, "steps": 40}]
    check_body(make_body(ledger=ledger, sampling_rate=0.02, noise_multiplier=1.5))


def _dataset(**changes: Any) -> DatasetRecord:
    fields = {"dataset_id": "patients-2024", "sealed_sha256": sha256_hex("sealed"),
              "key_id": "alias/hospital-a", "encryption_context": context(), "records": 60000,
              "epsilon": make_body().datasets[0].epsilon, "dataset_epsilon": 2.5}
    fields.update(changes)
    return DatasetRecord(**fields)


def _metric(**changes: Any) -> ReleasedMetric:
    fields = {"name": "m", "value": 1.0, "kind": "public_eval", "step": 1, "epsilon_cost": 0.0}
    fields.update(changes)
    return ReleasedMetric(**fields)


Change = Callable[[CertificateBody], CertificateBody]

INCONSISTENT: list[tuple[str, Change]] = [
    ("q zero", lambda b: replace(b, sampling_rate=0.0, ledger=[{"q": 0.0, "sigma": 1.1, "steps": 100}])),
    ("q above one", lambda b: replace(b, sampling_rate=1.5, ledger=[{"q": 1.5, "sigma": 1.1, "steps": 100}])),
    ("sigma zero", lambda b: replace(b, noise_multiplier=0.0, ledger=[{"q": 0.01, "sigma": 0.0, "steps": 100}])),
    ("sigma negative in segment", lambda b: replace(b, ledger=[
        {"q": 0.01, "sigma": 1.1, "steps": 50}, {"q": 0.01, "sigma": -1.0, "steps": 50}])),
    ("segment q above one", lambda b: replace(b, ledger=[
        {"q": 0.01, "sigma": 1.1, "steps": 50}, {"q": 1.01, "sigma": 1.1, "steps": 50}])),
    ("segment with zero steps", lambda b: replace(b, ledger=[
        {"q": 0.01, "sigma": 1.1, "steps": 100}, {"q": 0.01, "sigma": 1.1, "steps": 0}])),
    ("C zero", lambda b: replace(b, max_grad_norm=0.0)),
    ("resumed beyond the steps", lambda b: replace(b, resumed_from=ResumedFrom("ab" * 32, b.steps + 1))),
    ("resumed from no sha256", lambda b: replace(b, resumed_from=ResumedFrom("checkpoint", 1))),
    ("steps differ from ledger", lambda b: replace(b, steps=99)),
    ("zero steps", lambda b: replace(b, steps=0, ledger=[{"q": 0.01, "sigma": 1.1, "steps": 0}])),
    ("empty ledger", lambda b: replace(b, ledger=[])),
    ("single segment q differs", lambda b: replace(b, sampling_rate=0.02)),
    ("single segment sigma differs", lambda b: replace(b, noise_multiplier=1.2)),
    ("delta zero", lambda b: replace(b, delta=0.0)),
    ("unknown accountant", lambda b: replace(b, accountant="moments", epsilon={"moments": 1.0})),
    ("unknown stated accountant", lambda b: replace(b, epsilon={**b.epsilon, "gdp": 1.0})),
    ("primary not stated", lambda b: replace(b, epsilon={"rdp": b.epsilon["rdp"]})),
    ("zero epsilon", lambda b: replace(b, epsilon={"prv": 0.0, "rdp": b.epsilon["rdp"]})),
    ("finished before started", lambda b: replace(b, started_at=b.finished_at,
                                                   finished_at=b.started_at)),
    ("time not UTC", lambda b: replace(b, started_at="2025-01-01T00:00:00+01:00")),
    ("time not a date", lambda b: replace(b, started_at="2025-13-01T00:00:00Z")),
    ("spec hash not hex", lambda b: replace(b, spec_sha256="Z" * 64)),
    ("model spec hash short", lambda b: replace(b, model_spec_sha256="ab")),
    ("model hash uppercase", lambda b: replace(b, model_sha256=b.model_sha256.upper())),
    ("checkpoint hash short", lambda b: replace(b, checkpoint_sha256="ab")),
    ("sealed hash not hex", lambda b: replace(b, datasets=(_dataset(sealed_sha256="xyz"),))),
    ("public hash not hex", lambda b: replace(
        b, public_datasets=(replace(b.public_datasets[0], sha256="nothex"),))),
    ("no dataset", lambda b: replace(b, datasets=())),
    ("dataset twice", lambda b: replace(b, datasets=(_dataset(), _dataset()))),
    ("context not sealed-v1", lambda b: replace(b, datasets=(_dataset(
        encryption_context={**context(), "owner": "x", "extra": "y"}),))),
    ("context id differs", lambda b: replace(b, datasets=(_dataset(dataset_id="other"),))),
    ("records differ from context", lambda b: replace(b, datasets=(_dataset(records=59999),))),
    ("budget epsilon not the sealed one", lambda b: replace(
        b, budget={"max_epsilon": 9.0, "delta": b.budget["delta"]})),
    ("budget delta not the sealed one", lambda b: replace(
        b, budget={"max_epsilon": MAX_EPSILON, "delta": 1e-6}, delta=1e-6)),
    ("budget looser than one of two datasets", lambda b: replace(b, datasets=(
        _dataset(), _dataset(dataset_id="bank", encryption_context=context("bank", max_epsilon=4.0),
                             records=60000)))),
    ("PCR hex malformed", lambda b: replace(b, pcrs={**b.pcrs, 0: "zz" * 48})),
    ("PCR index out of range", lambda b: replace(b, pcrs={**b.pcrs, 40: "00" * 48})),
    ("metric kind unknown", lambda b: replace(b, metrics=(_metric(kind="train_loss"),))),
    ("metric kind malformed", lambda b: replace(b, metrics=(_metric(kind="Public Eval"),))),
    ("free metric with cost", lambda b: replace(b, metrics=(_metric(epsilon_cost=0.1),))),
    ("dp metric without cost", lambda b: replace(b, metrics=(_metric(kind="dp_count"),))),
    ("negative dp cost", lambda b: replace(b, metrics=(_metric(kind="dp_count", epsilon_cost=-1.0),))),
    ("metric after last step", lambda b: replace(b, metrics=(_metric(step=101),))),
]


@pytest.mark.parametrize("change", [c for _, c in INCONSISTENT], ids=[n for n, _ in INCONSISTENT])
def test_inconsistencies_are_refused(change: Change) -> None:
    body = change(make_body())
    with pytest.raises(InconsistentCertificate):
        check_body(body)


def test_missing_image_pcrs_are_a_pcr_error() -> None:
    body = make_body()
    without_pcr1 = {i: v for i, v in body.pcrs.items() if i != 1}
    with pytest.raises(CertificatePcrMismatch, match="PCR1"):
        check_body(replace(body, pcrs=without_pcr1))


def test_stated_epsilon_above_budget() -> None:
    body = make_body()
    with pytest.raises(BudgetExceeded, match="max_epsilon"):
        check_body(replace(body, epsilon={**body.epsilon, "prv": MAX_EPSILON + 0.001}))
    # The cross-check accountant does not govern the budget.
    check_body(replace(body, epsilon={**body.epsilon, "rdp": MAX_EPSILON + 5.0}))


def test_dp_metric_costs_count_against_the_budget() -> None:
    body = make_body()
    room = MAX_EPSILON - body.epsilon["prv"]
    fits = replace(body, metrics=(_metric(kind="dp_count", epsilon_cost=room / 2),) * 2)
    check_body(fits)
    assert metrics_epsilon(fits) == pytest.approx(room)
    over = replace(body, metrics=(_metric(kind="dp_count", epsilon_cost=room / 2 + 0.01),) * 2)
    with pytest.raises(BudgetExceeded):
        check_body(over)


def test_delta_above_budget() -> None:
    with pytest.raises(BudgetExceeded, match="delta"):
        check_body(make_body(delta=2e-5))
    check_body(make_body(delta=1e-6))  # a smaller delta is fine


def test_budget_is_the_tightest_dataset_budget() -> None:
    two = (_dataset(), _dataset(dataset_id="bank", encryption_context=context("bank", max_epsilon=4.0,
                                                                              delta=1e-6)))
    body = make_body(datasets=two, budget={"max_epsilon": 4.0, "delta": 1e-6}, delta=1e-6)
    assert tightest_budget(body) == (4.0, 1e-6)
    check_body(body)


def test_attested_pcrs_must_match_every_listed_index() -> None:
    body = make_body()
    check_attested_pcrs(body, PCRS)
    with pytest.raises(CertificatePcrMismatch, match="PCR3"):
        check_attested_pcrs(body, {**PCRS, 3: bytes(48)})
    with pytest.raises(CertificatePcrMismatch, match="PCR3"):
        check_attested_pcrs(body, {i: v for i, v in PCRS.items() if i != 3})


def test_a_dataset_epsilon_above_the_cap_is_refused() -> None:
    # Every job on the dataset together, as its ledger held them, must fit the sealed cap too.
    check_body(make_body(datasets=(_dataset(dataset_epsilon=MAX_EPSILON),)))
    with pytest.raises(BudgetExceeded, match="dataset 'patients-2024' epsilon"):
        check_body(make_body(datasets=(_dataset(dataset_epsilon=MAX_EPSILON * 1.01),)))


def test_each_dataset_epsilon_is_held_to_its_own_cap() -> None:
    # Two owners: the tighter cap binds its own dataset, not the other's.
    tight = _dataset(dataset_id="clinic-b", encryption_context=context("clinic-b", max_epsilon=4.0),
                     dataset_epsilon=4.0)
    loose = _dataset(dataset_epsilon=7.0)
    check_body(make_body(datasets=(loose, tight), budget={"max_epsilon": 4.0, "delta": 1e-5}))
    over = dataclasses.replace(tight, dataset_epsilon=4.5)
    with pytest.raises(BudgetExceeded, match="dataset 'clinic-b' epsilon 4.5"):
        check_body(make_body(datasets=(loose, over), budget={"max_epsilon": 4.0, "delta": 1e-5}))


def test_a_job_epsilon_above_its_datasets_cumulative_is_refused() -> None:
    with pytest.raises(InconsistentCertificate, match="above the dataset's cumulative"):
        check_body(make_body(datasets=(_dataset(epsilon=3.0, dataset_epsilon=2.5),)))
    with pytest.raises(InconsistentCertificate, match="negative"):
        check_body(make_body(datasets=(_dataset(epsilon=-1.0),)))
