"""The privacy certificate body: what the enclave claims about one training job.

The body is a canonical CBOR map whose keys are the field names below; nested
records are maps keyed by their field names, `pcrs` maps PCR index (int) to
lowercase hex, `ledger` is a list of `{"q", "sigma", "steps"}` maps (one per
accounting segment; a resumed run with other parameters adds a segment),
Each dataset record states the job's own `epsilon` on that dataset's records and its
`dataset_epsilon`, what its budget ledger held when the job reserved its steps, the
job's own reservation included (`enclave.ledger`), both under `accountant` at that
dataset's delta (its encryption context): a job on several owners' data charges each
ledger the same steps, but each owner's cap is stated at its own delta. Floats
are always float64 on the wire, integers are CBOR integers, nothing is optional.

Constructors check types, sizes and finiteness (MalformedCertificate); whether
the values make sense together is `enclave.certificate.checks`' job.

Every epsilon is stated for `privacy_unit` "record" and `neighbouring` "zero-out":
two datasets are neighbours when one record of one is replaced by a null record that
contributes nothing to training. The record count N stays fixed, as it must: N is
public (the sealed file's encryption context, declared so by the data owner at
sealing), which add/remove neighbours would not allow. For the Poisson-subsampled
Gaussian mechanism the zero-out privacy curves equal add/remove's, so the accountants'
numbers are unchanged. Version 2 added these two fields.

`resumed_from` is the resume lineage: null for a run that started at step 0, else
`{"sealed_sha256", "step"}`, the SHA-256 (hex) of the sealed checkpoint file the run
continued from and that checkpoint's step. The enclave resumes only a checkpoint it can
authenticate (`enclave.training.checkpoint`), so the ledger and metrics carried over are
an enclave's. Version 3 added it; version 4 moved `dataset_epsilon` from the body into
each dataset record, next to its `epsilon`, as a job may train on several datasets.

`model_spec_sha256` names the architecture trained: the SHA-256 (hex) of the canonical
CBOR of the job's declarative model (`enclave.training.modelfmt`, `ModelFormat.sha256`),
the inline model of the spec or the preset it names. A verifier holding the spec
recomputes it (`JobSpec.model_sha256`); `model_sha256` remains the hash of the trained
weights. Version 5 added it.

A tuning job's body is version 6: the version 5 fields and `search`, the hyper-parameter
search it ran (`SearchRecord`): the trial count's distribution, mean and shape (null
unless truncated negative binomial), the candidate `grid` (key -> values), the distinct
`runs` ({"q", "sigma", "steps"}) its candidates may run, the `metric` selected on, the
number of `trials` run, and the `selected` candidate (key -> value) with its `score`
(an empty map and null when no trial ran, which a Poisson count allows). The run
fields (sampling_rate, steps, ledger, ...) are then the selected trial's, and `epsilon`
holds one value, "rdp": the whole search's repeat-and-select epsilon, which is what
`runs`, distribution, mean and shape let a verifier recompute. Bodies of other jobs
stay version 5, byte for byte; a body with no trial states steps 0, an empty ledger,
and NO_OUTPUT for the model and checkpoint hashes.

Versions 7 and 8 are versions 5 and 6 plus the session's audit trail
(`enclave.audit_log`): `audit_log_sha256`, the chain's head (SHA-256 hex of its last
event's encoding), and `audit_log_events`, its event count. The version is bumped
rather than the fields made optional because the format has no optional fields: a
body's key set and its version determine each other, so a verifier never has to guess
whether a missing field was stripped. Versions 5 and 6 keep their exact bytes (their
known answers still hold) and still decode, so certificates issued before the audit
trail still verify; the enclave issues only versions 7 and 8.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from enclave.certificate.errors import MalformedCertificate
from enclave.hazmat.cbor import dumps_f64

__all__ = [
    "AUDITED_BODY_VERSION",
    "AUDITED_SEARCH_BODY_VERSION",
    "BODY_VERSION",
    "NEIGHBOURING",
    "PRIVACY_UNIT",
    "CertificateBody",
    "DatasetRecord",
    "MAX_BODY_SIZE",
    "PublicDatasetRecord",
    "ReleasedMetric",
    "ResumedFrom",
    "SearchRecord",
    "encode_body",
    "wire_map",
]

BODY_VERSION = 5
SEARCH_BODY_VERSION = 6
AUDITED_BODY_VERSION = 7
AUDITED_SEARCH_BODY_VERSION = 8
#: (has a search, has an audit trail) -> the one version such a body has.
_VERSIONS = {(False, False): BODY_VERSION, (True, False): SEARCH_BODY_VERSION,
             (False, True): AUDITED_BODY_VERSION, (True, True): AUDITED_SEARCH_BODY_VERSION}
#: The model and checkpoint hash of a search that ran no trial: nothing was released.
NO_OUTPUT = "0" * 64
MAX_GRID_KEYS = 8
MAX_GRID_VALUES = 16
MAX_SEARCH_RUNS = 256
#: The unit of privacy and the neighbouring relation every epsilon here is stated for
#: (module docstring); the accountants cover no other.
PRIVACY_UNIT = "record"
NEIGHBOURING = "zero-out"
#: A body lists datasets, metrics and ledger segments; a few hundred KiB is far above
#: any real job and keeps a hostile file from costing more than a moment to refuse.
MAX_BODY_SIZE = 256 * 1024
MAX_TEXT = 1024
MAX_KEY_ID = 2048
MAX_DATASETS = 256
MAX_PUBLIC_DATASETS = 256
MAX_METRICS = 4096
MAX_LEDGER_SEGMENTS = 4096
MAX_CONTEXT_ENTRIES = 32
MAX_ACCOUNTANTS = 8
MAX_PCRS = 32

LEDGER_KEYS = ("q", "sigma", "steps")
RESUMED_FROM_KEYS = ("sealed_sha256", "step")
BUDGET_KEYS = ("max_epsilon", "delta")


# --- value checks shared by constructors and the decoder -------------------------------


def _text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str:
    if type(value) is not str:
        raise MalformedCertificate(f"{what} is not a text string")
    if not value or len(value) > limit:
        raise MalformedCertificate(f"{what} length {len(value)} is outside 1..{limit}")
    return value


def _count(value: Any, what: str) -> int:
    # bool is an int subclass; True is not a record count.
    if type(value) is not int:
        raise MalformedCertificate(f"{what} is not an integer")
    if value < 0 or value > 2**63 - 1:
        raise MalformedCertificate(f"{what} is outside 0..2^63-1")
    return value


def _real(value: Any, what: str) -> float:
    # Producers may pass ints (e.g. max_grad_norm=1); the wire form is always float64.
    if type(value) not in (float, int):
        raise MalformedCertificate(f"{what} is not a number")
    try:
        result = float(value)
    except OverflowError:
        raise MalformedCertificate(f"{what} is too large") from None
    if not math.isfinite(result):
        raise MalformedCertificate(f"{what} is not finite")
    return result


def _sequence(value: Any, what: str, limit: int) -> tuple[Any, ...]:
    # Sets are refused too: their order, and so the encoding, would vary between runs.
    if isinstance(value, (str, bytes, bytearray, Mapping, set, frozenset)) or not hasattr(
        value, "__iter__"
    ):
        raise MalformedCertificate(f"{what} is not a list")
    items = tuple(value)
    if len(items) > limit:
        raise MalformedCertificate(f"{what} has {len(items)} entries, more than {limit}")
    return items


def checked_mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise MalformedCertificate(f"{what} is not a map")
    return value


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRecord:
    """One sealed private dataset the job read, as its KMS encryption context bound it."""

    dataset_id: str
    sealed_sha256: str
    key_id: str
    encryption_context: Mapping[str, str] = field(hash=False)
    records: int
    # This job's epsilon on the dataset, and the dataset's cumulative epsilon (every entry of its
    # budget ledger, this job's reservation included), both at the dataset's delta.
    epsilon: float
    dataset_epsilon: float

    def __post_init__(self) -> None:
        _text(self.dataset_id, "dataset_id")
        _text(self.sealed_sha256, "dataset sealed_sha256")
        _text(self.key_id, "dataset key_id", limit=MAX_KEY_ID)
        context = checked_mapping(self.encryption_context, "dataset encryption_context")
        if len(context) > MAX_CONTEXT_ENTRIES:
            raise MalformedCertificate(
                f"dataset encryption_context has more than {MAX_CONTEXT_ENTRIES} entries"
            )
        for key, value in context.items():
            _text(key, "encryption_context key")
            _text(value, f"encryption_context[{key!r}]")
        object.__setattr__(self, "encryption_context", _frozen(dict(sorted(context.items()))))
        _count(self.records, "dataset records")
        object.__setattr__(self, "epsilon", _real(self.epsilon, "dataset epsilon"))
        object.__setattr__(self, "dataset_epsilon", _real(self.dataset_epsilon, "dataset_epsilon"))


@dataclass(frozen=True)
class PublicDatasetRecord:
    """A public (non-private) dataset the job used, e.g. an evaluation set."""

    name: str
    sha256: str
    records: int

    def __post_init__(self) -> None:
        _text(self.name, "public dataset name")
        _text(self.sha256, "public dataset sha256")
        _count(self.records, "public dataset records")


@dataclass(frozen=True)
class ReleasedMetric:
    """A number that left the enclave: data-independent (cost 0) or DP-accounted."""

    name: str
    value: float
    kind: str
    step: int
    epsilon_cost: float

    def __post_init__(self) -> None:
        _text(self.name, "metric name")
        object.__setattr__(self, "value", _real(self.value, f"metric {self.name!r} value"))
        _text(self.kind, f"metric {self.name!r} kind")
        _count(self.step, f"metric {self.name!r} step")
        object.__setattr__(
            self, "epsilon_cost", _real(self.epsilon_cost, f"metric {self.name!r} epsilon_cost")
        )


@dataclass(frozen=True)
class ResumedFrom:
    """The sealed checkpoint a resumed run continued from."""

    sealed_sha256: str
    step: int

    def __post_init__(self) -> None:
        _text(self.sealed_sha256, "resumed_from sealed_sha256")
        _count(self.step, "resumed_from step")


def _segment(value: Any, index: int, where: str = "ledger") -> Mapping[str, Any]:
    what = f"{where}[{index}]"
    if isinstance(value, Mapping):
        if set(value) != set(LEDGER_KEYS):
            raise MalformedCertificate(f"{what} must have exactly the keys q, sigma, steps")
        q, sigma, steps = (value[k] for k in LEDGER_KEYS)
    elif all(hasattr(value, k) for k in LEDGER_KEYS):
        # A privacy ledger's own Segment objects are accepted as they are.
        q, sigma, steps = (getattr(value, k) for k in LEDGER_KEYS)
    else:
        raise MalformedCertificate(f"{what} is not a q/sigma/steps segment")
    return _frozen(
        {"q": _real(q, f"{what}.q"), "sigma": _real(sigma, f"{what}.sigma"),
         "steps": _count(steps, f"{what}.steps")}
    )


def _grid_value(value: Any, what: str) -> float | int:
    return _count(value, what) if type(value) is int else _real(value, what)


@dataclass(frozen=True)
class SearchRecord:
    """A tuning job's hyper-parameter search (module docstring)."""

    distribution: str
    mean: float
    shape: float | None
    grid: Mapping[str, tuple[float | int, ...]] = field(hash=False)
    runs: tuple[Mapping[str, Any], ...] = field(hash=False)
    metric: str
    trials: int
    selected: Mapping[str, float | int] = field(hash=False)
    score: float | None

    def __post_init__(self) -> None:
        _text(self.distribution, "search distribution", limit=64)
        object.__setattr__(self, "mean", _real(self.mean, "search mean"))
        if self.shape is not None:
            object.__setattr__(self, "shape", _real(self.shape, "search shape"))
        grid = checked_mapping(self.grid, "search grid")
        if not 1 <= len(grid) <= MAX_GRID_KEYS:
            raise MalformedCertificate(f"search grid has {len(grid)} keys, expected 1..{MAX_GRID_KEYS}")
        object.__setattr__(self, "grid", _frozen({
            _text(k, "search grid key", limit=64): tuple(
                _grid_value(v, f"search grid {k!r}") for v in _sequence(values, f"search grid {k!r}", MAX_GRID_VALUES))
            for k, values in grid.items()}))
        runs = _sequence(self.runs, "search runs", MAX_SEARCH_RUNS)
        object.__setattr__(self, "runs", tuple(_segment(r, i, "search runs") for i, r in enumerate(runs)))
        _text(self.metric, "search metric", limit=MAX_TEXT)
        _count(self.trials, "search trials")
        selected = checked_mapping(self.selected, "search selected")
        object.__setattr__(self, "selected", _frozen({
            _text(k, "search selected key", limit=64): _grid_value(v, f"search selected {k!r}")
            for k, v in selected.items()}))
        if self.score is not None:
            object.__setattr__(self, "score", _real(self.score, "search score"))

    def to_wire(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution, "mean": self.mean, "shape": self.shape,
            "grid": {k: list(v) for k, v in self.grid.items()}, "runs": [dict(r) for r in self.runs],
            "metric": self.metric, "trials": self.trials, "selected": dict(self.selected), "score": self.score,
        }


