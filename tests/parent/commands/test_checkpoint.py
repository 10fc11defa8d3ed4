"""`hermetic checkpoint` against the real KMS emulator, with the enclave side on MockNsm."""
from __future__ import annotations

import copy
import hashlib
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from botocore.config import Config

from enclave.kms.attested import AttestedKms
from enclave.kms.errors import KmsAccessDenied
from enclave.sealed.format import SealedHeader, build_encryption_context
from enclave.sealed.stream import seal_stream
from enclave.training.checkpoint import (
    CheckpointState,
    SamplerState,
    model_sha256,
    open_checkpoint,
    seal_checkpoint,
)
from parent.checkpoints import PLAIN_KEYS, kms_decrypt
from parent.cli import main
from parent.local.kms import KmsEmulator, Principal
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.policy_render import render_template
from parent.storage import write_atomic
from tests.support.checkpoints import TEST_AUTH

REPO = Path(__file__).resolve().parents[3]
ACCOUNT = "111122223333"
REGION = "us-east-1"
MODEL_OWNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/model-owner"
PARENT_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/hermetic-parent"
CREDENTIALS = {
    "model_owner": ("AKIDMODELOWNER", "model-owner-secret", None, MODEL_OWNER_ARN),
    "parent": ("ASIAPARENT", "parent-secret", "parent-token",
               f"arn:aws:sts::{ACCOUNT}:assumed-role/hermetic-parent/i-0abc123"),
    "outsider": ("AKIDOUTSIDER", "outsider-secret", None, "arn:aws:iam::444455556666:user/outsider"),
}
SPEC = hashlib.sha256(b"spec").hexdigest()


def _pcr(label: str) -> bytes:
    return hashlib.sha384(label.encode()).digest()


PCRS = {0: _pcr("image"), 1: _pcr("kernel"), 2: _pcr("app")}
OTHER_PCRS = {0: _pcr("other image"), 1: _pcr("kernel"), 2: _pcr("app")}


def client(url: str, who: str) -> Any:
    akid, secret, token, _ = CREDENTIALS[who]
    return boto3.session.Session().client(
        "kms", endpoint_url=url, region_name=REGION, aws_access_key_id=akid, aws_secret_access_key=secret,
        aws_session_token=token, config=Config(retries={"total_max_attempts": 1}),
    )


def model_owner_template() -> dict[str, Any]:
    return json.loads((REPO / "kms-policies" / "model-owner.template.json").read_text())


def resume_template() -> dict[str, Any]:
    """The proposed model-owner template: the attested enclave may also Decrypt (resume).

    Changes to the shipped template: Decrypt joins the attested-enclave Allow and the
    two attestation Denies; the unconditional parent Deny keeps ReEncrypt only.
    A Decrypt without attestation (the parent itself) stays denied.
    """
    template = copy.deepcopy(model_owner_template())
    for statement in template["Statement"]:
        sid = statement["Sid"]
        if sid == "AttestedEnclaveWritesCheckpoints":
            statement["Action"] = ["kms:GenerateDataKey", "kms:Decrypt"]
        elif sid in ("EnclaveMustBeSignedByPinnedCertificate", "DenyParentWithoutAttestation"):
            statement["Action"] = ["kms:GenerateDataKey*", "kms:Decrypt"]
        elif sid == "ParentNeverDecryptsCheckpoints":
            statement["Sid"] = "ParentNeverReEncryptsCheckpoints"
            statement["Action"] = ["kms:ReEncrypt*"]
    return template


def render(template: dict[str, Any]) -> dict[str, Any]:
    return render_template(
        template,
        {f"PCR{i}": v.hex() for i, v in PCRS.items()},
        {"MODEL_OWNER_ARN": MODEL_OWNER_ARN, "PARENT_ROLE_ARN": PARENT_ROLE_ARN},
    )


@dataclass
class Kms:
    url: str
    ca: LocalCa
    key_id: str  # under the shipped model-owner policy
    resume_key_id: str  # under the proposed policy

    def enclave(self, pcrs: dict[int, bytes] = PCRS) -> AttestedKms:
        return AttestedKms(client(self.url, "parent"), MockNsm(self.ca, pcrs=pcrs))


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    state = tmp_path_factory.mktemp("ckpt-kms")
    ca = LocalCa.load_or_create(state / "ca")
    principals = {akid: Principal(secret, arn, token) for akid, secret, token, arn in CREDENTIALS.values()}
    with KmsEmulator(state / "kms", principals, ca.root_der) as emulator:
        owner = client(emulator.url, "model_owner")
        key_id = owner.create_key(Policy=json.dumps(render(model_owner_template())))["KeyMetadata"]["KeyId"]
        resume_key = owner.create_key(Policy=json.dumps(render(resume_template())))["KeyMetadata"]["KeyId"]
        yield Kms(emulator.url, ca, key_id, resume_key)


