"""Sealed dataset headers for the planning and checking tests: a public schema and a budget."""
from __future__ import annotations

import pyarrow as pa

from enclave.sealed.format import SealedHeader, build_encryption_context
from enclave.sealed.records import NUM_CLASSES_METADATA_KEY, schema_bytes, schema_sha256

RECORDS = 10_000
# The key the test specs name under [checkpoint] (test_plan, test_check).
MODEL_OWNER_KEY = "alias/model"


def image_field(name: str = "image", size: int = 784, value: pa.DataType | None = None,
                shape: bytes | None = b"28x28") -> pa.Field:
    metadata = None if shape is None else {b"shape": shape}
    return pa.field(name, pa.list_(value or pa.uint8(), size), nullable=False, metadata=metadata)


def label_field(name: str = "label", kind: pa.DataType | None = None, classes: int | None = 10) -> pa.Field:
    """A label column declaring `classes` classes, as `hermetic seal` writes it (None: no declaration)."""
    metadata = None if classes is None else {NUM_CLASSES_METADATA_KEY: str(classes).encode()}
    return pa.field(name, kind or pa.uint8(), nullable=False, metadata=metadata)


def fmnist_schema() -> pa.Schema:
    """The schema `hermetic seal` gives a Fashion-MNIST IDX pair."""
    return pa.schema([image_field(), label_field()])


def dataset_header(*, schema: pa.Schema | None = None, dataset_id: str = "plan-ds", max_epsilon: float = 3.0,
                   delta: float = 1e-5, records: int = RECORDS) -> SealedHeader:
    schema = fmnist_schema() if schema is None else schema
    return SealedHeader(
        key_id="arn:aws:kms:us-east-1:111122223333:key/plan",
        encrypted_data_key=b"k" * 48,
        encryption_context=build_encryption_context(
            dataset_id=dataset_id, owner="owner", max_epsilon=max_epsilon, delta=delta,
            record_count=records, schema_sha256=schema_sha256(schema),
            ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
            model_owner_keys=[MODEL_OWNER_KEY],
        ),
        chunk_size=1 << 16,
        schema=schema_bytes(schema),
    )
