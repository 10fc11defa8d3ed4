"""Check a job offline, before anything runs: the spec against the sealed files' headers.

No enclave, no key: only the spec and each sealed file's header (its encryption
context and public schema) are read, and the enclave's own check
(`enclave.training.check`) is run on them, so what passes here passes the enclave's
check before KMS. `hermetic job check` and `hermetic train` call `check_job`.

A problem of one sealed file is reported with the file in front of the spec key or
column it names ("data/train.sealed: data.features"). A job trains on one sealed
dataset, or on the union of those its `data.train` list names: those files are
checked together (same feature and label fields, one plan over their records that
fits every owner's budget), and each is mapped to that one plan. Several datasets
without a `data.train` naming them is a problem, as it is in the enclave.

A job that fine-tunes (model.weights_sha256) is checked against its weights file when
one is given: the hash the spec names, then the tensors against the model built for
each reviewed dataset, with the enclave's own reader and check
(`enclave.training.modelfmt.weights`), so the same file passes or fails the same way.

When the host can read a dataset's budget ledger (a local appliance's directory, or S3
when the caller passes a client), the plan is also checked against it exactly as the
enclave will before any key: every valid entry plus this job, composed; a ledger the
host cannot reach is logged, not a problem (the enclave checks it anyway).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from enclave.errors import ConfigError, HermeticError
from enclave.ledger.chain import LedgerView
from enclave.ledger.location import LOCAL_SCHEME
from enclave.ledger.reserve import BudgetCheck, check_budget, dataset_budget, read_view
from enclave.ledger.store import LedgerError, LedgerUnavailable
from enclave.sealed.format import PAYLOAD, SealedHeader
from enclave.sealed.public_schema import PublicSchema, public_schema
from enclave.sealed.stream import read_header
from enclave.training.budget import PlannedRun
from enclave.training.check import Problem, check_spec, review_datasets
from enclave.training.jobmodel import job_model
from enclave.training.modelfmt.limits import MAX_WEIGHTS_BYTES
from enclave.training.modelfmt.weights import Weights, check_weights, open_weights
from enclave.training.spec import JobSpec
from enclave.transport.messages import WEIGHTS_STREAM
from parent.inputs import read_bounded
from parent.sources import open_source

log = logging.getLogger(__name__)

MAX_SPEC_BYTES = 1 << 20


@dataclass(frozen=True)
class JobCheck:
    """Every problem found, and the planned run on each sealed dataset (by the name it was given)."""

    problems: tuple[Problem, ...]
    planned: Mapping[str, PlannedRun] = field(default_factory=dict)
    spec: JobSpec | None = None
    # The ledger of each sealed file the host could read, with this job added, when it fits.
    ledgers: Mapping[str, BudgetCheck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "planned", MappingProxyType(dict(self.planned)))
        object.__setattr__(self, "ledgers", MappingProxyType(dict(self.ledgers)))

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
            "planned": {name: _plan_json(plan) for name, plan in self.planned.items()},
            "ledger": {name: _ledger_json(check) for name, check in self.ledgers.items()},
        }


def _ledger_json(check: BudgetCheck) -> dict[str, float]:
    return {"spent_epsilon": check.spent, "remaining_epsilon": check.remaining, "job_epsilon": check.job,
            "dataset_epsilon_with_job": check.total, "max_epsilon": check.max_epsilon}


def _plan_json(plan: PlannedRun) -> dict[str, Any]:
    # JSON has no infinity: an unbounded planned epsilon is null (its problem says "inf").
    fields = asdict(plan)
    # A tuning job's search as stated in its ledger entry; no key at all for other jobs (their output is unchanged).
    del fields["search"]
    if plan.search is not None:
        fields["search"] = plan.search.to_dict()
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()}


def check_job(
    spec_path: str | os.PathLike[str],
    sealed_paths: Sequence[str | os.PathLike[str]] = (),
    *,
    s3_client: Any | None = None,
    weights_path: str | os.PathLike[str] | None = None,
) -> JobCheck:
    """Check the spec at `spec_path` against the headers of `sealed_paths` (paths or s3:// URIs),
    and its model against the initial weights at `weights_path`, when given."""
    spec_name = os.fspath(spec_path)
    problems: list[Problem] = []
    spec: JobSpec | None = None
    try:
        spec = read_spec(spec_name)
    except HermeticError as err:
        problems.append(Problem(spec_name, str(err)))
    headers: dict[str, SealedHeader] = {}
    for given in sealed_paths:
        path = os.fspath(given)
        try:
            headers[path] = sealed_header(path, s3_client)
        except HermeticError as err:
            problems.append(Problem(path, str(err)))
    if spec is None:
        return JobCheck(tuple(problems))
    problems += check_spec(spec)
    weights: Weights | None = None
    weights_name = "" if weights_path is None else os.fspath(weights_path)
    if weights_path is not None:
        weights, found = _read_weights(weights_name, spec)
        problems += found
    elif spec.model.weights_sha256 is not None:
        # train and parent run refuse the job without the file; the check says so before they do.
        problems.append(Problem("model.weights_sha256", "names initial weights: give their file with --weights "
                                                        "(train and parent run need it too)"))
    datasets = [path for path, header in headers.items() if header.payload == PAYLOAD]
    train = spec.data.train
    if not train and len(datasets) > 1:
        problems.append(Problem("data.train", f"names no dataset, and {len(datasets)} sealed datasets were given: "
                                              "a job on several lists them all in data.train"))
    ids = {headers[path].dataset_id for path in datasets}
    if datasets and len(train) > 1:
        problems += [Problem("data.train", f"names dataset {t!r}, which no sealed file given holds")
                     for t in train if t not in ids]
    # The files the job trains on are reviewed together (one plan over their union, one schema);
    # any other file alone, to report what is wrong with it.
    union = [path for path in datasets if not train or headers[path].dataset_id in train]
    planned: dict[str, PlannedRun] = {}
    ledgers: dict[str, BudgetCheck] = {}
    groups = [union] if union and (train or len(union) == 1) else [[p] for p in union]
    groups += [[path] for path in headers if path not in union]
    for group in groups:
        review = review_datasets(spec, [headers[p] for p in group], names=group)
        problems += review.problems
        if weights is not None and not review.problems and headers[group[0]].payload == PAYLOAD:
            problems += _weights_problems(weights_name, spec, headers[group[0]], weights)
        if review.planned is not None:
            planned.update({path: review.planned for path in group})
            if not review.problems:
                for path in group:
                    if headers[path].payload == PAYLOAD:
                        found, check = _read_ledger(path, headers[path], review.planned, s3_client)
                        problems += found
                        if check is not None:
                            ledgers[path] = check
    log.info("checked job %s against %d sealed files: %d problems", spec.name, len(headers), len(problems))
    return JobCheck(tuple(problems), planned, spec, ledgers)


def _read_ledger(path: str, header: SealedHeader, plan: PlannedRun, s3_client: Any | None
                 ) -> tuple[list[Problem], BudgetCheck | None]:
    """The job's problem with the dataset's ledger, or what the ledger holds with the job added."""
    try:
        view = read_ledger_view(header, s3_client)
        if view is None:
            return [], None
        segments, searches = plan.charge()
        check = check_budget(view, segments, dataset_budget(header), plan.accountant, searches)
    except LedgerError as err:
        return [Problem(f"{path}: ledger", str(err))], None
    return [], check


def _read_weights(path: str, spec: JobSpec) -> tuple[Weights | None, list[Problem]]:
    expected = spec.model.weights_sha256
    if expected is None:
        return None, [Problem(path, "a weights file was given, but the spec names no initial weights "
                                    "(model.weights_sha256)")]
    try:
        return open_weights(read_bounded(path, MAX_WEIGHTS_BYTES, "weights file"), expected), []
    except HermeticError as err:
        return None, [Problem(path, str(err))]


def _weights_problems(path: str, spec: JobSpec, header: SealedHeader, weights: Weights) -> list[Problem]:
    try:
        check_weights(job_model(spec, header).parameter_shapes(), weights)
    except HermeticError as err:
        return [Problem(path, str(err))]
    return []


def weights_streams(spec: JobSpec | None, weights_path: str | os.PathLike[str] | None) -> list[tuple[str, str]]:
    """The initial weights' stream, which goes before every sealed dataset: one when the spec names
    weights, none otherwise; ConfigError when the file and the spec disagree (`spec` None: unchecked)."""
    if spec is not None and (spec.model.weights_sha256 is None) != (weights_path is None):
        if weights_path is None:
            raise ConfigError("the spec names initial weights (model.weights_sha256): give their file with --weights")
        raise ConfigError("--weights was given, but the spec names no initial weights (model.weights_sha256)")
    return [] if weights_path is None else [(WEIGHTS_STREAM, os.fspath(weights_path))]


def read_ledger_view(header: SealedHeader, s3_client: Any | None) -> LedgerView | None:
    """The dataset's ledger, verified as the enclave verifies it; None when this host cannot reach it.

    Raises LedgerError when the ledger is damaged: nothing can be spent from it.
    """
    from parent.budget import open_ledger_store  # imported on use: boto3 only when a ledger is read

    local = header.ledger_location.startswith(LOCAL_SCHEME)
    if not local and s3_client is None:
        # No S3 client given: never reach out to AWS from an offline check by surprise.
        log.info("ledger of %s (%s) not read here", header.dataset_id, header.ledger_location)
        return None
    try:
        store = open_ledger_store(header.ledger_location, header.dataset_id, s3_client)
        return read_view(store, public_key=header.ledger_public_key, dataset_id=header.dataset_id,
                         accept_unprotected=local)
    except LedgerUnavailable as err:
        log.info("ledger of %s not read here: %s", header.dataset_id, err)
        return None


def read_spec(path: str) -> JobSpec:
    """The job spec at `path`, parsed; raises ConfigError (SpecError) naming what is wrong."""
    try:
        return JobSpec.from_toml(read_bounded(path, MAX_SPEC_BYTES, "job spec").decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("job spec is not UTF-8 text") from None


def in_spec_order(datasets: Sequence[tuple[str, str]], train: Sequence[str]) -> list[tuple[str, str]]:
    """(id, file) pairs in the order the spec's data.train lists the ids, which the enclave
    requires of the streams; ids it does not list keep their place after (the enclave names them)."""
    rank = {dataset_id: index for index, dataset_id in enumerate(train)}
    return sorted(datasets, key=lambda pair: rank.get(pair[0], len(rank)))


def sealed_public_schema(path: str, s3_client: Any | None = None) -> PublicSchema:
    """The public schema of the sealed file at `path` (a path or s3:// URI): what public files are encoded by."""
    return public_schema(sealed_header(path, s3_client))


def sealed_header(path: str, s3_client: Any | None = None) -> SealedHeader:
    """The plaintext header of the sealed file at `path` (a path or s3:// URI): its public context and schema."""
    with open_source(path, s3_client) as source:
        return read_header(source)
