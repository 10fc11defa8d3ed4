"""The budget story on an S3 ledger, with the enclave wired as `python -m enclave` is: S3 ledgers
only, protected slots only, reached through the enclave's own S3 forwarder with the session's
credentials. The parent's S3 relay is played by pointing the forwarder at a real S3-compatible
server on loopback (moto, tests/support/s3_server.py); KMS is the emulator with key policies and
Recipient, as in tests/adversarial/test_ledger_scenario.py (the local-directory version).

A cap of epsilon 3: a job planned at 2 trains and reserves a COMPLIANCE-locked slot, a second
planned at 2.8 is refused before any KMS Decrypt with the remaining budget in the message, and
`hermetic budget show` reads the same ledger from the host."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from enclave.ledger.s3 import DEFAULT_RETENTION
from enclave.training.trainer import Trainer
from enclave.transport.address import TcpAddress
from parent.cli import main
from parent.proxy.session import EnclaveError
from tests.adversarial.test_ledger_scenario import spec
from tests.integration.conftest import PARENT, CountingNsm, DataPath
from tests.integration.conftest import data_path as data_path  # the module-scoped fixture, shared here
from tests.support.s3_server import S3Server, s3_server

DATASET = "s3-scenario-v1"
PREFIX = "hermetic/ledgers"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


def test_a_second_job_past_the_cap_is_refused_before_any_key_use_on_an_s3_ledger(
    data_path: DataPath, server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = server.unique_bucket("ledger")
    server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    location = f"s3://{bucket}/{PREFIX}?owner={server.account_id}"
    sealed = data_path.seal(tmp_path, dataset_id=DATASET, ledger=location)
    assert sealed.result.encryption_context["ledger"] == location
    endpoint = urlsplit(server.endpoint)
    assert endpoint.hostname and endpoint.port
    relay = TcpAddress(endpoint.hostname, endpoint.port)

    del server.access_keys[:]
    first = data_path.run(DATASET, sealed.path, name="s3-first", spec=spec(data_path.model_key_id, 2.0),
                          training_loop=Trainer, s3_relay=relay)  # type: ignore[arg-type]  # the real loop
    assert first.status == "ok"
    [reserved] = [a for a in first.audit_events if a.kind == "budget_reserved"]
    assert reserved.fields["dataset_epsilon"] == pytest.approx(2.0, abs=0.01)
    # Every ledger request was signed with the credentials the parent handed the session.
    assert server.access_keys and set(server.access_keys) == {PARENT[0]}

    key = f"{PREFIX}/{DATASET}/0000000000"
    assert [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    head = server.client().head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert abs(head["ObjectLockRetainUntilDate"] - (datetime.now(UTC) + DEFAULT_RETENTION)) < timedelta(hours=1)

    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as refused:
        data_path.run(DATASET, sealed.path, name="s3-second", spec=spec(data_path.model_key_id, 2.8), nsm=nsm,
                      s3_relay=relay)
    assert refused.value.remote_code == "budget"
    assert re.search(r"has spent epsilon (1\.99|2\.00)\d* of its 3 \(remaining (0\.99|1\.00)", refused.value.remote_message)
    assert nsm.attestations == 0  # no KMS call with Recipient: the data key was never asked for
    assert [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]] == [key]

    # The data owner reads the same ledger from the host, with boto3's usual credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "owner")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "owner-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert main(["budget", "show", str(sealed.path), "--region", server.region, "--s3-endpoint-url", server.endpoint,
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["ledger"] == location
    assert report["spent_epsilon"] == pytest.approx(2.0, abs=0.01)
    assert report["remaining_epsilon"] == pytest.approx(1.0, abs=0.01)
    [entry] = report["entries"]
    assert entry["job_id"] == "s3-first" and entry["protected"] is True


def test_without_an_s3_relay_the_production_wiring_refuses_the_job_in_one_line(
    data_path: DataPath, server: S3Server, tmp_path: Path
) -> None:
    location = f"s3://{server.unique_bucket('ledger')}/{PREFIX}?owner={server.account_id}"
    sealed = data_path.seal(tmp_path, dataset_id="s3-norelay-v1", ledger=location)
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as refused:
        data_path.run("s3-norelay-v1", sealed.path, name="s3-norelay", nsm=nsm, s3_ledgers=True)
    assert refused.value.remote_code == "budget" and "no S3 relay (--s3-relay)" in refused.value.remote_message
    assert "\n" not in refused.value.remote_message and nsm.attestations == 0
