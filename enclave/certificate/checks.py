"""Consistency of a certificate body with itself and with the sealed datasets' budgets.

These checks need nothing but the body: the enclave runs them before it signs
(an inconsistent certificate never leaves) and the verifier runs them after the
attestation binding holds. Replaying the ledger is the verifier's alone
(`parent.verify.accounting`).

A tuning job's body (`search`) is checked for what a search must look like: RDP
accounting with its one epsilon, a selected run that is one of the search's runs at
the body's noise, the selected score being the selection metric released, and no
run, model or checkpoint at all when no trial ran.
"""
from __future__ import annotations

import hmac
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from enclave.certificate.body import NO_OUTPUT, CertificateBody, SearchRecord
from enclave.certificate.errors import (
    BudgetExceeded,
    CertificatePcrMismatch,
    InconsistentCertificate,
)
from enclave.errors import HermeticError, SealedDataError
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.ledger import Segment
from enclave.privacy.searches import SearchCharge
from enclave.sealed.format import validate_encryption_context

__all__ = [
    "REQUIRED_PCRS",
    "check_attested_pcrs",
    "check_body",
    "format_time",
    "metrics_epsilon",
    "parse_time",
    "tightest_budget",
]

#: The image measurements: without them a certificate names no code.
REQUIRED_PCRS = (0, 1, 2)
# The ledger's own slack for the cap's float form (enclave.ledger.reserve.BUDGET_RTOL).
DATASET_EPSILON_RTOL = 1e-9
_PCR_HEX_LENGTHS = frozenset({64, 96, 128})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_METRIC_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Kinds computed from public data or from nothing private: they must cost nothing.
FREE_METRIC_KINDS = frozenset({"public_eval", "data_independent"})
#: Kinds released through a DP mechanism: they must say what they cost.
DP_METRIC_PREFIX = "dp_"


def format_time(when: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a "Z", the form certificate times use."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("certificate times must be timezone-aware")
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str, what: str) -> datetime:
    """Parse an RFC 3339 UTC ("...Z") time; InconsistentCertificate otherwise."""
    if not _RFC3339_UTC.fullmatch(text):
        raise InconsistentCertificate(f"{what} {text[:40]!r} is not an RFC 3339 UTC time")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InconsistentCertificate(f"{what} {text[:40]!r} is not a valid date and time") from None


def metrics_epsilon(body: CertificateBody) -> float:
    """Epsilon spent on released DP metrics (basic composition, added to training's)."""
    return math.fsum(metric.epsilon_cost for metric in body.metrics)


def tightest_budget(body: CertificateBody) -> tuple[float, float]:
    """(max_epsilon, delta): the smallest of each over the datasets' encryption contexts."""
    if not body.datasets:
        raise InconsistentCertificate("certificate lists no private dataset")
    epsilons, deltas = [], []
    for record in body.datasets:
        context = record.encryption_context
        try:
            validate_encryption_context(context)
        except SealedDataError as err:
            raise InconsistentCertificate(f"dataset {record.dataset_id[:64]!r}: {err}") from None
        epsilons.append(float(context["max_epsilon"]))
        deltas.append(float(context["delta"]))
    return min(epsilons), min(deltas)


def _sha256(value: str, what: str) -> None:
    if not _SHA256_HEX.fullmatch(value):
        raise InconsistentCertificate(f"{what} is not 64 lowercase hex digits")


def _check_pcrs(body: CertificateBody) -> None:
    for index, value in body.pcrs.items():
        if not 0 <= index < 32:
            raise InconsistentCertificate(f"PCR index {index} is outside 0..31")
        if len(value) not in _PCR_HEX_LENGTHS or not _HEX.fullmatch(value):
            raise InconsistentCertificate(f"PCR{index} is not 32, 48 or 64 bytes of lowercase hex")
    missing = [index for index in REQUIRED_PCRS if index not in body.pcrs]
    if missing:
        raise CertificatePcrMismatch(
            f"certificate does not list PCR{', PCR'.join(map(str, missing))}: it names no enclave image"
        )


def search_charge(search: SearchRecord) -> SearchCharge:
    """The search a body states, as the accountant takes it; InconsistentCertificate if it is not one."""
    try:
        return SearchCharge(tuple(Segment(r["q"], r["sigma"], r["steps"]) for r in search.runs),
                            search.distribution, search.mean, search.shape)
    except HermeticError as err:
        raise InconsistentCertificate(f"the certificate's search is not one the accountant takes: {err}") from None


