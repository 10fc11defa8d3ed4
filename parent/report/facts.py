"""Every fact the compliance report states, computed only from inputs that verified.

`gather_facts` runs the same checks as the verify commands, with their own functions:
the certificate (`verify_certificate`, pinned to the caller's PCRs and root), the
sealed files and job spec it must be about (`check_sealed`, `check_spec`), the
session's audit log against the head the certificate states (`verify_audit_log`) and
each dataset's budget ledger (`budget_report`), verified with the ledger public key the
attested certificate carries in the dataset's encryption context. Any failure raises
that check's typed error and nothing is computed further. The numbers derived here
(the epsilon curve, epsilon at each evaluation) come from the project's accountants
replaying the certified ledger, never from a value the certificate merely states.

`--ledger` names where to read the ledger: a directory holding one sub-directory per
dataset id (a local appliance's `STATE/ledger`), `local:/DIR`, or `s3://BUCKET/PREFIX?owner=ACCOUNT`.
Whatever it names, the dataset id, the public key, the cap and delta are the
certificate's, and unprotected (local) slots count only when the certificate's own
location is a local one, as the enclave counted them.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enclave.audit_log import AuditRecord, decode_log
from enclave.certificate.body import CertificateBody, DatasetRecord
from enclave.certificate.checks import metrics_epsilon
from enclave.ledger.local import LocalDirectoryStore
from enclave.ledger.location import LOCAL_SCHEME, S3_SCHEME
from enclave.sealed.format import LEDGER_CONTEXT_KEY
from parent.audit.result import EmpiricalAudit
from parent.budget import budget_report, open_ledger_store
from parent.report.errors import LedgerEvidenceError
from parent.verify.accounting import REL_TOLERANCE, recompute_epsilon
from parent.verify.audit import verify_audit_log
from parent.verify.certificate import VerifiedCertificate, verify_certificate
from parent.verify.policy import AttestationPolicy
from parent.verify.roots import AWS_NITRO_ROOT_G1_SHA256
from parent.verify.subject import SealedFile, check_sealed, check_spec

__all__ = [
    "AccuracyPoint",
    "AuditEventFact",
    "AuditTrailFact",
    "CURVE_POINTS",
    "DatasetFact",
    "LedgerEntryFact",
    "LedgerFact",
    "MAX_EVENT_ROWS",
    "ReportFacts",
    "SpecPin",
    "epsilon_curve",
    "gather_facts",
]

log = logging.getLogger(__name__)

#: Points of the epsilon-over-steps curve (the accountant's own epsilon at each).
CURVE_POINTS = 50
#: Events listed one per row; a longer log is summarised by type only past this many.
MAX_EVENT_ROWS = 400
_MAX_FIELD_TEXT = 72


@dataclass(frozen=True)
class SpecPin:
    """The job spec the caller holds: its canonical SHA-256 and its model's."""

    name: str
    sha256: str
    model_sha256: str | None


@dataclass(frozen=True)
class DatasetFact:
    dataset_id: str
    sealed_sha256: str
    key_id: str
    owner: str
    records: int
    epsilon: float  # this job's, at the dataset's delta, as certified (checked against the replay)
    dataset_epsilon: float  # every job on it so far, this one included, as the enclave's ledger held it
    max_epsilon: float
    delta: float
    ledger_location: str  # as certified (the encryption context)


@dataclass(frozen=True)
class AccuracyPoint:
    name: str
    step: int
    value: float
    epsilon: float  # training's epsilon after `step` steps, replayed from the ledger


@dataclass(frozen=True)
class LedgerEntryFact:
    slot: int
    job_id: str
    created_at: str
    steps: int
    cumulative_epsilon: float
    protected: bool
    this_job: bool


@dataclass(frozen=True)
class LedgerFact:
    dataset_id: str
    read_from: str  # the location the report read
    certified_location: str  # the one the dataset's encryption context names
    max_epsilon: float
    delta: float
    accountant: str
    spent_epsilon: float
    remaining_epsilon: float
    entries: tuple[LedgerEntryFact, ...]
    ignored: int
    all_protected: bool
    job_cumulative_epsilon: float  # the ledger's epsilon after this job's (last) entry
    certified_dataset_epsilon: float
    note: str | None = None

    @property
    def agrees(self) -> bool:
        """The ledger's epsilon after this job's entry is what the certificate says it held then."""
        return abs(self.job_cumulative_epsilon - self.certified_dataset_epsilon) <= 1e-6 * max(
            1.0, self.certified_dataset_epsilon)