def make_state(step: int = 500) -> CheckpointState:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model(torch.randn(5, 6)).sum().backward()
    optimizer.step()
    return CheckpointState(
        job_id="fashion-mnist-dp-1", spec_sha256=SPEC, step=step, model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        ledger={"delta": 1e-5, "accountant": "prv", "segments": [{"q": 0.034, "sigma": 0.9, "steps": step}]},
        sampler=SamplerState(steps=step, q=0.034), metrics=({"step": 200, "public_accuracy": 0.71},),
    )


@pytest.fixture(scope="module")
def sealed(kms: Kms, tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckpointState, Path]:
    """A checkpoint sealed the way the enclave does it: attested GenerateDataKey via the parent."""
    state = make_state()
    data = seal_checkpoint(state, key_id=kms.key_id, generate_data_key=kms.enclave().generate_data_key, authenticator=TEST_AUTH)
    path = tmp_path_factory.mktemp("ckpt") / "step-500.ckpt"
    write_atomic(path, data)
    return state, path


@pytest.fixture()
def as_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def use(who: str) -> None:
        akid, secret, token, _ = CREDENTIALS[who]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", akid)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        if token:
            monkeypatch.setenv("AWS_SESSION_TOKEN", token)
        else:
            monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))

    return use


# -- decrypt ----------------------------------------------------------------------------------
def test_model_owner_decrypts(kms: Kms, sealed: tuple[CheckpointState, Path], tmp_path: Path,
                              as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    state, path = sealed
    out = tmp_path / "out" / "model.pt"
    as_user("model_owner")
    rc = main(["checkpoint", "decrypt", str(path), "--out", str(out), "--kms-endpoint", kms.url,
               "--region", REGION, "--json", "--job-id", state.job_id, "--spec-sha256", SPEC])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 500 and summary["job_id"] == state.job_id and summary["spec_sha256"] == SPEC
    assert summary["model_sha256"] == model_sha256(state.model_state)
    assert summary["key_id"] == kms.key_id and summary["tensors"] == 4
    assert summary["parameters"] == 6 * 4 + 4 + 4 * 3 + 3

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(out.parent.glob(".*.tmp"))
    plain = torch.load(out, weights_only=True)
    assert set(plain) == set(PLAIN_KEYS)
    for name, tensor in state.model_state.items():
        assert torch.equal(plain["model_state"][name], tensor)
    assert torch.equal(plain["optimizer_state"]["state"][0]["momentum_buffer"],
                       state.optimizer_state["state"][0]["momentum_buffer"])
    assert plain["ledger"] == state.ledger and plain["metrics"] == [dict(m) for m in state.metrics]
    # The model owner can use it directly.
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    model.load_state_dict(plain["model_state"])


def test_decrypt_text_summary(kms: Kms, sealed: tuple[CheckpointState, Path], tmp_path: Path,
                              as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    state, path = sealed
    as_user("model_owner")
    assert main(["checkpoint", "decrypt", str(path), "--out", str(tmp_path / "m.pt"),
                 "--kms-endpoint", kms.url]) == 0
    text = capsys.readouterr().out
    assert f"model_sha256  {model_sha256(state.model_state)}" in text
    assert "step          500" in text


@pytest.mark.parametrize("who", ["outsider", "parent"])
def test_others_are_denied(kms: Kms, sealed: tuple[CheckpointState, Path], tmp_path: Path, who: str,
                           as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    out = tmp_path / "model.pt"
    as_user(who)
    assert main(["checkpoint", "decrypt", str(path), "--out", str(out), "--kms-endpoint", kms.url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: KMS Decrypt failed: AccessDeniedException")
    assert err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_wrong_job_is_refused_before_kms(sealed: tuple[CheckpointState, Path], tmp_path: Path,
                                         as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    as_user("model_owner")
    # An endpoint nobody listens on: the mismatch must be found before any KMS call.
    rc = main(["checkpoint", "decrypt", str(path), "--out", str(tmp_path / "m.pt"),
               "--kms-endpoint", "http://127.0.0.1:9", "--job-id", "another-job"])
    assert rc == 1
    assert "belongs to job 'fashion-mnist-dp-1', expected 'another-job'" in capsys.readouterr().err


def test_tampered_checkpoint_is_refused(kms: Kms, sealed: tuple[CheckpointState, Path], tmp_path: Path,
                                        as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x80
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    as_user("model_owner")
    out = tmp_path / "m.pt"
    assert main(["checkpoint", "decrypt", str(bad), "--out", str(out), "--kms-endpoint", kms.url]) == 1
    assert "failed authentication" in capsys.readouterr().err
    assert not out.exists()


def test_refuses_to_overwrite_the_sealed_file(kms: Kms, sealed: tuple[CheckpointState, Path], tmp_path: Path,
                                              as_user: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    copy_path = tmp_path / "c.ckpt"
    copy_path.write_bytes(path.read_bytes())
    as_user("model_owner")
    assert main(["checkpoint", "decrypt", str(copy_path), "--out", str(copy_path), "--kms-endpoint", kms.url]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert copy_path.read_bytes() == path.read_bytes()


# -- enclave side -------------------------------------------------------------------------------
def test_shipped_policy_lets_the_attested_enclave_resume(kms: Kms, sealed: tuple[CheckpointState, Path]) -> None:
    # The shipped template allows Decrypt to the parent role only with a matching
    # attestation (answered as CiphertextForRecipient): the enclave can resume.
    state, path = sealed
    back = open_checkpoint(path.read_bytes(), decrypt=kms.enclave().decrypt)
    assert back.step == state.step
    with pytest.raises(KmsAccessDenied):
        open_checkpoint(path.read_bytes(), decrypt=kms.enclave(OTHER_PCRS).decrypt)
    with pytest.raises(KmsAccessDenied):
        open_checkpoint(path.read_bytes(), decrypt=kms_decrypt(client(kms.url, "parent")))


def test_proposed_policy_lets_only_the_attested_enclave_resume(kms: Kms) -> None:
    state = make_state(step=900)
    data = seal_checkpoint(state, key_id=kms.resume_key_id, generate_data_key=kms.enclave().generate_data_key, authenticator=TEST_AUTH)
    back = open_checkpoint(data, decrypt=kms.enclave().decrypt, expected_job_id=state.job_id,
                           expected_spec_sha256=SPEC)
    assert back.step == 900 and back.sampler == SamplerState(900, 0.034)
    assert model_sha256(back.model_state) == model_sha256(state.model_state)
    with pytest.raises(KmsAccessDenied):
        open_checkpoint(data, decrypt=kms.enclave(OTHER_PCRS).decrypt)
    with pytest.raises(KmsAccessDenied):
        open_checkpoint(data, decrypt=kms_decrypt(client(kms.url, "parent")))
    assert open_checkpoint(data, decrypt=kms_decrypt(client(kms.url, "model_owner"))).step == 900


def test_other_images_cannot_write_checkpoints(kms: Kms) -> None:
    with pytest.raises(KmsAccessDenied):
        seal_checkpoint(make_state(), key_id=kms.key_id, generate_data_key=kms.enclave(OTHER_PCRS).generate_data_key, authenticator=TEST_AUTH)


# -- inspect ------------------------------------------------------------------------------------
def test_inspect_reads_the_header_only(sealed: tuple[CheckpointState, Path], kms: Kms,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["checkpoint", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["key_id"] == kms.key_id and info["size"] == path.stat().st_size
    assert info["encryption_context"] == {
        "hermetic:format": "checkpoint-v1", "job_id": "fashion-mnist-dp-1", "spec_sha256": SPEC, "step": "500",
        "auth_tag": info["encryption_context"]["auth_tag"],
    }
    assert len(info["encryption_context"]["auth_tag"]) == 64
    assert (info["step"], info["payload"]) == (500, "hermetic-checkpoint-v1")
    assert main(["checkpoint", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "job_id       fashion-mnist-dp-1" in text and "context      step=500" in text


def test_inspect_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkpoint", "inspect", str(tmp_path / "missing.ckpt")]) == 1
    assert "cannot read checkpoint" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04 not sealed")
    assert main(["checkpoint", "inspect", str(junk)]) == 1
    assert "bad magic" in capsys.readouterr().err
    ctx = build_encryption_context(dataset_id="ds", owner="o", max_epsilon=1.0, delta=1e-5, record_count=1,
                                   schema_sha256=hashlib.sha256(b"schema").hexdigest(),
                                   ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
                                   model_owner_keys=["alias/hermetic-model-owner"])
    header = SealedHeader(key_id="k", encrypted_data_key=b"b", encryption_context=ctx, schema=b"schema")
    dataset = tmp_path / "ds.sealed"
    with dataset.open("wb") as handle:
        seal_stream([b"x"], header, bytes(32), handle)
    assert main(["checkpoint", "inspect", str(dataset)]) == 1
    assert "not a checkpoint" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["checkpoint"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["checkpoint", "decrypt", "x.ckpt"])  # --out or --model-dir is required
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["checkpoint", "decrypt", "x.ckpt", "--model-dir", "m"])  # with --spec and --sealed
    assert info.value.code == 2


def test_local_needs_a_running_appliance(sealed: tuple[CheckpointState, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, path = sealed
    argv = ["checkpoint", "decrypt", str(path), "--out", str(tmp_path / "m.pt"), "--local", str(tmp_path / "none")]
    assert main(argv) == 1
    assert "hermetic local up" in capsys.readouterr().err
    assert main([*argv, "--kms-endpoint", "http://127.0.0.1:1"]) == 1
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