def _check_search(body: CertificateBody, search: SearchRecord) -> None:
    charge = search_charge(search)
    if body.accountant != "rdp" or set(body.epsilon) != {"rdp"}:
        raise InconsistentCertificate("a search is accounted in RDP alone: accountant and epsilon must be rdp only")
    if any(run.sigma != body.noise_multiplier for run in charge.runs):
        raise InconsistentCertificate("the search's runs do not all use the body's noise_multiplier")
    if search.trials == 0:
        if body.ledger or body.steps or search.selected or search.score is not None or body.metrics:
            raise InconsistentCertificate("a search that ran no trial states no run, selection, score or metric")
        if body.model_sha256 != NO_OUTPUT or body.checkpoint_sha256 != NO_OUTPUT:
            raise InconsistentCertificate("a search that ran no trial released no model or checkpoint")
        return
    if len(body.ledger) != 1:
        raise InconsistentCertificate("a search's certificate states the selected trial's one segment")
    only = body.ledger[0]
    if Segment(only["q"], only["sigma"], only["steps"]) not in charge.runs:
        raise InconsistentCertificate("the selected trial's run is not one of the search's runs")
    if not search.selected or set(search.selected) != set(search.grid):
        raise InconsistentCertificate("the selected candidate must set every key of the grid")
    for key, value in search.selected.items():
        if value not in search.grid[key]:
            raise InconsistentCertificate(f"the selected {key} is not one of the grid's values")
    released = [m.value for m in body.metrics if m.name == search.metric]
    if released != [search.score]:
        raise InconsistentCertificate("the selected score must be the one release of the selection metric")


def _check_dp_parameters(body: CertificateBody) -> None:
    if body.search is not None and body.search.trials == 0:
        _check_search(body, body.search)
        return
    if not 0.0 < body.sampling_rate <= 1.0:
        raise InconsistentCertificate(f"sampling_rate {body.sampling_rate!r} is outside (0, 1]")
    if not body.noise_multiplier > 0.0:
        raise InconsistentCertificate(f"noise_multiplier {body.noise_multiplier!r} is not positive")
    if not body.max_grad_norm > 0.0:
        raise InconsistentCertificate(f"max_grad_norm {body.max_grad_norm!r} is not positive")
    if body.steps < 1:
        raise InconsistentCertificate("steps must be at least 1")
    if not body.ledger:
        raise InconsistentCertificate("ledger has no segment")
    for i, segment in enumerate(body.ledger):
        if not 0.0 < segment["q"] <= 1.0:
            raise InconsistentCertificate(f"ledger[{i}].q {segment['q']!r} is outside (0, 1]")
        if not segment["sigma"] > 0.0:
            raise InconsistentCertificate(f"ledger[{i}].sigma {segment['sigma']!r} is not positive")
        if segment["steps"] < 1:
            raise InconsistentCertificate(f"ledger[{i}].steps must be at least 1")
    if body.search is not None:
        _check_search(body, body.search)
    total = sum(segment["steps"] for segment in body.ledger)
    if total != body.steps:
        raise InconsistentCertificate(f"steps {body.steps} differs from the ledger's {total}")
    if len(body.ledger) == 1:
        only = body.ledger[0]
        if only["q"] != body.sampling_rate or only["sigma"] != body.noise_multiplier:
            raise InconsistentCertificate(
                "the single ledger segment's q/sigma differ from sampling_rate/noise_multiplier"
            )


def _check_accounting(body: CertificateBody) -> None:
    if body.accountant not in ACCOUNTANT_NAMES:
        raise InconsistentCertificate(
            f"accountant {body.accountant!r} is not one of {', '.join(ACCOUNTANT_NAMES)}"
        )
    unknown = sorted(set(body.epsilon) - set(ACCOUNTANT_NAMES))
    if unknown:
        raise InconsistentCertificate(f"epsilon names unknown accountant(s) {unknown}")
    if body.accountant not in body.epsilon:
        raise InconsistentCertificate(f"epsilon has no value for the primary accountant {body.accountant!r}")
    for name, value in body.epsilon.items():
        if not value > 0.0:
            raise InconsistentCertificate(f"epsilon[{name!r}] {value!r} is not positive")
    if not 0.0 < body.delta < 1.0:
        raise InconsistentCertificate(f"delta {body.delta!r} is outside (0, 1)")