@dataclass(frozen=True)
class AuditEventFact:
    seq: int
    type: str
    time: str
    fields: str


@dataclass(frozen=True)
class AuditTrailFact:
    file: str
    head: str
    count: int
    by_type: tuple[tuple[str, int], ...]
    events: tuple[AuditEventFact, ...]  # at most MAX_EVENT_ROWS
    first_time: str
    last_time: str


@dataclass(frozen=True)
class ReportFacts:
    generated_at: str
    certificate_file: str
    certificate_sha256: str
    body_version: int
    body_sha384: str
    job_id: str
    spec_sha256: str
    model_spec_sha256: str
    model_sha256: str
    checkpoint_sha256: str
    started_at: str
    finished_at: str
    attested_at: str
    module_id: str
    accountant: str
    epsilon: float  # training's, recomputed under `accountant`
    epsilons: dict[str, float] = field(hash=False)  # every accountant's recomputed epsilon
    metrics_epsilon: float = 0.0  # released DP metrics, composed on top
    delta: float = 0.0
    max_epsilon: float = 0.0  # the job's budget
    privacy_unit: str = ""
    neighbouring: str = ""
    steps: int = 0
    sampling_rate: float = 0.0
    noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0
    segments: tuple[tuple[float, float, int], ...] = ()  # (q, sigma, steps) of the certified ledger
    search: dict[str, Any] | None = field(default=None, hash=False)
    datasets: tuple[DatasetFact, ...] = ()
    public_datasets: tuple[tuple[str, str, int], ...] = ()  # (name, sha256, records)
    metrics: tuple[tuple[str, str, int, float, float], ...] = ()  # (name, kind, step, value, epsilon_cost)
    attested_pcrs: dict[int, str] = field(default_factory=dict, hash=False)
    pinned_pcrs: dict[int, str] = field(default_factory=dict, hash=False)
    measurements_file: str | None = None
    root: str = ""  # what the chain was checked against, for people
    root_sha256: str = ""
    root_is_aws: bool = True
    sealed_checked: tuple[str, ...] = ()  # dataset ids whose sealed file the caller matched
    spec_checked: str | None = None  # the spec file the caller matched, if any
    curve: tuple[tuple[int, float], ...] = ()  # (steps, epsilon)
    accuracy: tuple[AccuracyPoint, ...] = ()
    ledgers: tuple[LedgerFact, ...] = ()
    ledger_location: str | None = None
    audit_log_sha256: str | None = None  # as the certificate states it
    audit_log_events: int | None = None
    audit_trail: AuditTrailFact | None = None
    empirical: tuple[EmpiricalAudit, ...] = ()  # noised runs and no-noise controls

    @property
    def total_epsilon(self) -> float:
        return self.epsilon + self.metrics_epsilon

    @property
    def image_pcr(self) -> str:
        return self.attested_pcrs.get(0, "")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every fact (PCR indexes become strings)."""
        out: dict[str, Any] = _plain(self)
        out["attested_pcrs"] = {str(k): v for k, v in self.attested_pcrs.items()}
        out["pinned_pcrs"] = {str(k): v for k, v in self.pinned_pcrs.items()}
        out["total_epsilon"] = self.total_epsilon
        out["ledgers"] = [_plain(ledger) | {"agrees": ledger.agrees} for ledger in self.ledgers]
        out["verdict"] = "certificate verified"
        return out


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def gather_facts(
    certificate: bytes,
    *,
    certificate_name: str,
    pcrs: Mapping[int, bytes],
    root_der: bytes | None = None,
    root_name: str | None = None,
    measurements_name: str | None = None,
    sealed: Sequence[SealedFile] = (),
    spec: SpecPin | None = None,
    accountant: str | None = None,
    ledger: str | None = None,
    s3_client: Any | None = None,
    audit_log: bytes | None = None,
    audit_log_name: str | None = None,
    empirical: tuple[EmpiricalAudit, ...] = (),
    now: datetime | None = None,
) -> ReportFacts:
    """Verify every input and compute the report's facts; the first failed check's typed error otherwise."""
    verified = verify_certificate(certificate, root_der=root_der, policy=AttestationPolicy.from_pcrs(dict(pcrs)),
                                  accountant=accountant)
    body = verified.body
    check_sealed(body, list(sealed))
    if spec is not None:
        check_spec(body, spec.sha256, spec.name, model_spec_sha256=spec.model_sha256)
    trail = None
    if audit_log is not None:
        trail = _audit_trail(audit_log, audit_log_name or "audit log", body)
    ledgers = () if ledger is None else tuple(
        _ledger(ledger, record, body, s3_client) for record in body.datasets)
    log.info("report facts for job %s gathered", body.job_id)
    root_sha256 = hashlib.sha256(root_der).hexdigest() if root_der is not None else AWS_NITRO_ROOT_G1_SHA256
    return ReportFacts(
        generated_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        certificate_file=certificate_name,
        certificate_sha256=hashlib.sha256(certificate).hexdigest(),
        body_version=body.version,
        body_sha384=verified.body_sha384.hex(),
        job_id=body.job_id,
        spec_sha256=body.spec_sha256,
        model_spec_sha256=body.model_spec_sha256,
        model_sha256=body.model_sha256,
        checkpoint_sha256=body.checkpoint_sha256,
        started_at=body.started_at,
        finished_at=body.finished_at,
        attested_at=verified.attested_at.isoformat(timespec="seconds"),
        module_id=verified.attestation.module_id,
        accountant=verified.accountant,
        epsilon=verified.epsilon,
        epsilons=dict(verified.epsilons),
        metrics_epsilon=metrics_epsilon(body),
        delta=body.delta,
        max_epsilon=float(body.budget["max_epsilon"]),
        privacy_unit=body.privacy_unit,
        neighbouring=body.neighbouring,
        steps=body.steps,
        sampling_rate=body.sampling_rate,
        noise_multiplier=body.noise_multiplier,
        max_grad_norm=body.max_grad_norm,
        segments=tuple((float(s["q"]), float(s["sigma"]), int(s["steps"])) for s in body.ledger),
        search=_search(body),
        datasets=tuple(_dataset(record) for record in body.datasets),
        public_datasets=tuple((p.name, p.sha256, p.records) for p in body.public_datasets),
        metrics=tuple((m.name, m.kind, m.step, m.value, m.epsilon_cost) for m in body.metrics),
        attested_pcrs={int(k): str(v) for k, v in sorted(body.pcrs.items())},
        pinned_pcrs={index: value.hex() for index, value in sorted(pcrs.items())},
        measurements_file=measurements_name,
        root=root_name or "AWS Nitro Enclaves Root-G1 (bundled, pinned by SHA-256)",
        root_sha256=root_sha256,
        root_is_aws=root_sha256 == AWS_NITRO_ROOT_G1_SHA256,
        sealed_checked=tuple(f.dataset_id for f in sealed),
        spec_checked=None if spec is None else spec.name,
        curve=() if body.search is not None else epsilon_curve(body, verified.accountant),
        accuracy=() if body.search is not None else _accuracy(body, verified),
        ledgers=ledgers,
        ledger_location=ledger,
        audit_log_sha256=body.audit_log_sha256,
        audit_log_events=body.audit_log_events,
        audit_trail=trail,
        empirical=empirical,
    )


# --- the privacy curve ------------------------------------------------------------------


def _prefix(body: CertificateBody, steps: int) -> list[dict[str, Any]]:
    """The certified ledger's segments cut after `steps` steps."""
    out, left = [], steps
    for segment in body.ledger:
        if left <= 0:
            break
        taken = min(int(segment["steps"]), left)
        out.append({"q": segment["q"], "sigma": segment["sigma"], "steps": taken})
        left -= taken
    return out


