"""The label column checked at sealing: integers in [0, K), K declared in the public schema.

The class count K is public by the data owner's declaration: it goes into the label
field's metadata (`enclave.sealed.records.NUM_CLASSES_METADATA_KEY`), so into the header's
schema, whose SHA-256 the encryption context binds. Every label is checked against it
here, on the owner's machine, so no label the model cannot take ever reaches the
enclave, where the failure would be a signal that depends on the data.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from enclave.errors import ConfigError
from enclave.sealed.records import MAX_NUM_CLASSES
from parent.datasets.base import MalformedDataset

DEFAULT_LABEL_COLUMN = "label"


class LabelOutOfRange(MalformedDataset):
    """A label is missing, negative or not below the declared class count."""


@dataclass(frozen=True)
class LabelCheck:
    """What a pass over the label column found: the class count to declare, and how it was chosen."""

    column: str
    num_classes: int
    declared: bool  # False: max(label) + 1, shown to the owner as their choice


def label_type_problem(schema: pa.Schema, column: str) -> str | None:
    """Why `column` of `schema` cannot be a label column, or None."""
    if len(schema.get_all_field_indices(column)) != 1:
        return f"the dataset has no single column {column!r} to take labels from"
    kind = schema.field(column).type
    if not pa.types.is_integer(kind):
        return f"label column {column!r} is {kind}: labels must be integer class indices"
    return None


def check_batch(batch: pa.RecordBatch, column: str, num_classes: int, first_row: int) -> None:
    """LabelOutOfRange naming the first row (counted from 0) whose label is missing or outside [0, K)."""
    labels = batch.column(batch.schema.get_field_index(column))
    if labels.null_count:
        row = first_row + int(np.flatnonzero(labels.is_null().to_numpy(zero_copy_only=False))[0])
        raise LabelOutOfRange(f"row {row}: the label is missing")
    values = labels.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        row = int(bad[0])
        if values[row] < 0:
            raise LabelOutOfRange(f"row {first_row + row}: label {values[row]} is negative (column {column!r})")
        raise LabelOutOfRange(
            f"row {first_row + row}: label {values[row]} is outside [0, {num_classes}) "
            f"(column {column!r}, {num_classes} classes)"
        )


def scan_labels(batches: Iterable[pa.RecordBatch], column: str, num_classes: int | None) -> LabelCheck:
    """Check every label against `num_classes`, or find max(label) + 1 when it is None."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_NUM_CLASSES
    ):
        raise ConfigError(f"the class count must be an integer in [1, {MAX_NUM_CLASSES}], got {num_classes!r}")
    largest = -1
    row = 0
    for batch in batches:
        if num_classes is not None:
            check_batch(batch, column, num_classes, row)
        else:
            # Any label above the bound is refused too: the count derived below could not hold it.
            check_batch(batch, column, MAX_NUM_CLASSES, row)
            labels = batch.column(batch.schema.get_field_index(column))
            if len(labels):
                largest = max(largest, int(pc.max(labels).as_py()))
        row += batch.num_rows
    if num_classes is not None:
        return LabelCheck(column, num_classes, declared=True)
    if largest < 0:
        raise ConfigError(f"label column {column!r} holds no labels: give the class count with --num-classes")
    return LabelCheck(column, largest + 1, declared=False)