# --- the body ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CertificateBody:
    """Everything a privacy certificate states; see the module docstring for the wire form."""

    version: int = BODY_VERSION
    job_id: str
    spec_sha256: str
    # The job's declarative model's canonical hash (module docstring); not the weights' hash.
    model_spec_sha256: str
    pcrs: Mapping[int, str] = field(hash=False)
    datasets: tuple[DatasetRecord, ...]
    public_datasets: tuple[PublicDatasetRecord, ...]
    sampling_rate: float
    noise_multiplier: float
    max_grad_norm: float
    steps: int
    delta: float
    epsilon: Mapping[str, float] = field(hash=False)
    accountant: str
    ledger: tuple[Mapping[str, Any], ...] = field(hash=False)
    model_sha256: str
    checkpoint_sha256: str
    metrics: tuple[ReleasedMetric, ...]
    started_at: str
    finished_at: str
    budget: Mapping[str, float] = field(hash=False)
    # None (CBOR null) unless the run continued from a checkpoint.
    resumed_from: ResumedFrom | None = None
    privacy_unit: str = PRIVACY_UNIT
    neighbouring: str = NEIGHBOURING
    # A tuning job's search (versions 6 and 8); None for every other job (versions 5 and 7).
    search: SearchRecord | None = None
    # The session's audit chain head and event count (versions 7 and 8): both or neither.
    audit_log_sha256: str | None = None
    audit_log_events: int | None = None

    @staticmethod
    def version_for(*, search: bool, audited: bool) -> int:
        """The one body version for a body with or without a search and an audit trail."""
        return _VERSIONS[(search, audited)]

    def __post_init__(self) -> None:
        if (self.audit_log_sha256 is None) != (self.audit_log_events is None):
            raise MalformedCertificate("audit_log_sha256 and audit_log_events come together or not at all")
        audited = self.audit_log_sha256 is not None
        expected = _VERSIONS[(self.search is not None, audited)]
        if type(self.version) is not int or self.version != expected:
            raise MalformedCertificate(
                f"certificate body version must be {expected} for a body {'with' if self.search else 'without'} "
                f"a search and {'with' if audited else 'without'} an audit trail")
        if audited:
            _text(self.audit_log_sha256, "audit_log_sha256", limit=64)
            _count(self.audit_log_events, "audit_log_events")
        if self.search is not None and type(self.search) is not SearchRecord:
            raise MalformedCertificate("search is not a SearchRecord or null")
        if self.privacy_unit != PRIVACY_UNIT or type(self.privacy_unit) is not str:
            raise MalformedCertificate(f"the privacy unit must be {PRIVACY_UNIT!r}, the one the accounting covers")
        if self.neighbouring != NEIGHBOURING or type(self.neighbouring) is not str:
            raise MalformedCertificate(
                f"the neighbouring relation must be {NEIGHBOURING!r}: the record count is public"
            )
        _text(self.job_id, "job_id")
        _text(self.spec_sha256, "spec_sha256")
        _text(self.model_spec_sha256, "model_spec_sha256")
        self._set("pcrs", _pcrs(self.pcrs))
        self._set("datasets", _records(self.datasets, "datasets", MAX_DATASETS, DatasetRecord))
        self._set("public_datasets", _records(
            self.public_datasets, "public_datasets", MAX_PUBLIC_DATASETS, PublicDatasetRecord))
        for name in ("sampling_rate", "noise_multiplier", "max_grad_norm", "delta"):
            self._set(name, _real(getattr(self, name), name))
        _count(self.steps, "steps")
        self._set("epsilon", _epsilons(self.epsilon))
        _text(self.accountant, "accountant", limit=32)
        segments = _sequence(self.ledger, "ledger", MAX_LEDGER_SEGMENTS)
        self._set("ledger", tuple(_segment(s, i) for i, s in enumerate(segments)))
        _text(self.model_sha256, "model_sha256")
        _text(self.checkpoint_sha256, "checkpoint_sha256")
        self._set("metrics", _records(self.metrics, "metrics", MAX_METRICS, ReleasedMetric))
        _text(self.started_at, "started_at", limit=64)
        _text(self.finished_at, "finished_at", limit=64)
        self._set("budget", _budget(self.budget))
        if self.resumed_from is not None and type(self.resumed_from) is not ResumedFrom:
            raise MalformedCertificate("resumed_from is not a ResumedFrom or null")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


