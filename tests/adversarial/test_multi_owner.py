"""Two data owners, one job: each seals with its own KMS key, cap and ledger; the job trains on the
union of their records, or is refused before any key use, naming the owner whose cap it would pass.

Real parts, as in test_ledger_scenario: the KMS emulator, MockNsm, the enclave runtime in process
with the local-directory ledger, the parent's relay and session, the real trainer on tiny datasets,
and `hermetic job check` for the schema refusal."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enclave.privacy.ledger import Segment, compose_epsilon
from enclave.sealed.stream import read_header
from enclave.training.trainer import Trainer
from enclave.transport.messages import CertificateIssued
from parent.cli import main
from parent.policy_render import render_policy
from parent.proxy.session import EnclaveError
from parent.seal import seal_dataset
from parent.verify.certificate import verify_certificate
from parent.verify.policy import AttestationPolicy
from tests.integration.conftest import OWNER, PARENT, REPO, CountingNsm, DataPath, kms_client
from tests.integration.conftest import data_path as data_path  # the module-scoped fixture, shared here
from tests.support.specs import mlp_spec

RECORDS = 300  # each owner's; q = 60 / 600 over the union


def spec(model_key: str, datasets: list[str], steps: int, sigma: float) -> str:
    return mlp_spec(key_id=model_key, name="two-owners", steps=steps, noise=sigma, batch=60, train=datasets)


def owner_key(data_path: DataPath) -> str:
    """A second data-owner key, under the same key policy (the enclave's PCRs, the parent role)."""
    policy = render_policy(
        REPO / "kms-policies" / "data-owner.template.json",
        {f"PCR{i}": v.hex() for i, v in data_path.pcrs.items()},
        {"OWNER_ARN": OWNER[2], "PARENT_ROLE_ARN": PARENT[2]},
    )
    return str(kms_client(data_path.emulator.url, OWNER).create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"])


def seal(data_path: DataPath, folder: Path, dataset_id: str, *, key_id: str, max_epsilon: float, seed: int,
         label_dtype: Any = np.uint8) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    np.savez(folder / "d.npz", image=rng.integers(0, 256, (RECORDS, 784), dtype=np.uint8),
             label=rng.integers(0, 10, RECORDS).astype(label_dtype))
    out = folder / "d.sealed"
    seal_dataset(folder / "d.npz", out, key_id=key_id, kms_client=kms_client(data_path.emulator.url, OWNER),
                 max_epsilon=max_epsilon, delta=1e-5, owner=dataset_id.split("-")[0], dataset_id=dataset_id,
                 ledger=data_path.ledger_location, num_classes=10, model_owner_keys=[data_path.model_key_id])
    return out


def entries(data_path: DataPath, dataset_id: str) -> list[Path]:
    folder = data_path.ledger_dir / dataset_id
    return sorted(folder.glob("*.entry")) if folder.exists() else []


@pytest.fixture(scope="module")
def owners(data_path: DataPath, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """hospital-a caps at epsilon 10 under the data path's key; hospital-b at 3 under a key of its own."""
    root = tmp_path_factory.mktemp("owners")
    return {
        "hospital-a-v1": seal(data_path, root / "a", "hospital-a-v1", key_id=data_path.key_id, max_epsilon=10.0,
                              seed=1),
        "hospital-b-v1": seal(data_path, root / "b", "hospital-b-v1", key_id=owner_key(data_path), max_epsilon=3.0,
                              seed=2),
    }


def test_each_owner_has_its_own_key_and_cap(owners: dict[str, Path]) -> None:
    headers = []
    for path in owners.values():
        with path.open("rb") as handle:
            headers.append(read_header(handle))
    assert headers[0].key_id != headers[1].key_id
    assert [h.max_epsilon for h in headers] == [10.0, 3.0]


def test_a_job_over_one_owners_cap_is_refused_before_any_key_use_naming_that_owner(
    data_path: DataPath, owners: dict[str, Path]
) -> None:
    # sigma 0.8 for 40 steps at q = 0.1: about epsilon 5, within a's 10 and past b's 3.
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    job = spec(data_path.model_key_id, list(owners), steps=40, sigma=0.8)
    before = {dataset_id: entries(data_path, dataset_id) for dataset_id in owners}
    with pytest.raises(EnclaveError) as refused:
        data_path.run("hospital-a-v1", owners["hospital-a-v1"], name="too-much", spec=job, nsm=nsm,
                      more=[("hospital-b-v1", owners["hospital-b-v1"])])
    assert refused.value.remote_code == "budget"
    message = refused.value.remote_message
    assert "exceeds dataset 'hospital-b-v1''s budget 3" in message
    assert "hospital-a-v1''s budget" not in message
    assert nsm.attestations == 0  # no KMS call with Recipient: neither data key was asked for
    assert {dataset_id: entries(data_path, dataset_id) for dataset_id in owners} == before


def test_a_job_that_fits_both_trains_charges_both_ledgers_and_certifies_both(
    data_path: DataPath, owners: dict[str, Path]
) -> None:
    job = spec(data_path.model_key_id, list(owners), steps=10, sigma=2.0)
    # Streams in the spec's order are required: b before a is refused before any key.
    with pytest.raises(EnclaveError, match="in its order"):
        data_path.run("hospital-b-v1", owners["hospital-b-v1"], name="swapped", spec=job,
                      more=[("hospital-a-v1", owners["hospital-a-v1"])])
    outcome = data_path.run("hospital-a-v1", owners["hospital-a-v1"], name="both", spec=job,
                            training_loop=Trainer,  # type: ignore[arg-type]  # the real training loop
                            more=[("hospital-b-v1", owners["hospital-b-v1"])])
    assert outcome.status == "ok"
    opened = [a.fields["dataset_id"] for a in outcome.audit_events if a.kind == "dataset_opened"]
    reserved = {a.fields["dataset_id"]: a.fields for a in outcome.audit_events if a.kind == "budget_reserved"}
    assert sorted(opened) == sorted(reserved) == sorted(owners)
    assert [len(entries(data_path, dataset_id)) for dataset_id in owners] == [1, 1]
    [planned] = [a.fields for a in outcome.audit_events if a.kind == "training_planned"]
    assert planned["sampling_rate"] == pytest.approx(60 / (2 * RECORDS))  # q over the union
    expected = compose_epsilon([Segment(0.1, 2.0, 10)], 1e-5, "prv")

    [issued] = [m for m in outcome.messages if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=data_path.ca.root_der,
                              policy=AttestationPolicy.from_pcrs({0: data_path.pcrs[0]})).body
    assert [d.dataset_id for d in body.datasets] == list(owners)
    assert [d.records for d in body.datasets] == [RECORDS, RECORDS]
    assert body.budget["max_epsilon"] == 3.0  # the tighter owner's cap binds the one run
    for record in body.datasets:
        assert record.epsilon == pytest.approx(expected, rel=1e-6)
        assert record.dataset_epsilon == pytest.approx(reserved[record.dataset_id]["dataset_epsilon"])
        assert record.dataset_epsilon == pytest.approx(expected, rel=1e-3)

    # The same job again: each ledger now holds two entries, and each certificate record says so.
    again = data_path.run("hospital-a-v1", owners["hospital-a-v1"], name="again", spec=job,
                          training_loop=Trainer,  # type: ignore[arg-type]
                          more=[("hospital-b-v1", owners["hospital-b-v1"])])
    [issued] = [m for m in again.messages if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=data_path.ca.root_der,
                              policy=AttestationPolicy.from_pcrs({0: data_path.pcrs[0]})).body
    twice = compose_epsilon([Segment(0.1, 2.0, 20)], 1e-5, "prv")
    assert [d.dataset_epsilon for d in body.datasets] == pytest.approx([twice, twice], rel=1e-3)
    assert all(d.dataset_epsilon > d.epsilon for d in body.datasets)


def test_a_dataset_whose_schema_differs_is_refused_by_the_job_check(
    data_path: DataPath, owners: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = seal(data_path, tmp_path / "c", "hospital-c-v1", key_id=data_path.key_id, max_epsilon=10.0, seed=3,
                 label_dtype=np.int64)
    job = tmp_path / "job.toml"
    job.write_text(spec(data_path.model_key_id, ["hospital-a-v1", "hospital-c-v1"], steps=10, sigma=2.0))
    assert main(["job", "check", str(job), "--sealed", str(owners["hospital-a-v1"]), "--sealed", str(other),
                 "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    [problem] = report["problems"]
    assert problem["where"] == f"{other}: data.label"
    assert re.fullmatch(r"column 'label' is int64 with 10 classes, in .* it is uint8 with 10 classes: "
                        r"the datasets of one job share a schema", problem["message"])
    # The enclave runs the same check before any key: refused, nothing asked of KMS.
    nsm = CountingNsm(data_path.ca, pcrs=data_path.pcrs)
    with pytest.raises(EnclaveError) as refused:
        data_path.run("hospital-a-v1", owners["hospital-a-v1"], name="mixed", spec=job.read_text(), nsm=nsm,
                      more=[("hospital-c-v1", other)])
    assert refused.value.remote_code == "config" and "share a schema" in refused.value.remote_message
    assert nsm.attestations == 0
