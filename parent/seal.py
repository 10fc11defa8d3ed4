"""Seal a dataset for the enclave: the data owner's side of `hermetic seal`.

The dataset is streamed (reader -> Arrow IPC stream -> chunked AES-256-GCM ->
temporary file) under a fresh 256-bit data key (from the OS CSPRNG) wrapped by one
KMS Encrypt whose encryption context binds the dataset id, owner, privacy budget,
record count, schema hash and the budget ledger (its location, and the public half
of the ledger signing key derived from the data key: `enclave.hazmat.ledger_key`);
the header also carries the schema itself (`schema_bytes`), so a
job can be checked against the data's shape without a key. The output appears
atomically or not at all.

Without an explicit id, the dataset id is derived from where the input is, never from
what it holds: its file name stem (reduced to [A-Za-z0-9._-], at most 64 characters) +
"-" + the first 8 hex digits of the SHA-256 of the owner and the inputs' absolute paths.
The id is public (it is in the sealed file's header), so a hash of the content would
let anyone who knows all records but one test guesses of the last; the path keeps the id
stable for a file sealed again where it is, by the same owner.

Nothing the seal writes or returns holds a digest of the plaintext either: the
sealed file's own SHA-256 (of ciphertext) identifies it, and AES-GCM proves the
enclave opened the owner's bytes. The record count is public metadata: it is in
the encryption context, in the clear.

Every column gets a public schema (`enclave.sealed.public_schema`), declared by the
owner or inferred from its type where that reveals nothing private
(`parent.datasets.schema`), written into the header's field metadata. Every row is
checked against it before KMS is asked for a key, and again as it is written, so an
authentic sealed file never fails a schema check in the enclave. The label column
(default "label") holds class indices in [0, K), K declared (`num_classes`, or the
class names) or max(label) + 1 for integer labels, reported as chosen; or it is a
regression target.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.ipc

from enclave.errors import ConfigError, DatasetError, KmsError
from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.sealed.errors import MalformedHeader
from enclave.sealed.format import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_SCHEMA_SIZE,
    MIN_CHUNK_SIZE,
    SealedHeader,
    build_encryption_context,
)
from enclave.sealed.public_schema import ClassLabel, PublicSchema
from enclave.sealed.records import schema_bytes, schema_sha256
from enclave.sealed.stream import SealWriter
from parent.datasets import DEFAULT_BATCH_ROWS, DatasetReader, open_dataset
from parent.datasets.labels import LabelCheck
from parent.datasets.schema import LabelDecl, SchemaDeclaration, SealPlan, plan_schema
from parent.storage import open_atomic

log = logging.getLogger(__name__)

DATA_KEY_BYTES = 32
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID = 128


class KmsClient(Protocol):
    """The slice of a boto3 KMS client that sealing uses."""

    def encrypt(self, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class SealResult:
    out_path: Path
    dataset_id: str
    record_count: int
    schema_sha256: str
    sealed_sha256: str  # SHA-256 of the whole sealed file (ciphertext: public)
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    dataset_id_source: str = "given"  # or "derived": from the owner and the input's path (see above)
    labels: LabelCheck | None = None  # None: the dataset has no class label column
    schema: PublicSchema | None = None  # what every column is, as the header declares it

    def __post_init__(self) -> None:
        object.__setattr__(self, "encryption_context", MappingProxyType(dict(self.encryption_context)))

    def to_json(self) -> dict[str, Any]:
        return {
            "out_path": str(self.out_path),
            "dataset_id": self.dataset_id,
            "dataset_id_source": self.dataset_id_source,
            "record_count": self.record_count,
            "schema_sha256": self.schema_sha256,
            "sealed_sha256": self.sealed_sha256,
            "encryption_context": dict(self.encryption_context),
            "label_column": self.labels.column if self.labels else None,
            "num_classes": self.labels.num_classes if self.labels else None,
            "num_classes_source": ("given" if self.labels.declared else "derived") if self.labels else None,
            "schema": self.schema.to_json() if self.schema is not None else None,
        }


DERIVED_HASH_HEX = 8


def derived_dataset_id(paths: Sequence[str | os.PathLike[str]], owner: str) -> str:
    """The stable id of a dataset read from `paths`: file stem + 8 hex of a hash of owner and paths."""
    if not paths:
        raise ConfigError("a dataset id is required for an input that is not read from files")
    where = "\0".join(["hermetic-dataset-id-v1", owner, *(str(Path(p).resolve()) for p in paths)])
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()
    name = Path(paths[0]).name
    for suffix in (".gz",):
        name = name.removesuffix(suffix)
    stem = _ID_CHARS.sub("-", Path(name).stem).strip("-.") or "dataset"
    return f"{stem[:64]}-{digest[:DERIVED_HASH_HEX]}"


def _validate(
    max_epsilon: float, delta: float, owner: str, key_id: str, dataset_id: str, chunk_size: int
) -> None:
    if isinstance(max_epsilon, bool) or not isinstance(max_epsilon, (int, float)):
        raise ConfigError("max_epsilon must be a number")
    if not (math.isfinite(max_epsilon) and max_epsilon > 0):
        raise ConfigError(f"max_epsilon must be finite and > 0, got {max_epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    if not owner or not owner.strip():
        raise ConfigError("owner must not be empty")
    if not key_id:
        raise ConfigError("key_id must not be empty")
    if not dataset_id or len(dataset_id) > _MAX_ID or _ID_CHARS.search(dataset_id):
        raise ConfigError(f"dataset_id must be 1..{_MAX_ID} characters of [A-Za-z0-9._-]")
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise ConfigError(f"chunk_size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")


class _Sink:
    """Write target that forwards what passes through (the file-like shape Arrow's writer wants)."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._target.write(view)
        self._pos += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


class _HashingSink(_Sink):
    """A `_Sink` that also hashes what passes through (the sealed file: ciphertext)."""

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        self._hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._hash.update(memoryview(data))
        return super().write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _wrap_data_key(
    kms_client: KmsClient, key_id: str, ctx: Mapping[str, str], data_key: bytes
) -> tuple[str, bytes]:
    """KMS Encrypt of the data key under the full context: (the key id for the header, the blob)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)
    except ImportError:  # a fake client in tests does not need botocore
        errors = ()
    try:
        response = dict(kms_client.encrypt(KeyId=key_id, Plaintext=data_key, EncryptionContext=dict(ctx)))
    except errors as err:
        raise KmsError(f"KMS Encrypt of the data key failed for {key_id}: {err}") from None
    blob = response.get("CiphertextBlob")
    if not isinstance(blob, (bytes, bytearray)) or not blob:
        raise KmsError("KMS Encrypt returned no CiphertextBlob")
    # The full key ARN KMS reports is stable even when the caller used an alias.
    returned_id = response.get("KeyId")
    header_key_id = returned_id if isinstance(returned_id, str) and returned_id else key_id
    return header_key_id, bytes(blob)


def seal_dataset(
    input_path: str | os.PathLike[str] | DatasetReader,
    out_path: str | os.PathLike[str],
    *,
    key_id: str,
    kms_client: KmsClient,
    max_epsilon: float,
    delta: float,
    owner: str,
    ledger: str,
    model_owner_keys: Sequence[str],
    dataset_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
    num_classes: int | None = None,
    label_column: str | None = None,
    schema: SchemaDeclaration | None = None,
) -> SealResult:
    """Seal a dataset into `out_path`, its budget ledger at `ledger` (a location URI).

    `model_owner_keys` are the KMS keys the data owner allows a job's checkpoints, and
    so the model, to be sealed under; the enclave refuses any other.

    `input_path` may also be an already opened DatasetReader (the CLI passes
    one so the record count is not computed twice). `progress`, if given, is
    called with the number of records sealed in each batch (an increment,
    the shape tqdm's update() takes). Without `label_column` the labels are the
    column "label" if there is one; naming a column or a class count requires it.
    `schema` is the rest of what the owner declares (`parent.datasets.schema`).
    """
    reader = input_path if isinstance(input_path, DatasetReader) else open_dataset(input_path)
    source = "given"
    if dataset_id is None:
        dataset_id, source = derived_dataset_id(reader.paths, owner), "derived"
    _validate(max_epsilon, delta, owner, key_id, dataset_id, chunk_size)
    out = Path(out_path)
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory")

    record_count = reader.count()
    declaration = SchemaDeclaration(label=LabelDecl(column=label_column, num_classes=num_classes))
    if schema is not None:
        declaration = declaration.merged(schema)
    # One pass over every row before any key exists; the writer checks again what it writes.
    plan, scanned = plan_schema(reader.schema(), declaration).scan(reader.iter_batches(batch_rows))
    _check_count(scanned, record_count)
    labels = _label_check(plan)
    schema_out = plan.schema
    public_schema = schema_bytes(schema_out)
    if len(public_schema) > MAX_SCHEMA_SIZE:
        raise ConfigError(
            f"the dataset's schema is {len(public_schema)} bytes, a sealed header holds at most "
            f"{MAX_SCHEMA_SIZE}: seal only the columns training needs (--drop), or hash large vocabularies "
            "(--categorical COL#N)"
        )
    schema_hash = schema_sha256(schema_out)
    # The context must hold the ledger key's public half, which the data key determines, so the
    # key is drawn here and wrapped with one KMS Encrypt (GenerateDataKey wants the context first).
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    try:
        ctx = build_encryption_context(
            dataset_id=dataset_id,
            owner=owner,
            max_epsilon=float(max_epsilon),
            delta=float(delta),
            record_count=record_count,
            schema_sha256=schema_hash,
            ledger=ledger,
            ledger_public_key=LedgerSigningKey(data_key, dataset_id).public_key_hex,
            model_owner_keys=list(model_owner_keys),
        )
    except MalformedHeader as err:
        raise ConfigError(str(err)) from None

    header_key_id, blob = _wrap_data_key(kms_client, key_id, ctx, data_key)
    try:
        header = SealedHeader(
            key_id=header_key_id,
            encrypted_data_key=blob,
            encryption_context=ctx,
            chunk_size=chunk_size,
            schema=public_schema,
        )
    except MalformedHeader as err:
        raise KmsError(f"KMS response unusable in a sealed header: {err}") from None

    with open_atomic(out) as raw:
        sealed_sink = _HashingSink(raw)
        writer = SealWriter(sealed_sink, header, data_key)
        del data_key  # the writer's cipher holds the only reference now
        with writer:
            written = _write_ipc(reader, plan, _Sink(writer), batch_rows, progress)
        _check_count(written, record_count)
    log.info("sealed %s records of %s into %s", record_count, dataset_id, out)
    return SealResult(
        out_path=out,
        dataset_id=dataset_id,
        record_count=record_count,
        schema_sha256=schema_hash,
        sealed_sha256=sealed_sink.hexdigest(),
        encryption_context=ctx,
        dataset_id_source=source,
        labels=labels,
        schema=plan.public,
    )


def _check_count(rows: int, record_count: int) -> None:
    if rows != record_count:
        raise DatasetError(
            f"dataset yielded {rows} records but was counted as {record_count}; did the input change while sealing?"
        )


def _label_check(plan: SealPlan) -> LabelCheck | None:
    label = plan.public.label
    if not isinstance(label, ClassLabel):
        return None
    return LabelCheck(label.name, label.num_classes, declared=not plan.label_derived)


def _write_ipc(
    reader: DatasetReader,
    plan: SealPlan,
    sink: BinaryIO | _Sink,
    batch_rows: int,
    progress: Callable[[int], None] | None,
) -> int:
    written = 0
    source = reader.schema()
    try:
        with pa.ipc.new_stream(sink, plan.schema) as ipc:
            for batch in reader.iter_batches(batch_rows):
                if not batch.schema.equals(source):
                    raise DatasetError("a record batch does not match the dataset schema")
                # Checked again as written: the input may have changed since the scan.
                ipc.write_batch(plan.convert(batch, written))
                written += batch.num_rows
                if progress is not None:
                    progress(batch.num_rows)
    except pa.ArrowException as err:
        raise DatasetError(f"cannot encode the dataset as Arrow IPC: {err}") from None
    return written