def _pcrs(value: Any) -> Mapping[int, str]:
    mapping = checked_mapping(value, "pcrs")
    if not 1 <= len(mapping) <= MAX_PCRS:
        raise MalformedCertificate(f"pcrs has {len(mapping)} entries, expected 1..{MAX_PCRS}")
    result: dict[int, str] = {}
    for index, pcr in mapping.items():
        if type(index) is not int:
            raise MalformedCertificate("pcrs has a non-integer index")
        if isinstance(pcr, (bytes, bytearray)):
            pcr = bytes(pcr).hex()
        result[index] = _text(pcr, f"PCR{index}", limit=128)
    return _frozen(dict(sorted(result.items())))


def _records(value: Any, what: str, limit: int, kind: type) -> tuple[Any, ...]:
    items = _sequence(value, what, limit)
    for item in items:
        if type(item) is not kind:
            raise MalformedCertificate(f"{what} holds a {type(item).__name__}, not a {kind.__name__}")
    return items


def _epsilons(value: Any) -> Mapping[str, float]:
    mapping = checked_mapping(value, "epsilon")
    if not 1 <= len(mapping) <= MAX_ACCOUNTANTS:
        raise MalformedCertificate(f"epsilon has {len(mapping)} entries, expected 1..{MAX_ACCOUNTANTS}")
    result = {_text(k, "epsilon accountant", limit=32): _real(v, f"epsilon[{k!r}]")
              for k, v in mapping.items()}
    return _frozen(dict(sorted(result.items())))


