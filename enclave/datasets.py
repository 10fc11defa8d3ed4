"""Open a relayed sealed dataset inside the enclave and hand it over whole.

Nothing reaches the trainer until every chunk has authenticated, the final
chunk was seen, no bytes follow it, and the record count and schema hash agree
with the KMS-bound encryption context. DP-SGD samples records at random, so the
enclave holds the decrypted table in memory anyway; decryption itself streams.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.ipc

from enclave.errors import DatasetError
from enclave.sealed.errors import EncryptionContextMismatch
from enclave.sealed.format import SealedHeader
from enclave.sealed.records import read_table, verify_records
from enclave.sealed.stream import ByteSource, iter_plaintext, read_header

log = logging.getLogger(__name__)


class DataKeyOpener(Protocol):
    def decrypt(
        self, ciphertext_blob: bytes, encryption_context: dict[str, str], key_id: str | None = None
    ) -> bytes: ...


@dataclass(frozen=True)
class OpenedDataset:
    dataset_id: str
    header: SealedHeader
    table: pa.Table

    @property
    def records(self) -> int:
        return int(self.table.num_rows)


def open_sealed_dataset(
    stream: ByteSource,
    *,
    expected_dataset_id: str,
    kms: DataKeyOpener,
    check_header: Callable[[SealedHeader], None] | None = None,
    on_data_key: Callable[[SealedHeader, bytes], None] | None = None,
) -> OpenedDataset:
    """Read the header, get the data key from KMS, decrypt and verify everything.

    `check_header` runs on the header before KMS is asked for the key (the budget
    check): a job refused there never touches the key. `on_data_key` sees the key
    once KMS released it, before any chunk is decrypted (the ledger key is derived
    from it); what it raises ends the job there.
    """
    header = read_header(stream)
    if header.dataset_id != expected_dataset_id:
        raise EncryptionContextMismatch(
            f"sealed file is dataset {header.dataset_id!r}, the job asked for {expected_dataset_id!r}"
        )
    if check_header is not None:
        check_header(header)
    data_key = kms.decrypt(
        header.encrypted_data_key, dict(header.encryption_context), key_id=header.key_id
    )
    # No digest of the plaintext is kept: it would be an un-noised function of the
    # private data, and AES-GCM already proves the bytes are the owner's.
    try:
        if on_data_key is not None:
            on_data_key(header, data_key)
        table = read_table(iter_plaintext(stream, header, data_key))
    finally:
        del data_key
    verify_records(header, table.schema, table.num_rows)
    log.info("opened dataset %s: %d records", header.dataset_id, table.num_rows)
    return OpenedDataset(dataset_id=header.dataset_id, header=header, table=table)


def read_ipc_table(data: bytes, what: str) -> pa.Table:
    """A whole Arrow IPC stream held in memory (public data), with a typed error."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowException, ValueError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DatasetError(f"{what} is not a valid Arrow IPC stream: {first}") from None
