"""Attack: learn the private data from a digest of it that leaves the enclave.

A SHA-256 of the plaintext is not noised: with every record but one known, hashing
each candidate for the last one finds it (epsilon is infinite). Nothing the enclave
sends, the parent writes or the enclave logs may contain one, whole or truncated.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pytest

from enclave.ledger.local import local_backends
from enclave.transport.address import UnixAddress
from enclave.transport.messages import Message, TrainingJob
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.local.mock_nsm import MockNsm
from parent.proxy.artifacts import ArtifactSink
from parent.proxy.job import RelayTarget, run_job
from tests.integration.conftest import DataPath, Sealed
from tests.integration.conftest import data_path as data_path

STEPS = 6


def _spec(model_key: str) -> str:
    return f"""
[job]
name = "digest-scan"
[model]
name = "mlp"
[optimizer]
name = "sgd"
lr = 0.5
[privacy]
expected_batch_size = 50
steps = {STEPS}
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.5
[checkpoint]
every_steps = 3
key_id = "{model_key}"
"""


class Tap:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, direction: str, data: bytes) -> None:
        self.chunks.append(bytes(data))


def _digests(sealed: Sealed, source: Path, ipc: bytes) -> dict[str, bytes]:
    """Every digest of private plaintext an attacker could match: raw, hex, and the hex prefixes ids use."""
    values: dict[str, bytes] = {
        "source file": hashlib.sha256(source.read_bytes()).digest(),
        "arrow ipc stream": hashlib.sha256(ipc).digest(),
    }
    for i in range(0, len(sealed.labels), max(1, len(sealed.labels) // 40)):
        row = sealed.features[i].tobytes()
        values[f"record {i} features"] = hashlib.sha256(row).digest()
        values[f"record {i} features+label"] = hashlib.sha256(row + sealed.labels[i : i + 1].tobytes()).digest()
    return values


def _hits(blob: bytes, digests: dict[str, bytes], *, prefixes: bool) -> list[str]:
    found = []
    for name, digest in digests.items():
        forms = [digest, digest.hex().encode(), digest.hex().upper().encode()]
        if prefixes:
            forms.append(digest.hex()[:8].encode())
        if any(form in blob for form in forms):
            found.append(name)
    return found


def test_no_plaintext_digest_leaves_in_any_message_file_or_log(
    data_path: DataPath, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    src_dir = tmp_path / "owner"
    src_dir.mkdir()
    # No --dataset-id: a derived id is part of what leaves (encryption context, certificate).
    sealed = data_path.seal(src_dir, records=1000, dataset_id=None)
    source = src_dir / "patients.npz"
    captured: list[bytes] = []

    # The exact IPC stream the owner sealed, as the enclave decrypts it.
    import enclave.datasets as datasets

    real_read_table = datasets.read_table

    def spy(chunks: Any) -> pa.Table:
        def keep() -> Any:
            for chunk in chunks:
                captured.append(bytes(chunk))
                yield chunk
        return real_read_table(keep())

    caplog.set_level(logging.DEBUG)
    control = UnixAddress(str(data_path.sock_dir / "digest.sock"))
    relay = UnixAddress(str(data_path.sock_dir / "digest-kms.sock"))
    runtime = SocketEnclave(RuntimeConfig(control=control, kms_relay=relay), MockNsm(data_path.ca, pcrs=data_path.pcrs),
                            ledgers=local_backends(data_path.ledger_dir))
    thread = threading.Thread(target=runtime.serve, kwargs={"sessions": 1}, daemon=True)
    out = tmp_path / "out"
    sink = ArtifactSink(out)
    messages: list[Message] = []
    tap = Tap()
    port = int(data_path.emulator.url.rsplit(":", 1)[1].rstrip("/"))
    target = RelayTarget("127.0.0.1", port)
    monkeypatch.setattr(datasets, "read_table", spy)
    thread.start()
    try:
        outcome = run_job(
            enclave=control, relay_listen=relay, kms_target=target, allow_list=[target],
            credentials=data_path.credentials(), job_id="job-digest", datasets=[(sealed.result.dataset_id, str(sealed.path))],
            extra=[TrainingJob(spec_toml=_spec(data_path.model_key_id))], tap=tap,
            on_message=lambda m: (sink(m), messages.append(m)),
        )
    finally:
        runtime.stop()
        thread.join(timeout=60)
    assert outcome.status == "ok", outcome.detail
    sink.write_summary()
    (out / "outcome.json").write_text(json.dumps(
        {"audit": [{"kind": e.kind, **e.fields} for e in outcome.audit_events], "detail": outcome.detail},
        default=str,
    ))
    ipc = b"".join(captured)
    assert ipc and pa.ipc.open_stream(ipc).read_all().num_rows == 1000
    digests = _digests(sealed, source, ipc)

    # Every byte on the parent's sockets: control messages both ways, the KMS relay.
    assert _hits(b"".join(tap.chunks), digests, prefixes=False) == []
    # The structured releases (no ciphertext in them), where even an 8-hex prefix is a leak.
    structured = json.dumps(
        [{"kind": e.kind, **e.fields} for e in outcome.audit_events] + [outcome.detail, sealed.result.dataset_id],
        default=str,
    ).encode()
    assert _hits(structured, digests, prefixes=True) == []
    assert any(e.kind == "dataset_opened" for e in outcome.audit_events)
    # Every file the parent and the owner wrote that leaves the owner's machine.
    written = [p for p in out.rglob("*") if p.is_file()] + [sealed.path]
    assert len(written) >= 4
    for path in written:
        assert _hits(path.read_bytes(), digests, prefixes=False) == [], path
    certificate = (out / "certificate.cbor").read_bytes()
    assert _hits(certificate, digests, prefixes=True) == []
    # The owner's seal result as `hermetic seal --json` prints it: nothing there invites a comparison.
    assert _hits(json.dumps(sealed.result.to_json()).encode(), digests, prefixes=True) == []
    # The enclave's log (the parent reads its console on Nitro).
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert _hits(logged, digests, prefixes=True) == []
    # The scan can fail: a digest placed in the data is found.
    assert _hits(b"x" + digests["arrow ipc stream"].hex().encode(), digests, prefixes=False) == ["arrow ipc stream"]
