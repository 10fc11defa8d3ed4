"""The data owner's story, end to end in seconds: `hermetic seal --local` with a cap of epsilon 3, a
job planned at epsilon 2 trains, a second planned at 2.8 (which alone fits the cap) is refused
before any key use with the remaining budget in the message, and `hermetic budget show` reports
spent ~2 and remaining ~1.

Real parts: the KMS emulator (SigV4, key policies, Recipient), MockNsm, the enclave runtime in
process with the local-directory ledger, the parent's relay and session, the real trainer on a
tiny dataset. The appliance's state file names the emulator, as `hermetic local up` would."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from enclave.training.trainer import Trainer
from enclave.transport.messages import CertificateIssued
from parent.appliance import KMS_SERVICE, ApplianceState, AwsCredentials, IdentityRecord, ServiceRecord, start_ticks
from parent.cli import main
from parent.proxy.session import EnclaveError
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.integration.conftest import OWNER, CountingNsm, DataPath
from tests.integration.conftest import data_path as data_path  # the module-scoped fixture, shared here

DATASET = "scenario-v1"


def spec(model_key: str, target_epsilon: float) -> str:
    return f"""
[job]
name = "budget-scenario"
[model]
name = "mlp"
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 300
epochs = 2
max_grad_norm = 1.0
delta = 1e-5
target_epsilon = {target_epsilon}
[checkpoint]
key_id = "{model_key}"
"""


def local_state(data_path: DataPath) -> Path:
    """An appliance state in the data path's folder: its KMS, the data owner, the ledger at state/ledger."""
    state_dir = data_path.state_dir
    owner_file = state_dir / "identities" / "data-owner.json"
    owner_file.parent.mkdir(exist_ok=True)
    AwsCredentials("data-owner", OWNER[2], OWNER[0], OWNER[1]).save(owner_file)
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    ApplianceState(
        state_dir=str(state_dir), region="us-east-1", account_id="111122223333",
        kms_endpoint=data_path.emulator.url.rstrip("/"), enclave="unix:///nowhere", kms_relay="unix:///nowhere",
        run_dir=str(state_dir), data_owner_key=data_path.key_id, model_owner_key=data_path.model_key_id,
        data_owner_alias="alias/d", model_owner_alias="alias/m", root=str(state_dir / "root.pem"),
        measurements=str(state_dir / "m.json"), pcrs={},
        identities={"data-owner": IdentityRecord("data-owner", OWNER[2], str(owner_file))},
        # This process stands in for the running emulator (it serves it, on a thread).
        services={KMS_SERVICE: ServiceRecord(KMS_SERVICE, os.getpid(), ticks, "now", (), "", data_path.emulator.url)},
    ).save()
    return state_dir