def epsilon_at(body: CertificateBody, steps: int, accountant: str) -> float:
    """Training's epsilon at the body's delta after its first `steps` steps, replayed."""
    if steps <= 0:
        return 0.0
    return recompute_epsilon(_prefix(body, steps), body.delta, accountant)


def epsilon_curve(body: CertificateBody, accountant: str, points: int = CURVE_POINTS) -> tuple[tuple[int, float], ...]:
    """(steps, epsilon) at up to `points` evenly spaced step counts, the last one the job's own."""
    total = body.steps
    if total <= 0:
        return ()
    marks = sorted({max(1, round(total * i / points)) for i in range(1, points + 1)})
    return tuple((s, epsilon_at(body, s, accountant)) for s in marks)


def _accuracy(body: CertificateBody, verified: VerifiedCertificate) -> tuple[AccuracyPoint, ...]:
    """Released accuracy metrics, each with training's epsilon at its step."""
    chosen = [m for m in body.metrics if "acc" in m.name.lower() and 0 < m.step <= body.steps]
    cache: dict[int, float] = {}
    out = []
    for metric in chosen:
        if metric.step not in cache:
            cache[metric.step] = epsilon_at(body, metric.step, verified.accountant)
        out.append(AccuracyPoint(metric.name, metric.step, metric.value, cache[metric.step]))
    return tuple(out)


