"""Training jobs through the real data path: budget refusal, certificates, resume after SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from enclave.ledger.local import local_backends
from enclave.privacy.calibration import epsilon
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.transport.address import UnixAddress
from enclave.transport.messages import PUBLIC_PREFIX, RESUME_STREAM, CheckpointEnd, Message, TrainingJob
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.local.mock_nsm import MockNsm
from parent.proxy.artifacts import ArtifactSink
from parent.proxy.job import RelayTarget, run_job
from parent.proxy.session import EnclaveError, SessionOutcome
from parent.public_data import load_public_dataset
from parent.sources import BytesSource
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.integration.conftest import REPO, DataPath, Sealed

STEPS = 30


def spec_toml(model_key: str, *, noise: float = 1.5, steps: int = STEPS) -> str:
    return f"""
[job]
name = "integration"
[model]
name = "mlp"
[optimizer]
name = "sgd"
lr = 0.5
[privacy]
expected_batch_size = 100
steps = {steps}
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = {noise}
[eval]
public = "holdout"
every_steps = 10
[checkpoint]
every_steps = 10
key_id = "{model_key}"
"""


class CountingNsm(MockNsm):
    """A MockNsm that counts attestations: each KMS call with Recipient needs one."""

    attestations = 0

    def attest(self, **kwargs: Any) -> bytes:
        type(self).attestations += 1
        return super().attest(**kwargs)


def _streams(data_path: DataPath, sealed: Sealed, tmp_path: Path, resume: Path | None = None) -> list[Any]:
    public_src = tmp_path / "holdout.npz"
    if not public_src.exists():
        import numpy as np

        rng = np.random.default_rng(3)
        np.savez(public_src, image=rng.integers(0, 256, (300, 784), dtype=np.uint8),
                 label=rng.integers(0, 10, 300, dtype=np.uint8))
    public = load_public_dataset("holdout", public_src)
    streams: list[Any] = [
        (sealed.result.dataset_id, str(sealed.path)),
        (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc)),
    ]
    if resume is not None:
        streams.append((RESUME_STREAM, str(resume)))
    return streams


def _run_parent(
    data_path: DataPath,
    name: str,
    job_id: str,
    streams: list[Any],
    spec: str,
    out: Path,
    on_message: Any = None,
) -> SessionOutcome:
    control = UnixAddress(str(data_path.sock_dir / f"{name}.sock"))
    relay = UnixAddress(str(data_path.sock_dir / f"{name}-kms.sock"))
    port = int(data_path.emulator.url.rsplit(":", 1)[1].rstrip("/"))
    target = RelayTarget("127.0.0.1", port)
    sink = ArtifactSink(out)

    def handle(msg: Message) -> None:
        sink(msg)
        if on_message is not None:
            on_message(msg)

    return run_job(
        enclave=control, relay_listen=relay, kms_target=target, allow_list=[target],
        credentials=data_path.credentials(), job_id=job_id, datasets=streams,
        extra=[TrainingJob(spec_toml=spec)], on_message=handle,
    )


def _in_process_enclave(data_path: DataPath, name: str, nsm: MockNsm) -> tuple[SocketEnclave, threading.Thread]:
    control = UnixAddress(str(data_path.sock_dir / f"{name}.sock"))
    relay = UnixAddress(str(data_path.sock_dir / f"{name}-kms.sock"))
    runtime = SocketEnclave(RuntimeConfig(control=control, kms_relay=relay), nsm,
                            ledgers=local_backends(data_path.ledger_dir))
    thread = threading.Thread(target=runtime.serve, kwargs={"sessions": 1}, daemon=True)
    thread.start()
    return runtime, thread


def _train_in_process(data_path: DataPath, name: str, streams: list[Any], spec: str, out: Path) -> Any:
    """One job through an in-process enclave; the certificate's body, verified against the data path's PCRs."""
    runtime, thread = _in_process_enclave(data_path, name, MockNsm(data_path.ca, pcrs=data_path.pcrs))
    try:
        outcome = _run_parent(data_path, name, f"job-{name}", streams, spec, out)
    finally:
        runtime.stop()
        thread.join(timeout=30)
    assert outcome.status == "ok", outcome
    verified = verify_certificate((out / "certificate.cbor").read_bytes(), root_der=data_path.ca.root_der,
                                  policy=AttestationPolicy.from_pcrs(data_path.pcrs))
    return verified.body


def _enclave_process(data_path: DataPath, name: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "parent.cli", "mock-enclave", "run", "--state", str(data_path.state_dir),
         "--listen", f"unix://{data_path.sock_dir / (name + '.sock')}",
         "--kms-relay", f"unix://{data_path.sock_dir / (name + '-kms.sock')}", "--sessions", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"ready ")  # readiness, not a timer
    return proc


def test_training_job_releases_checkpoints_and_a_verifiable_certificate(
    data_path: DataPath, tmp_path: Path
) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    out = tmp_path / "out"
    body = _train_in_process(data_path, "train", _streams(data_path, sealed, tmp_path),
                             spec_toml(data_path.model_key_id), out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000010.sealed", "step-00000020.sealed", "step-00000030.sealed"
    ]
    assert body.steps == STEPS and body.datasets[0].dataset_id == sealed.result.dataset_id
    assert body.epsilon["prv"] == pytest.approx(epsilon(100 / 2000, 1.5, STEPS, 1e-5))
    assert [m.step for m in body.metrics] == [10, 20, 30]
    assert all(m.kind == "public_eval" for m in body.metrics)


def test_over_budget_job_is_refused_before_any_key_is_used(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784, max_epsilon=1.0)
    CountingNsm.attestations = 0
    runtime, thread = _in_process_enclave(data_path, "greedy", CountingNsm(data_path.ca, pcrs=data_path.pcrs))
    try:
        with pytest.raises(EnclaveError) as info:
            _run_parent(data_path, "greedy", "job-greedy", _streams(data_path, sealed, tmp_path),
                        spec_toml(data_path.model_key_id, noise=0.7, steps=200), tmp_path / "out")
    finally:
        runtime.stop()
        thread.join(timeout=30)
    assert info.value.remote_code == "budget"
    assert "exceeds the dataset's budget 1" in str(info.value)
    # No attestation was made, so no KMS request could have carried one: the key was never released.
    assert CountingNsm.attestations == 0
    assert not info.value.audit_events
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_uninterrupted_epsilon(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    spec = spec_toml(data_path.model_key_id)

    # 1. Kill the enclave with SIGKILL as soon as the step-10 checkpoint has left it.
    victim = _enclave_process(data_path, "victim")

    def kill_after_first_checkpoint(msg: Message) -> None:
        if isinstance(msg, CheckpointEnd) and msg.step == 10:
            os.kill(victim.pid, signal.SIGKILL)

    try:
        with pytest.raises(Exception):  # noqa: B017 - the enclave vanished mid-job
            _run_parent(data_path, "victim", "job-resume", _streams(data_path, sealed, tmp_path), spec,
                        tmp_path / "first", on_message=kill_after_first_checkpoint)
    finally:
        victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    checkpoint = tmp_path / "first" / "checkpoints" / "step-00000010.sealed"
    assert checkpoint.exists() and not (tmp_path / "first" / "certificate.cbor").exists()

    # 2. A fresh enclave resumes from it, under the same job id and spec.
    second = _enclave_process(data_path, "resumed")
    try:
        _run_parent(data_path, "resumed", "job-resume", _streams(data_path, sealed, tmp_path, checkpoint), spec,
                    tmp_path / "second")
    finally:
        second.wait(timeout=60)
    resumed = verify_certificate((tmp_path / "second" / "certificate.cbor").read_bytes(),
                                 root_der=data_path.ca.root_der,
                                 policy=AttestationPolicy.from_pcrs(data_path.pcrs)).body
    ckpts = sorted(p.name for p in (tmp_path / "second" / "checkpoints").iterdir())
    assert ckpts == ["step-00000020.sealed", "step-00000030.sealed"]  # continued, not restarted

    # 3. The same job without interruption.
    third = _enclave_process(data_path, "straight")
    try:
        _run_parent(data_path, "straight", "job-straight", _streams(data_path, sealed, tmp_path), spec,
                    tmp_path / "third")
    finally:
        third.wait(timeout=60)
    straight = verify_certificate((tmp_path / "third" / "certificate.cbor").read_bytes(),
                                  root_der=data_path.ca.root_der,
                                  policy=AttestationPolicy.from_pcrs(data_path.pcrs)).body

    assert resumed.steps == straight.steps == STEPS
    assert resumed.ledger == straight.ledger
    assert resumed.epsilon == straight.epsilon  # exactly, for every accountant
    assert [m.step for m in resumed.metrics] == [10, 20, 30]  # the pre-kill release is kept


def test_resume_under_another_job_id_is_refused(data_path: DataPath, tmp_path: Path) -> None:
    sealed = data_path.seal(tmp_path, records=2000, width=784)
    spec = spec_toml(data_path.model_key_id, steps=10)
    runtime, thread = _in_process_enclave(data_path, "orig", MockNsm(data_path.ca, pcrs=data_path.pcrs))
    try:
        _run_parent(data_path, "orig", "job-orig", _streams(data_path, sealed, tmp_path), spec, tmp_path / "o")
    finally:
        runtime.stop()
        thread.join(timeout=30)
    runtime, thread = _in_process_enclave(data_path, "thief", MockNsm(data_path.ca, pcrs=data_path.pcrs))
    try:
        with pytest.raises(EnclaveError) as info:
            _run_parent(data_path, "thief", "job-other",
                        _streams(data_path, sealed, tmp_path, tmp_path / "o" / "model.ckpt.sealed"),
                        spec, tmp_path / "t")
    finally:
        runtime.stop()
        thread.join(timeout=30)
    # The checkpoint comes after the sealed dataset: refused with the one constant Error.
    assert (info.value.remote_code, info.value.remote_message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
