"""A real sealed file relayed by the parent is opened in the enclave from the stream."""
from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from enclave.errors import TransportError
from enclave.sealed.errors import ChunkAuthenticationFailed
from enclave.sealed.format import SealedHeader, build_encryption_context
from enclave.sealed.stream import iter_plaintext, read_header, seal_stream
from enclave.transport.framing import FramedChannel
from enclave.transport.stream import DatasetStreamReader
from parent.proxy.streamer import stream_dataset
from parent.sources import LocalSource


def _sealed_file(tmp_path, plaintext: bytes, key: bytes):
    ctx = build_encryption_context(
        dataset_id="ds-relay", owner="hospital-a", max_epsilon=3.0, delta=1e-5,
        record_count=10, schema_sha256=hashlib.sha256(b"schema").hexdigest(),
        ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
        model_owner_keys=["alias/hermetic-model-owner"],
    )
    header = SealedHeader(key_id="alias/test", encrypted_data_key=b"\x01" * 40,
                          encryption_context=ctx, chunk_size=64 * 1024, schema=b"schema")
    path = tmp_path / "ds.sealed"
    with open(path, "wb") as out:
        seal_stream([plaintext[i : i + 50_000] for i in range(0, len(plaintext), 50_000)],
                    header, key, out)
    return path


def _relay_and_open(path, key: bytes, tamper: bool = False) -> tuple[bytes, DatasetStreamReader]:
    a, b = socket.socketpair()
    parent, enclave = FramedChannel(a), FramedChannel(b)
    if tamper:
        data = bytearray(path.read_bytes())
        data[-40] ^= 1
        path.write_bytes(bytes(data))
    source = LocalSource(str(path))

    def send() -> None:
        try:
            stream_dataset(parent, 0, "ds-relay", source, 32 * 1024)
        except TransportError:
            pass  # the enclave stopped reading a bad file

    t = threading.Thread(target=send)
    t.start()
    try:
        reader = DatasetStreamReader(enclave, timeout=10)
        header = read_header(reader)
        plain = b"".join(iter_plaintext(reader, header, key))
        return plain, reader
    finally:
        enclave.close()  # unblocks the sender if the enclave gave up early
        t.join()
        source.close()
        parent.close()


def test_sealed_file_opens_from_the_relayed_stream(tmp_path) -> None:
    key = os.urandom(32)
    plaintext = os.urandom(300_000)
    path = _sealed_file(tmp_path, plaintext, key)
    plain, reader = _relay_and_open(path, key)
    assert plain == plaintext
    assert reader.finished
    assert reader.sha256_hex == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tampered_sealed_file_fails_authentication(tmp_path) -> None:
    key = os.urandom(32)
    path = _sealed_file(tmp_path, os.urandom(100_000), key)
    with pytest.raises(ChunkAuthenticationFailed):
        _relay_and_open(path, key, tamper=True)
