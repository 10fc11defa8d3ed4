"""A job that outlives the parent's first credentials, through the real data path.

The parent starts with short-lived credentials the KMS emulator issued (as STS does).
Expiry is made deterministic, not waited for: the data key is released with the first
credentials (`dataset_opened` says so); then, while the public set is still streaming
and so before training starts, KMS's clock is moved to just inside the refresh margin,
the parent's refresher (on the same clock) sends new credentials between two dataset
frames, and KMS's clock is moved past the first credentials' expiry. Every checkpoint,
the final one included, is sealed after that. Without the refresh the first
checkpoint's GenerateDataKey meets ExpiredTokenException.
"""
from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.transport.address import UnixAddress
from enclave.transport.messages import PUBLIC_PREFIX, AuditEvent, Credentials, Message, TrainingJob
from parent.local.kms import SessionCredentials
from parent.local.mock_nsm import MockNsm
from parent.proxy.artifacts import ArtifactSink
from parent.proxy.credentials import CredentialsRefresher
from parent.proxy.job import RelayTarget, run_job
from parent.proxy.session import EnclaveError, SessionOutcome
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.integration.conftest import PARENT, REGION, DataPath
from tests.integration.test_training import STEPS, _in_process_enclave, _streams, spec_toml

EXPIRED = "ExpiredTokenException: The security token included in the request is expired"


def _message(creds: SessionCredentials, kms_url: str) -> Credentials:
    return Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token, REGION, kms_url,
                       creds.expiration_ms)


class ExpiringJob:
    """One job whose first credentials expire once its data key is out, before training."""

    def __init__(self, data_path: DataPath, name: str, *, refresh: bool) -> None:
        self.data_path = data_path
        self.name = name
        emulator, clock = data_path.emulator, data_path.kms_clock
        self.first = emulator.assume_role(PARENT[2], f"{name}-first", lifetime=timedelta(minutes=3))
        self.issued: list[SessionCredentials] = []
        self.refresher = (
            CredentialsRefresher(self._renewed, clock=lambda: clock().timestamp()) if refresh else None
        )
        self.opened = threading.Event()
        self.expired = False

    def _renewed(self) -> Credentials:
        """The parent's environment after the instance role rotated: new STS credentials."""
        creds = self.data_path.emulator.assume_role(PARENT[2], f"{self.name}-renewed", lifetime=timedelta(hours=1))
        self.issued.append(creds)
        return _message(creds, self.data_path.emulator.url)

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, AuditEvent) and msg.kind == "dataset_opened":
            self.opened.set()

    def _progress(self, dataset_id: str, n: int) -> None:
        if dataset_id != PUBLIC_PREFIX + "holdout" or self.expired:
            return
        # The sealed dataset's key was released with the first credentials.
        assert self.opened.wait(timeout=120)
        clock = self.data_path.kms_clock
        clock.set(self.first.expiration - timedelta(seconds=30))  # inside the refresh margin
        if self.refresher is not None:
            assert self.refresher.refresh_if_due()  # between this frame and the stream's end
        clock.set(self.first.expiration + timedelta(seconds=1))  # the first credentials are dead
        self.expired = True

    def run(self, tmp_path: Path) -> SessionOutcome:
        data_path, name = self.data_path, self.name
        sealed = data_path.seal(tmp_path, records=2000, width=784)
        runtime, thread = _in_process_enclave(data_path, name, MockNsm(data_path.ca, pcrs=data_path.pcrs))
        sink = ArtifactSink(tmp_path / "out")

        def on_message(msg: Message) -> None:
            sink(msg)
            self._on_message(msg)

        port = int(data_path.emulator.url.rsplit(":", 1)[1])
        target = RelayTarget("127.0.0.1", port)
        try:
            return run_job(
                enclave=UnixAddress(str(data_path.sock_dir / f"{name}.sock")),
                relay_listen=UnixAddress(str(data_path.sock_dir / f"{name}-kms.sock")),
                kms_target=target, allow_list=[target], job_id=f"job-{name}",
                credentials=_message(self.first, data_path.emulator.url),
                datasets=_streams(data_path, sealed, tmp_path),
                extra=[TrainingJob(spec_toml=spec_toml(data_path.model_key_id))],
                on_message=on_message, progress=self._progress, refresher=self.refresher,
            )
        finally:
            data_path.kms_clock.ahead = timedelta(0)
            runtime.stop()
            thread.join(timeout=30)
            assert not thread.is_alive()


def test_a_job_outliving_its_first_credentials_seals_its_final_checkpoint(
    data_path: DataPath, tmp_path: Path
) -> None:
    job = ExpiringJob(data_path, "refreshed", refresh=True)
    outcome = job.run(tmp_path)
    assert outcome.status == "ok" and job.expired
    assert job.refresher is not None and job.refresher.refreshes == 1 and len(job.issued) == 1
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000010.sealed", "step-00000020.sealed", "step-00000030.sealed"
    ]
    final = (out / "model.ckpt.sealed").read_bytes()
    body = verify_certificate((out / "certificate.cbor").read_bytes(), root_der=data_path.ca.root_der,
                              policy=AttestationPolicy.from_pcrs(data_path.pcrs)).body
    assert body.steps == STEPS and body.checkpoint_sha256 == hashlib.sha256(final).hexdigest()
    # The refresh was needed: past their expiry, KMS refuses the first credentials.
    first = boto3.session.Session().client(
        "kms", endpoint_url=data_path.emulator.url, region_name=REGION, aws_access_key_id=job.first.access_key_id,
        aws_secret_access_key=job.first.secret_access_key, aws_session_token=job.first.session_token,
    )
    data_path.kms_clock.set(job.first.expiration + timedelta(seconds=1))
    try:
        with pytest.raises(ClientError) as info:
            first.generate_random(NumberOfBytes=8)
    finally:
        data_path.kms_clock.ahead = timedelta(0)
    assert info.value.response["Error"]["Code"] == "ExpiredTokenException"


def test_the_same_job_without_refresh_fails_with_the_expired_token(data_path: DataPath, tmp_path: Path) -> None:
    job = ExpiringJob(data_path, "unrefreshed", refresh=False)
    with pytest.raises(EnclaveError) as info:
        job.run(tmp_path)
    assert job.expired and not job.issued
    # The data was opened by then: the reason (the parent's own expired token) stays in the log.
    assert (info.value.remote_code, info.value.remote_message) == (OPENED_FAILURE_CODE, OPENED_FAILURE)
    assert not (tmp_path / "out" / "certificate.cbor").exists()
    assert not (tmp_path / "out" / "model.ckpt.sealed").exists()
