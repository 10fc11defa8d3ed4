"""Strict decoding of privacy certificate bodies, and their JSON form for people.

Only the exact canonical bytes of a v5 body decode (v2 added the unit of privacy and
the neighbouring relation, v3 the resume lineage, v4 each dataset's own epsilon, v5 the
hash of the job's declarative model, model_spec_sha256; older bodies are refused), or of a
v6 body, a tuning job's: the v5 fields and its `search`; or of a v7 or v8 body, a v5 or v6
body plus the session's audit chain head and event count (`enclave.audit_log`);
every field is type-checked
again here, so a crafted file cannot smuggle an int where a float is attested.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from enclave.certificate.body import (
    BUDGET_KEYS,
    LEDGER_KEYS,
    MAX_BODY_SIZE,
    RESUMED_FROM_KEYS,
    CertificateBody,
    DatasetRecord,
    PublicDatasetRecord,
    ReleasedMetric,
    ResumedFrom,
    SearchRecord,
    checked_mapping,
    wire_map,
)
from enclave.certificate.errors import MalformedCertificate
from enclave.hazmat.cbor import dumps_f64, strict_loads

__all__ = ["MAX_DEPTH", "body_to_json", "decode_body"]

# body -> datasets -> record -> encryption_context -> value is the deepest path.
MAX_DEPTH = 8


def body_to_json(body: CertificateBody) -> dict[str, Any]:
    """A JSON-ready dict of `body` for people (PCR indexes become strings)."""
    wire = wire_map(body)
    wire["pcrs"] = {str(index): value for index, value in body.pcrs.items()}
    return wire


_AUDIT_KEYS = ("audit_log_sha256", "audit_log_events")
_ALL_BODY_KEYS = tuple(f.name for f in fields(CertificateBody))
_BODY_KEYS = tuple(k for k in _ALL_BODY_KEYS if k != "search" and k not in _AUDIT_KEYS)
_FLOAT_FIELDS = frozenset({"sampling_rate", "noise_multiplier", "max_grad_norm", "delta"})


def _keys(raw: Any, expected: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise MalformedCertificate(f"{what} is not a map")
    keys = set(raw)
    if keys != set(expected):
        missing = sorted(set(expected) - keys)
        unknown = sorted(repr(k)[:40] for k in keys - set(expected))
        raise MalformedCertificate(f"{what} keys wrong (missing {missing}, unknown {unknown})")
    return raw


def _wire_float(value: Any, what: str) -> float:
    if type(value) is not float:
        raise MalformedCertificate(f"{what} is not a float")
    return value


def _wire_list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise MalformedCertificate(f"{what} is not an array")
    return value


def _decode_dataset(raw: Any, index: int) -> DatasetRecord:
    what = f"datasets[{index}]"
    m = _keys(raw, tuple(f.name for f in fields(DatasetRecord)), what)
    return DatasetRecord(
        dataset_id=m["dataset_id"], sealed_sha256=m["sealed_sha256"], key_id=m["key_id"],
        encryption_context=checked_mapping(m["encryption_context"], f"{what}.encryption_context"),
        records=m["records"], epsilon=_wire_float(m["epsilon"], f"{what}.epsilon"),
        dataset_epsilon=_wire_float(m["dataset_epsilon"], f"{what}.dataset_epsilon"),
    )


def _decode_public(raw: Any, index: int) -> PublicDatasetRecord:
    m = _keys(raw, tuple(f.name for f in fields(PublicDatasetRecord)), f"public_datasets[{index}]")
    return PublicDatasetRecord(name=m["name"], sha256=m["sha256"], records=m["records"])


def _decode_metric(raw: Any, index: int) -> ReleasedMetric:
    what = f"metrics[{index}]"
    m = _keys(raw, tuple(f.name for f in fields(ReleasedMetric)), what)
    return ReleasedMetric(
        name=m["name"], value=_wire_float(m["value"], f"{what}.value"), kind=m["kind"],
        step=m["step"], epsilon_cost=_wire_float(m["epsilon_cost"], f"{what}.epsilon_cost"),
    )


def _decode_segment(raw: Any, index: int) -> Mapping[str, Any]:
    what = f"ledger[{index}]"
    m = _keys(raw, LEDGER_KEYS, what)
    _wire_float(m["q"], f"{what}.q")
    _wire_float(m["sigma"], f"{what}.sigma")
    return m


def _decode_resumed_from(raw: Any) -> ResumedFrom | None:
    if raw is None:
        return None
    m = _keys(raw, RESUMED_FROM_KEYS, "resumed_from")
    return ResumedFrom(sealed_sha256=m["sealed_sha256"], step=m["step"])


def _decode_search(raw: Any) -> SearchRecord:
    m = _keys(raw, tuple(f.name for f in fields(SearchRecord)), "search")
    _wire_float(m["mean"], "search mean")
    for key in ("shape", "score"):
        if m[key] is not None:
            _wire_float(m[key], f"search {key}")
    grid = checked_mapping(m["grid"], "search grid")
    return SearchRecord(
        distribution=m["distribution"], mean=m["mean"], shape=m["shape"],
        grid={k: tuple(_wire_list(v, f"search grid {str(k)[:32]!r}")) for k, v in grid.items()},
        runs=tuple(_decode_segment(r, i) for i, r in enumerate(_wire_list(m["runs"], "search runs"))),
        metric=m["metric"], trials=m["trials"], selected=checked_mapping(m["selected"], "search selected"),
        score=m["score"],
    )


def decode_body(data: bytes) -> CertificateBody:
    """Parse canonical body bytes; MalformedCertificate for anything not exactly a v5..v8 body."""
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedCertificate("certificate body is not a byte string")
    if len(data) > MAX_BODY_SIZE:
        raise MalformedCertificate(f"certificate body is {len(data)} bytes, more than {MAX_BODY_SIZE}")
    item = strict_loads(
        bytes(data), what="certificate body", error=MalformedCertificate, canonical=dumps_f64, max_depth=MAX_DEPTH
    )
    # The key set decides which of versions 5..8 the body must be; the constructor then checks
    # that its version field says the same.
    tuning = isinstance(item, Mapping) and "search" in item
    audited = isinstance(item, Mapping) and any(k in item for k in _AUDIT_KEYS)
    expected = _BODY_KEYS + (("search",) if tuning else ()) + (_AUDIT_KEYS if audited else ())
    raw = _keys(item, expected, "certificate body")
    for name in _FLOAT_FIELDS:
        _wire_float(raw[name], name)
    epsilon = checked_mapping(raw["epsilon"], "epsilon")
    for key, value in epsilon.items():
        _wire_float(value, f"epsilon[{str(key)[:32]!r}]")
    for index, pcr in checked_mapping(raw["pcrs"], "pcrs").items():
        if type(pcr) is not str:
            raise MalformedCertificate(f"PCR{str(index)[:8]} is not a hex text string")
    budget = _keys(raw["budget"], BUDGET_KEYS, "budget")
    for key in BUDGET_KEYS:
        _wire_float(budget[key], f"budget {key}")
    return CertificateBody(
        version=raw["version"],
        job_id=raw["job_id"],
        spec_sha256=raw["spec_sha256"],
        model_spec_sha256=raw["model_spec_sha256"],
        pcrs=checked_mapping(raw["pcrs"], "pcrs"),
        datasets=tuple(_decode_dataset(d, i)
                       for i, d in enumerate(_wire_list(raw["datasets"], "datasets"))),
        public_datasets=tuple(_decode_public(p, i) for i, p in
                              enumerate(_wire_list(raw["public_datasets"], "public_datasets"))),
        sampling_rate=raw["sampling_rate"],
        noise_multiplier=raw["noise_multiplier"],
        max_grad_norm=raw["max_grad_norm"],
        steps=raw["steps"],
        delta=raw["delta"],
        epsilon=epsilon,
        accountant=raw["accountant"],
        ledger=tuple(_decode_segment(s, i)
                     for i, s in enumerate(_wire_list(raw["ledger"], "ledger"))),
        model_sha256=raw["model_sha256"],
        checkpoint_sha256=raw["checkpoint_sha256"],
        metrics=tuple(_decode_metric(m, i)
                      for i, m in enumerate(_wire_list(raw["metrics"], "metrics"))),
        started_at=raw["started_at"],
        finished_at=raw["finished_at"],
        budget=budget,
        resumed_from=_decode_resumed_from(raw["resumed_from"]),
        privacy_unit=raw["privacy_unit"],
        neighbouring=raw["neighbouring"],
        search=_decode_search(raw["search"]) if tuning else None,
        audit_log_sha256=raw["audit_log_sha256"] if audited else None,
        audit_log_events=raw["audit_log_events"] if audited else None,
    )
