"""`hermetic budget show` on an S3 ledger: sealed with `--ledger s3://...?owner=`, entries written by
the enclave's reserve code, read back from the host through a real S3-compatible server (moto on
loopback, tests/support/s3_server.py, which also answers KMS for the seal)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enclave.ledger.reserve import dataset_budget, ledger_signing_key, reserve
from enclave.ledger.s3 import S3LedgerStore
from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.sealed.format import SealedHeader
from enclave.sealed.stream import read_header
from parent.cli import main
from tests.support.s3_server import S3Server, s3_server

DATASET = "ward-7"
SEGMENTS = [Segment(0.02, 1.0, 20)]  # epsilon ~0.9 alone, ~1.07 twice: both fit the cap of 3


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI uses boto3's default credential chain; the test server takes any keys.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def kms(server: S3Server) -> Any:
    import boto3

    return boto3.session.Session().client("kms", endpoint_url=server.endpoint, region_name=server.region)


def seal(server: S3Server, tmp_path: Path, location: str, capsys: pytest.CaptureFixture[str]) -> SealedHeader:
    key_id = kms(server).create_key()["KeyMetadata"]["KeyId"]
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", image=rng.integers(0, 256, (50, 16), dtype=np.uint8),
             label=rng.integers(0, 10, 50, dtype=np.uint8))
    sealed = tmp_path / "d.sealed"
    assert main(["seal", str(tmp_path / "d.npz"), "--key-id", key_id, "--ledger", location, "--max-epsilon", "3",
                 "--delta", "1e-5", "--owner", "hospital", "--dataset-id", DATASET,
                 "--model-owner-key", "arn:aws:kms:us-east-1:123456789012:key/model-owner", "--kms-endpoint", server.endpoint,
                 "--region", server.region, "--out", str(sealed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["encryption_context"]["ledger"] == location
    with open(sealed, "rb") as fh:
        return read_header(fh)


def write_entry(server: S3Server, header: SealedHeader, job_id: str) -> None:
    """What an enclave does once KMS released the data key: derive the ledger key, reserve."""
    data_key = kms(server).decrypt(CiphertextBlob=header.encrypted_data_key,
                                   EncryptionContext=dict(header.encryption_context))["Plaintext"]
    store = S3LedgerStore.for_dataset(header.ledger_location, header.dataset_id, server.client())
    reserve(store, ledger_signing_key(header, data_key), budget=dataset_budget(header), job_id=job_id,
            accountant="prv", job_delta=1e-5, segments=SEGMENTS, nonce=os.urandom(16), now=lambda: 1_700_000_000,
            accept_unprotected=False)


def show(server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["budget", "show", str(tmp_path / "d.sealed"), "--region", server.region,
                 "--s3-endpoint-url", server.endpoint, "--json"])
    return code, json.loads(capsys.readouterr().out)


def bucket(server: S3Server) -> str:
    name = server.unique_bucket("ledgers")
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_budget_show_reads_an_s3_ledger_the_enclave_wrote(
    server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = bucket(server)
    header = seal(server, tmp_path, f"s3://{name}/hermetic?owner={server.account_id}", capsys)
    code, report = show(server, tmp_path, capsys)
    assert code == 0 and report["valid"] is True and report["entries"] == [] and report["spent_epsilon"] == 0.0

    write_entry(server, header, "job-1")
    write_entry(server, header, "job-2")
    code, report = show(server, tmp_path, capsys)
    assert code == 0 and report["valid"] is True
    spent = compose_epsilon(SEGMENTS * 2, 1e-5, "prv")
    assert report["spent_epsilon"] == pytest.approx(spent)
    assert report["remaining_epsilon"] == pytest.approx(3.0 - spent)
    assert [(e["slot"], e["job_id"], e["protected"]) for e in report["entries"]] == [
        (0, "job-1", True), (1, "job-2", True)]
    keys = [o["Key"] for o in server.client().list_objects_v2(Bucket=name)["Contents"]]
    assert keys == [f"hermetic/{DATASET}/0000000000", f"hermetic/{DATASET}/0000000001"]

    # The parent replays an entry into the next slot, without Object Lock: counted by neither side.
    body = server.client().get_object(Bucket=name, Key=keys[1])["Body"].read()
    server.client().put_object(Bucket=name, Key=f"hermetic/{DATASET}/0000000002", Body=body)
    code, report = show(server, tmp_path, capsys)
    assert code == 0 and report["spent_epsilon"] == pytest.approx(spent) and len(report["entries"]) == 2
    assert [i["slot"] for i in report["ignored"]] == [2]


def test_budget_show_sends_the_expected_bucket_owner(
    server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Sealed for a bucket owned by another account than the one answering: S3 refuses the read.
    seal(server, tmp_path, f"s3://{bucket(server)}/hermetic?owner=999999999999", capsys)
    code = main(["budget", "show", str(tmp_path / "d.sealed"), "--region", server.region,
                 "--s3-endpoint-url", server.endpoint, "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 1 and error["code"] == "budget" and "AccessDenied" in error["error"]


def test_privacy_plan_reads_the_s3_ledger_and_counts_the_jobs_that_fit(
    server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = seal(server, tmp_path, f"s3://{bucket(server)}/hermetic?owner={server.account_id}", capsys)
    write_entry(server, header, "job-1")
    spec = tmp_path / "job.toml"
    # 50 records at a batch of 1: q = 0.02, the entry's own run.
    spec.write_text('[job]\nname = "again"\n[model]\nname = "mlp"\n[optimizer]\nname = "sgd"\nlr = 0.1\n'
                    '[privacy]\nexpected_batch_size = 1\nsteps = 20\nmax_grad_norm = 1.0\ndelta = 1e-5\n'
                    'noise_multiplier = 1.0\n[checkpoint]\nkey_id = "alias/model"\n', encoding="utf-8")
    assert main(["privacy", "plan", str(spec), "--sealed", str(tmp_path / "d.sealed"), "--region", server.region,
                 "--s3-endpoint-url", server.endpoint, "--json"]) == 0
    [dataset] = json.loads(capsys.readouterr().out)["datasets"]
    assert dataset["spent"] == compose_epsilon(SEGMENTS, 1e-5, "prv")
    k = dataset["more_jobs"]
    assert compose_epsilon(SEGMENTS * (k + 1), 1e-5, "prv") <= 3.0 < compose_epsilon(SEGMENTS * (k + 2), 1e-5, "prv")