def _budget(value: Any) -> Mapping[str, float]:
    mapping = checked_mapping(value, "budget")
    if set(mapping) != set(BUDGET_KEYS):
        raise MalformedCertificate("budget must have exactly the keys max_epsilon, delta")
    return _frozen({k: _real(mapping[k], f"budget {k}") for k in BUDGET_KEYS})


# --- wire form ---------------------------------------------------------------------------


def wire_map(body: CertificateBody) -> dict[str, Any]:
    """The body as the plain map that is encoded (field name -> value)."""
    return {
        "version": body.version,
        "job_id": body.job_id,
        "spec_sha256": body.spec_sha256,
        "model_spec_sha256": body.model_spec_sha256,
        "pcrs": dict(body.pcrs),
        "datasets": [
            {"dataset_id": d.dataset_id, "sealed_sha256": d.sealed_sha256, "key_id": d.key_id,
             "encryption_context": dict(d.encryption_context), "records": d.records,
             "epsilon": d.epsilon, "dataset_epsilon": d.dataset_epsilon}
            for d in body.datasets
        ],
        "public_datasets": [
            {"name": p.name, "sha256": p.sha256, "records": p.records} for p in body.public_datasets
        ],
        "sampling_rate": body.sampling_rate,
        "noise_multiplier": body.noise_multiplier,
        "max_grad_norm": body.max_grad_norm,
        "steps": body.steps,
        "delta": body.delta,
        "epsilon": dict(body.epsilon),
        "accountant": body.accountant,
        "ledger": [dict(s) for s in body.ledger],
        "model_sha256": body.model_sha256,
        "checkpoint_sha256": body.checkpoint_sha256,
        "metrics": [
            {"name": m.name, "value": m.value, "kind": m.kind, "step": m.step,
             "epsilon_cost": m.epsilon_cost}
            for m in body.metrics
        ],
        "started_at": body.started_at,
        "finished_at": body.finished_at,
        "budget": dict(body.budget),
        "resumed_from": None if body.resumed_from is None else {
            "sealed_sha256": body.resumed_from.sealed_sha256, "step": body.resumed_from.step},
        "privacy_unit": body.privacy_unit,
        "neighbouring": body.neighbouring,
    } | ({} if body.search is None else {"search": body.search.to_wire()}) | (
        {} if body.audit_log_sha256 is None else
        {"audit_log_sha256": body.audit_log_sha256, "audit_log_events": body.audit_log_events})


def encode_body(body: CertificateBody) -> bytes:
    """The canonical CBOR bytes of `body` (the bytes whose SHA-384 the enclave attests)."""
    if not isinstance(body, CertificateBody):
        raise TypeError("encode_body needs a CertificateBody")
    data = dumps_f64(wire_map(body))
    if len(data) > MAX_BODY_SIZE:
        raise MalformedCertificate(f"certificate body is {len(data)} bytes, more than {MAX_BODY_SIZE}")
    return data