def _search(body: CertificateBody) -> dict[str, Any] | None:
    if body.search is None:
        return None
    s = body.search
    return {"distribution": s.distribution, "mean": s.mean, "trials": s.trials, "metric": s.metric,
            "runs": len(s.runs), "selected": {str(k): v for k, v in s.selected.items()}}


def _dataset(record: DatasetRecord) -> DatasetFact:
    context = record.encryption_context
    return DatasetFact(
        dataset_id=record.dataset_id, sealed_sha256=record.sealed_sha256, key_id=record.key_id,
        owner=str(context.get("owner", "")), records=record.records, epsilon=record.epsilon,
        dataset_epsilon=record.dataset_epsilon, max_epsilon=float(context["max_epsilon"]),
        delta=float(context["delta"]), ledger_location=str(context[LEDGER_CONTEXT_KEY]),
    )


# --- the audit trail ----------------------------------------------------------------------


def _audit_trail(data: bytes, name: str, body: CertificateBody) -> AuditTrailFact:
    summary = verify_audit_log(data, body)  # AuditLogError naming the first bad event, or NoAuditTrail
    records = decode_log(data)  # verified just above: the same bytes, the same records
    return AuditTrailFact(
        file=name,
        head=summary.head.hex(),
        count=summary.count,
        by_type=tuple(sorted(summary.by_type.items())),
        events=tuple(_event(r) for r in records[:MAX_EVENT_ROWS]),
        first_time=records[0].time,
        last_time=records[-1].time,
    )


def _event(record: AuditRecord) -> AuditEventFact:
    def shown(value: Any) -> str:
        text = value.hex() if isinstance(value, bytes) else f"{value:.6g}" if isinstance(value, float) else str(value)
        return text if len(text) <= _MAX_FIELD_TEXT else text[: _MAX_FIELD_TEXT - 1] + "…"

    fields_text = ", ".join(f"{k}={shown(v)}" for k, v in record.fields.items())
    return AuditEventFact(record.seq, record.type, record.time, fields_text)


# --- the budget ledger --------------------------------------------------------------------


def ledger_store_location(given: str) -> str:
    """`given` as a ledger location: a plain directory becomes `local:` of its absolute path."""
    if given.startswith((LOCAL_SCHEME, S3_SCHEME)):
        return given
    return LOCAL_SCHEME + str(Path(given).resolve())


def _ledger(given: str, record: DatasetRecord, body: CertificateBody, s3_client: Any | None) -> LedgerFact:
    context = dict(record.encryption_context)
    location = ledger_store_location(given)
    store = open_ledger_store(location, record.dataset_id, s3_client)
    if isinstance(store, LocalDirectoryStore) and not store.directory.is_dir():
        raise LedgerEvidenceError(f"ledger {given}: no directory {store.directory} for dataset {record.dataset_id!r}")
    report = budget_report(context, store=store, accountant=body.accountant)
    if not report.valid or report.spent_epsilon is None:
        raise LedgerEvidenceError(f"the budget ledger of dataset {record.dataset_id!r} at {given} does not verify "
                                  f"with the certificate's ledger key: {report.problem}")
    entries = tuple(
        LedgerEntryFact(slot=int(e["slot"]), job_id=str(e["job_id"]), created_at=str(e["created_at"]),
                        steps=int(e["steps"]), cumulative_epsilon=float(e["cumulative_epsilon"]),
                        protected=bool(e["protected"]), this_job=e["job_id"] == body.job_id)
        for e in report.entries)
    own = [e for e in entries if e.this_job]
    if not own:
        raise LedgerEvidenceError(f"the budget ledger of dataset {record.dataset_id!r} at {given} holds no entry of "
                                  f"job {body.job_id!r}: it is not the ledger this job reserved its budget in")
    if report.spent_epsilon > report.max_epsilon * (1.0 + REL_TOLERANCE):
        log.warning("ledger of %s spends %s, above its cap %s", record.dataset_id, report.spent_epsilon,
                    report.max_epsilon)
    remaining = report.remaining_epsilon
    return LedgerFact(
        dataset_id=record.dataset_id, read_from=store.location, certified_location=context[LEDGER_CONTEXT_KEY],
        max_epsilon=report.max_epsilon, delta=report.delta, accountant=report.accountant,
        spent_epsilon=report.spent_epsilon, remaining_epsilon=0.0 if remaining is None else remaining,
        entries=entries, ignored=len(report.ignored), all_protected=all(e.protected for e in entries),
        job_cumulative_epsilon=own[-1].cumulative_epsilon, certified_dataset_epsilon=record.dataset_epsilon,
        note=report.note,
    )