def _check_budget(body: CertificateBody) -> None:
    max_epsilon, budget_delta = body.budget["max_epsilon"], body.budget["delta"]
    if not max_epsilon > 0.0 or not 0.0 < budget_delta < 1.0:
        raise InconsistentCertificate("budget max_epsilon must be > 0 and delta in (0, 1)")
    context_epsilon, context_delta = tightest_budget(body)
    if max_epsilon != context_epsilon or budget_delta != context_delta:
        raise InconsistentCertificate(
            f"budget (max_epsilon {max_epsilon!r}, delta {budget_delta!r}) is not the datasets' "
            f"sealed budget (max_epsilon {context_epsilon!r}, delta {context_delta!r})"
        )
    if body.delta > budget_delta:
        raise BudgetExceeded(f"delta {body.delta!r} is above the budget's {budget_delta!r}")
    spent = body.epsilon[body.accountant] + metrics_epsilon(body)
    if spent > max_epsilon:
        raise BudgetExceeded(f"stated epsilon {spent!r} is above the budget's max_epsilon {max_epsilon!r}")
    # Every job on each dataset together, as its ledger held them: within that dataset's own cap.
    for record in body.datasets:
        name, cap = record.dataset_id[:64], float(record.encryption_context["max_epsilon"])
        if not record.epsilon >= 0.0 or not record.dataset_epsilon >= 0.0:
            raise InconsistentCertificate(f"dataset {name!r} states a negative epsilon")
        if record.epsilon > record.dataset_epsilon * (1.0 + DATASET_EPSILON_RTOL):
            raise InconsistentCertificate(
                f"dataset {name!r}: this job's epsilon {record.epsilon!r} is above the dataset's cumulative "
                f"{record.dataset_epsilon!r}"
            )
        if record.dataset_epsilon > cap * (1.0 + DATASET_EPSILON_RTOL):
            raise BudgetExceeded(
                f"dataset {name!r} epsilon {record.dataset_epsilon!r} (every job on it) is above its "
                f"max_epsilon {cap!r}"
            )


def _check_datasets(body: CertificateBody) -> None:
    seen: set[str] = set()
    for record in body.datasets:
        name = record.dataset_id[:64]
        if record.dataset_id in seen:
            raise InconsistentCertificate(f"dataset {name!r} is listed twice")
        seen.add(record.dataset_id)
        _sha256(record.sealed_sha256, f"dataset {name!r} sealed_sha256")
        context = record.encryption_context
        if context.get("dataset_id") != record.dataset_id:
            raise InconsistentCertificate(f"dataset {name!r} differs from its encryption context's id")
        if context.get("record_count") != str(record.records):
            raise InconsistentCertificate(
                f"dataset {name!r} records {record.records} differ from its encryption context's"
            )
    for public in body.public_datasets:
        _sha256(public.sha256, f"public dataset {public.name[:64]!r} sha256")


def _check_metrics(body: CertificateBody) -> None:
    for metric in body.metrics:
        name = metric.name[:64]
        if not _METRIC_KIND.fullmatch(metric.kind):
            raise InconsistentCertificate(f"metric {name!r} kind {metric.kind[:64]!r} is malformed")
        if metric.step > body.steps:
            raise InconsistentCertificate(f"metric {name!r} step {metric.step} is after the last step")
        if metric.kind in FREE_METRIC_KINDS:
            if metric.epsilon_cost != 0.0:
                raise InconsistentCertificate(f"{metric.kind} metric {name!r} must cost no epsilon")
        elif metric.kind.startswith(DP_METRIC_PREFIX):
            if not metric.epsilon_cost > 0.0:
                raise InconsistentCertificate(f"DP metric {name!r} must state a positive epsilon cost")
        else:
            raise InconsistentCertificate(f"metric {name!r} kind {metric.kind!r} is neither free nor DP")


def check_body(body: CertificateBody) -> None:
    """Raise the first inconsistency of `body` (InconsistentCertificate, BudgetExceeded, PCRs)."""
    _sha256(body.spec_sha256, "spec_sha256")
    _sha256(body.model_spec_sha256, "model_spec_sha256")
    _sha256(body.model_sha256, "model_sha256")
    _sha256(body.checkpoint_sha256, "checkpoint_sha256")
    if body.resumed_from is not None:
        _sha256(body.resumed_from.sealed_sha256, "resumed_from sealed_sha256")
        # A resume continues the run: its checkpoint's step is within the steps certified.
        if body.resumed_from.step > body.steps:
            raise InconsistentCertificate(
                f"resumed_from step {body.resumed_from.step} is beyond the {body.steps} steps certified"
            )
    if body.audit_log_sha256 is not None:
        _sha256(body.audit_log_sha256, "audit_log_sha256")
        # A chain holds at least its session_start and its closing certificate_issuing.
        if body.audit_log_events is None or body.audit_log_events < 2:
            raise InconsistentCertificate("audit_log_events is fewer than the 2 events every chain holds")
    _check_pcrs(body)
    _check_dp_parameters(body)
    _check_accounting(body)
    _check_datasets(body)
    # Metric costs are validated (non-negative) before the budget adds them up.
    _check_metrics(body)
    _check_budget(body)
    started = parse_time(body.started_at, "started_at")
    finished = parse_time(body.finished_at, "finished_at")
    if finished < started:
        raise InconsistentCertificate("finished_at is before started_at")


def check_attested_pcrs(body: CertificateBody, attested: Mapping[int, bytes]) -> None:
    """Every PCR the body lists (PCR0/1/2 at least) must equal the attested value."""
    _check_pcrs(body)
    differing = [
        index for index, value in body.pcrs.items()
        if attested.get(index) is None or not hmac.compare_digest(attested[index], bytes.fromhex(value))
    ]
    if differing:
        raise CertificatePcrMismatch(
            f"certificate PCR{', PCR'.join(map(str, differing))} differ from the attested enclave's"
        )
