"""Whether a verified certificate is about the sealed datasets and job spec the verifier holds.

A valid certificate says what one job did; a data owner also wants to know that the
job read *their* sealed file (and so spent *their* budget), a model owner that it ran
*their* spec. Both are facts the enclave recorded in the body: the dataset's id, the
SHA-256 of the sealed file as streamed, its KMS key and encryption context (the
budget, record count and schema hash), `JobSpec.sha256`, and the hash of the job's
declarative model (`JobSpec.model_sha256`: the inline model, or the named preset's
as this release defines it). Compare them only with
a certificate `verify_certificate` accepted: before that the body is anyone's claim.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from enclave.certificate.body import CertificateBody, DatasetRecord
from enclave.errors import ConfigError, HermeticError
from enclave.sealed.format import FORMAT_CONTEXT_KEY, PAYLOAD
from enclave.sealed.stream import read_header
from enclave.training.spec import JobSpec
from parent.verify.errors import SubjectMismatch

__all__ = [
    "MAX_SPEC_SIZE",
    "SealedFile",
    "check_sealed",
    "check_spec",
    "read_sealed_file",
    "read_spec",
    "spec_sha256",
]

log = logging.getLogger(__name__)

MAX_SPEC_SIZE = 1 << 20
# The budget first: when a file was resealed with another budget, that is the news, not its hash.
_CONTEXT_ORDER = ("max_epsilon", "delta", "record_count", "schema_sha256", "owner", FORMAT_CONTEXT_KEY)
_HASH_CHUNK = 1 << 20
_SHORT = 8  # hex digits kept at each end of a long value, as in PCR messages


@dataclass(frozen=True)
class SealedFile:
    """What a certificate records about a sealed dataset, read from the file itself."""

    name: str  # as the verifier named it, for messages
    dataset_id: str
    sha256: str  # of the whole file, as the enclave hashed the stream
    key_id: str
    encryption_context: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encryption_context", MappingProxyType(dict(self.encryption_context)))


def read_sealed_file(path: str | os.PathLike[str]) -> SealedFile:
    """The header's id, key and context and the SHA-256 of every byte; the data stays sealed."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            try:
                header = read_header(handle)
            except HermeticError as err:
                raise ConfigError(f"sealed file {name}: {err}") from None
            if header.payload != PAYLOAD:
                raise ConfigError(f"sealed file {name} holds {header.payload!r}, not a dataset")
            handle.seek(0)
            digest = hashlib.sha256()
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise ConfigError(f"cannot read sealed file {name}: {err.strerror or err}") from None
    return SealedFile(
        name=name,
        dataset_id=header.encryption_context["dataset_id"],
        sha256=digest.hexdigest(),
        key_id=header.key_id,
        encryption_context=header.encryption_context,
    )


def spec_sha256(path: str | os.PathLike[str]) -> str:
    """`JobSpec.sha256` of the spec file: what the certificate's spec_sha256 records."""
    return read_spec(path).sha256


def read_spec(path: str | os.PathLike[str]) -> JobSpec:
    """The job spec file, parsed; ConfigError (naming the file) if it is no spec or names no known model."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read(MAX_SPEC_SIZE + 1)
    except OSError as err:
        raise ConfigError(f"cannot read job spec {name}: {err.strerror or err}") from None
    if len(raw) > MAX_SPEC_SIZE:
        raise ConfigError(f"job spec {name} is larger than {MAX_SPEC_SIZE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"job spec {name} is not UTF-8 text") from None
    try:
        spec = JobSpec.from_toml(text)
        # A preset this release does not define has no model hash to compare: refused here.
        _ = spec.model_sha256
        return spec
    except HermeticError as err:
        raise ConfigError(f"job spec {name}: {err}") from None


def check_sealed(body: CertificateBody, sealed: Sequence[SealedFile]) -> None:
    """Every sealed file is a dataset the certificate lists, with the same bytes, key and context.

    SubjectMismatch names the first field that differs and both values. Datasets the
    certificate lists beyond these are not checked: each owner verifies their own.
    """
    records = {record.dataset_id: record for record in body.datasets}
    for given in sealed:
        record = records.get(given.dataset_id)
        if record is None:
            listed = ", ".join(repr(r.dataset_id[:64]) for r in body.datasets[:4])
            raise SubjectMismatch(
                f"dataset_id: sealed file {given.name} is dataset {given.dataset_id[:64]!r}, "
                f"the certificate lists {listed}"
            )
        _check_record(record, given)
        log.info("certificate dataset %s matches sealed file %s", given.dataset_id, given.name)


def _check_record(record: DatasetRecord, given: SealedFile) -> None:
    certified, found = record.encryption_context, given.encryption_context
    keys = [*_CONTEXT_ORDER, *sorted(set(certified) | set(found))]
    for key in dict.fromkeys(keys):
        if certified.get(key) != found.get(key):
            _mismatch(f"encryption_context {key} of dataset {given.dataset_id[:64]!r}",
                      certified.get(key), found.get(key), given.name)
    if record.key_id != given.key_id:
        _mismatch(f"key_id of dataset {given.dataset_id[:64]!r}", record.key_id, given.key_id, given.name)
    if record.sealed_sha256 != given.sha256:
        _mismatch(f"sealed_sha256 of dataset {given.dataset_id[:64]!r}", record.sealed_sha256, given.sha256,
                  given.name)


def check_spec(body: CertificateBody, sha256: str, name: str, model_spec_sha256: str | None = None) -> None:
    """The certificate's spec_sha256 is `sha256` (of the spec file `name`), and its model_spec_sha256
    `model_spec_sha256` when given (the spec's model format hash); SubjectMismatch otherwise."""
    if body.spec_sha256 != sha256:
        _mismatch("spec_sha256", body.spec_sha256, sha256, name)
    if model_spec_sha256 is not None and body.model_spec_sha256 != model_spec_sha256:
        _mismatch("model_spec_sha256", body.model_spec_sha256, model_spec_sha256, name)
    log.info("certificate spec_sha256%s matches job spec %s",
             "" if model_spec_sha256 is None else " and model_spec_sha256", name)


def _mismatch(what: str, certified: str | None, found: str | None, name: str) -> None:
    shown_certified, shown_found = _shown_pair(certified, found)
    raise SubjectMismatch(f"{what}: certificate {shown_certified}, {name} {shown_found}")


def _shown_pair(left: str | None, right: str | None) -> tuple[str, str]:
    """Both values for one line: long hex shortened, yet never shortened to the same text."""
    if left is None or right is None:
        return _shown(left), _shown(right)
    shown_left, shown_right = _shown(left), _shown(right)
    if shown_left == shown_right:
        first = next((i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
                     min(len(left), len(right)))
        start, end = max(first - 4, 0), first + _SHORT
        shown_left, shown_right = (("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
                                   for text in (left, right))
    return shown_left, shown_right


def _shown(value: str | None) -> str:
    if value is None:
        return "(absent)"
    if len(value) > 2 * _SHORT + 4 and all(c in "0123456789abcdefABCDEF" for c in value):
        return f"{value[:_SHORT]}...{value[-_SHORT:]}"
    return repr(value[:128])
