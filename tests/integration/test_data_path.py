from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.sealed.format import SealedHeader
from enclave.sealed.stream import read_header
from parent.local.mock_nsm import MockNsm
from parent.proxy.session import EnclaveError
from tests.integration.conftest import CountingNsm, DataPath, RecordingLoop, spec_toml


class Recorder:
    """Everything the parent sent or received, on both its sockets."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, direction: str, data: bytes) -> None:
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def test_enclave_opens_what_the_owner_sealed_and_parent_sees_only_ciphertext(
    data_path: DataPath, tmp_path: Path
) -> None:
    sealed = data_path.seal(tmp_path)
    tap = Recorder()
    loop = RecordingLoop()
    outcome = data_path.run(sealed.result.dataset_id, sealed.path, tap=tap, training_loop=loop)

    assert outcome.status == "ok" and outcome.detail == "handed to the training loop"
    [event] = [e for e in outcome.audit_events if e.kind == "dataset_opened"]
    assert set(event.fields) == {"dataset_id", "records", "schema_sha256", "sealed_sha256"}
    assert event.fields["records"] == 3000
    # The training loop gets exactly the records the owner sealed, in order.
    [inputs] = loop.inputs
    [train] = inputs.train
    assert train.opened.dataset_id == sealed.result.dataset_id
    table = train.opened.table
    assert np.array(table.column("image").to_pylist(), dtype=np.uint8).tolist() == sealed.features.tolist()
    assert table.column("label").to_pylist() == sealed.labels.tolist()
    assert train.sealed_sha256 == hashlib.sha256(sealed.path.read_bytes()).hexdigest()

    traffic = tap.data
    # The sealed file went through, and so did KMS traffic (the relay was tapped too).
    assert len(traffic) > sealed.path.stat().st_size
    assert b"TrentService.Decrypt" in traffic
    assert sealed.data_key not in traffic
    for sample in sealed.plaintext_samples:
        assert sample not in traffic
    # The tap would have seen them: the same scan finds the ciphertext.
    assert sealed.path.read_bytes()[-48:] in traffic


def test_enclave_with_other_code_is_refused(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path)
    other = dict(data_path.pcrs)
    other[0] = hashlib.sha384(b"someone else's image").digest()
    loop = RecordingLoop()
    nsm = MockNsm(data_path.ca, pcrs=other)
    with pytest.raises(EnclaveError) as info:
        data_path.run(sealed.result.dataset_id, sealed.path, nsm=nsm, training_loop=loop, name="other")
    assert info.value.remote_code == "kms"
    assert "AccessDeniedException" in info.value.remote_message
    assert not info.value.audit_events
    assert not loop.inputs


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _header_end(path: Path) -> int:
    with path.open("rb") as fh:
        read_header(fh)
        return fh.tell()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip", "ChunkAuthenticationFailed"),
        ("truncate", "TruncatedSealedFile"),
        ("extend", "TrailingData"),
        ("reorder", "ChunkAuthenticationFailed"),
    ],
)
def test_damaged_sealed_files_release_nothing(
    data_path: DataPath, tmp_path: Path, damage: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    sealed = data_path.seal(tmp_path)
    start = _header_end(sealed.path)
    data = sealed.path.read_bytes()
    chunk = 4 + 64 * 1024 + 16  # length prefix + full chunk + tag
    if damage == "flip":
        _flip(sealed.path, start + chunk + 100)
    elif damage == "truncate":
        sealed.path.write_bytes(data[: start + 2 * chunk])
    elif damage == "extend":
        sealed.path.write_bytes(data + data[start : start + chunk])
    else:
        body = data[start:]
        sealed.path.write_bytes(data[:start] + body[chunk : 2 * chunk] + body[:chunk] + body[2 * chunk :])
    loop = RecordingLoop()
    caplog.set_level(logging.ERROR, logger="enclave.runtime")
    with pytest.raises(EnclaveError) as info:
        data_path.run(sealed.result.dataset_id, sealed.path, training_loop=loop, name=damage)
    # Found with the data key in hand: the parent gets the one constant Error, the log the class.
    assert (info.value.remote_code, info.value.remote_message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert f"({reason})" in caplog.text
    assert not info.value.audit_events
    assert not loop.inputs


def test_job_for_another_dataset_is_refused_before_kms(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path)
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as info:
        data_path.run("someone-elses-dataset", sealed.path, nsm=nsm, name="wrongid")
    assert info.value.remote_code == "sealed-data"
    assert "the job asked for 'someone-elses-dataset'" in info.value.remote_message
    assert not info.value.audit_events
    # Each KMS request carries a fresh attestation: none was made, so KMS was never asked.
    assert nsm.attestations == 0


def test_a_job_that_cannot_fit_the_data_is_refused_before_any_key_is_used(
    data_path: DataPath, tmp_path: Path
) -> None:
    sealed = data_path.seal(tmp_path, width=64)
    spec = spec_toml(data_path.model_key_id).replace('name = "mlp"', 'name = "tanh_cnn"\n[data]\nlabel = "target"')
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    tap = Recorder()
    with pytest.raises(EnclaveError) as info:
        data_path.run(sealed.result.dataset_id, sealed.path, nsm=nsm, tap=tap, name="misfit", spec=spec)
    assert info.value.remote_code == "config"
    assert info.value.remote_message == (
        f"the job cannot run on dataset {sealed.result.dataset_id!r} (2 problems): data.features: column 'image' "
        "holds 64 values per record, model 'tanh_cnn' takes 784 (1x28x28); data.label: column 'target' is not in "
        "the dataset (columns: 'image', 'label')"
    )
    assert not info.value.audit_events
    # No attestation, so no KMS request could carry one; and the relay carried no KMS call at all
    # (the same tap sees TrentService.Decrypt when a job fits, see the first test).
    assert nsm.attestations == 0
    assert b"TrentService" not in tap.data
    assert sealed.path.read_bytes()[:64] in tap.data  # the sealed file itself did go through the tap


def test_rewritten_encryption_context_is_refused_by_kms(data_path: DataPath, tmp_path: Path) -> None:
    """A parent that raises the budget in the header cannot get the key."""
    sealed = data_path.seal(tmp_path)
    with sealed.path.open("rb") as fh:
        header = read_header(fh)
        rest = fh.read()
    context = dict(header.encryption_context)
    context["max_epsilon"] = "100.0"
    forged = SealedHeader(
        key_id=header.key_id, encrypted_data_key=header.encrypted_data_key,
        encryption_context=context, chunk_size=header.chunk_size, schema=header.schema,
    )
    sealed.path.write_bytes(forged.encode() + rest)
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as info:
        data_path.run(sealed.result.dataset_id, sealed.path, nsm=nsm, name="forged")
    assert info.value.remote_code == "kms"
    assert "InvalidCiphertextException" in info.value.remote_message
    assert nsm.attestations == 1  # it was KMS that refused
    assert not info.value.audit_events