def seal_cli(state: Path, tmp_path: Path, stem: str, dataset_id: str, seed: int,
             capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict]:
    """3000 random images sealed through `hermetic seal --local` at cap 3; the file and its context."""
    rng = np.random.default_rng(seed)
    np.savez(tmp_path / f"{stem}.npz", image=rng.integers(0, 256, (3000, 784), dtype=np.uint8),
             label=rng.integers(0, 10, 3000, dtype=np.uint8))
    sealed = tmp_path / f"{stem}.sealed"
    assert main(["seal", str(tmp_path / f"{stem}.npz"), "--local", str(state), "--out", str(sealed), "--max-epsilon",
                 "3", "--delta", "1e-5", "--dataset-id", dataset_id, "--json"]) == 0
    return sealed, json.loads(capsys.readouterr().out)["encryption_context"]


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = main(["budget", "show", *argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == (0 if report.get("valid") else 1)
    return report


def test_a_second_job_past_the_cap_is_refused_before_any_key_use(
    data_path: DataPath, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = local_state(data_path)
    sealed, context = seal_cli(state, tmp_path, "d", DATASET, 2, capsys)
    assert context["ledger"] == f"local:{(state / 'ledger').resolve()}"

    first = data_path.run(DATASET, sealed, name="first", spec=spec(data_path.model_key_id, 2.0),
                          training_loop=Trainer)  # type: ignore[arg-type]  # the real training loop
    assert first.status == "ok"
    [reserved] = [a for a in first.audit_events if a.kind == "budget_reserved"]
    assert reserved.fields["dataset_epsilon"] == pytest.approx(2.0, abs=0.01)
    # The certificate states this job's epsilon and the dataset's, every ledger entry included.
    [issued] = [m for m in first.messages if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=data_path.ca.root_der,
                              policy=AttestationPolicy.from_pcrs({0: data_path.pcrs[0]})).body
    assert body.datasets[0].dataset_epsilon == reserved.fields["dataset_epsilon"]

    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as refused:
        data_path.run(DATASET, sealed, name="second", spec=spec(data_path.model_key_id, 2.8), nsm=nsm)
    assert refused.value.remote_code == "budget"
    assert re.search(r"has spent epsilon (1\.99|2\.00)\d* of its 3 \(remaining (0\.99|1\.00)", refused.value.remote_message)
    assert nsm.attestations == 0  # no KMS call with Recipient: the data key was never asked for

    for target in (str(sealed), DATASET):
        report = show(capsys, target, "--local", str(state))
        assert report["valid"] is True
        assert (report["max_epsilon"], report["delta"]) == (3.0, 1e-5)
        assert report["spent_epsilon"] == pytest.approx(2.0, abs=0.01)
        assert report["remaining_epsilon"] == pytest.approx(1.0, abs=0.01)
        [entry] = report["entries"]
        assert entry["job_id"] == "first" and entry["steps"] == 20 and entry["protected"] is False
        assert entry["segments"][0]["q"] == pytest.approx(0.1)

    assert main(["budget", "show", str(sealed)]) == 0
    text = capsys.readouterr().out
    assert "remaining  epsilon 1.0" in text and "job first" in text and "chain verifies" in text

    # The parent deletes the newest file and rewrites history: the host sees it as the enclave does.
    ledger = state / "ledger" / DATASET
    (ledger / "0000000001.entry").write_bytes((ledger / "0000000000.entry").read_bytes())
    (ledger / "0000000000.entry").unlink()
    report = show(capsys, str(sealed))
    assert report["valid"] is False and "slot 0 is missing" in report["problem"]
    assert report["spent_epsilon"] is None


def test_jobs_compose_exactly_and_budget_show_agrees_with_privacy_epsilon(
    data_path: DataPath, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cap 3, jobs planned at 2: under exact (PRV) composition two of them spend about 2.7, so
    the second trains and the third is refused before any key use; what `budget show` reports
    spent is what `hermetic privacy epsilon --and` composes from the same runs."""
    state = local_state(data_path)
    sealed, _ = seal_cli(state, tmp_path, "c", "compose-v1", 3, capsys)
    for name in ("one", "two"):
        outcome = data_path.run("compose-v1", sealed, name=f"compose-{name}", spec=spec(data_path.model_key_id, 2.0))
        assert outcome.status == "ok"
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as refused:
        data_path.run("compose-v1", sealed, name="compose-three", spec=spec(data_path.model_key_id, 2.0), nsm=nsm)
    assert refused.value.remote_code == "budget" and nsm.attestations == 0

    report = show(capsys, str(sealed))
    runs = [seg for entry in report["entries"] for seg in entry["segments"]]
    assert len(runs) == 2
    first, *more = runs
    argv = ["privacy", "epsilon", "--sampling-rate", repr(first["q"]), "--noise-multiplier", repr(first["sigma"]),
            "--steps", str(first["steps"]), "--delta", "1e-05", "--json"]
    for seg in more:
        argv += ["--and", f"{seg['q']!r},{seg['sigma']!r},{seg['steps']}"]
    assert main(argv) == 0
    composed = json.loads(capsys.readouterr().out)["epsilon"]
    assert report["spent_epsilon"] == pytest.approx(composed, rel=1e-9)
    assert 2.5 < composed < 3.0, "two jobs at epsilon 2 compose to well under 4"


def test_job_check_reads_the_local_ledger_as_the_enclave_will(
    data_path: DataPath, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offline, before any key: `hermetic job check --sealed` refuses a job the ledger cannot afford."""
    state = local_state(data_path)
    sealed, _ = seal_cli(state, tmp_path, "k", "check-v1", 4, capsys)
    job = tmp_path / "job.toml"
    job.write_text(spec(data_path.model_key_id, 2.8))
    assert main(["job", "check", str(job), "--sealed", str(sealed), "--json"]) == 0
    ledger = json.loads(capsys.readouterr().out)["ledger"][str(sealed)]
    assert ledger["spent_epsilon"] == 0.0 and ledger["remaining_epsilon"] == 3.0
    assert ledger["dataset_epsilon_with_job"] == pytest.approx(ledger["job_epsilon"]) == pytest.approx(2.8, rel=1e-3)
    assert data_path.run("check-v1", sealed, name="check-first", spec=spec(data_path.model_key_id, 2.0)).status == "ok"
    # A second job at 2 fits: the two compose to under the cap of 3, which the check shows.
    second = tmp_path / "second.toml"
    second.write_text(spec(data_path.model_key_id, 2.0))
    assert main(["job", "check", str(second), "--sealed", str(sealed)]) == 0
    out = capsys.readouterr().out
    assert "ledger: spent epsilon 2 of 3 (remaining 1); with this job every entry composes to 2." in out, out
    assert main(["job", "check", str(job), "--sealed", str(sealed), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    [problem] = verdict["problems"]
    assert problem["where"].endswith(": ledger") and "remaining" in problem["message"]
