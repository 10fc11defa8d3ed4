"""`hermetic verify-certificate` through the real CLI entry point: exit codes 0/1/2."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from enclave.certificate.body import DatasetRecord, ResumedFrom
from enclave.certificate.envelope import encode_envelope
from enclave.certificate.issue import issue_certificate
from enclave.sealed.stream import read_header
from enclave.training.spec import JobSpec
from parent.cli import main
from parent.local.local_ca import LocalCa
from parent.seal import seal_dataset
from parent.verify.accounting import recompute_epsilon
from parent.verify.envelope import decode_envelope
from tests.support.certificates import DELTA, MAX_EPSILON, PCRS, make_body, new_nsm
from tests.support.ledgers import MEMORY_LOCATION

PIN = ("--pcr", f"0={PCRS[0].hex()}")
JSON_KEYS = {
    "valid", "epsilon", "epsilons", "delta", "accountant", "pcrs", "datasets", "model_sha256",
    "checkpoint_sha256", "steps", "sampling_rate", "noise_multiplier", "max_grad_norm", "metrics",
    "job_id", "spec_sha256", "attested_at",
}


@pytest.fixture()
def root_pem(ca: LocalCa, tmp_path: Path) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(ca.root_pem)
    return path


@pytest.fixture()
def cert(ca: LocalCa, tmp_path: Path) -> Path:
    path = tmp_path / "job.cert"
    path.write_bytes(issue_certificate(make_body(), new_nsm(ca)))
    return path


def run(*argv: str) -> int:
    return main(["verify-certificate", *argv])


def usage_error(*argv: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: ") and err.count("\n") == 1
    return err


def test_valid_certificate_summary(cert: Path, root_pem: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(cert), "--root", str(root_pem), *PIN) == 0
    out = capsys.readouterr().out
    body = make_body()
    assert "VALID" in out
    assert "job-0001" in out
    assert f"enclave PCR0: {PCRS[0].hex()}" in out
    assert body.model_sha256 in out
    assert "patients-2024" in out
    assert (f"epsilon {body.datasets[0].epsilon:.6g} for this job at its delta 1e-05; 2.5 of its 8 spent by every "
            "job on it") in out
    assert "test_accuracy" in out
    assert "prv" in out and "rdp" in out


def test_json_output(cert: Path, root_pem: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(cert), "--root", str(root_pem), *PIN, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(report)
    body = make_body()
    assert report["valid"] is True
    assert report["accountant"] == "prv"
    assert report["epsilon"] == recompute_epsilon(body.ledger, body.delta, "prv")
    assert set(report["epsilons"]) == {"prv", "rdp"}
    assert report["delta"] == body.delta
    assert report["pcrs"]["0"] == PCRS[0].hex()
    assert report["datasets"] == [{
        "dataset_id": "patients-2024", "sealed_sha256": body.datasets[0].sealed_sha256,
        "key_id": "alias/hospital-a", "records": 60000, "epsilon": body.datasets[0].epsilon,
        "dataset_epsilon": 2.5, "max_epsilon": 8.0, "delta": 1e-5,
    }]
    assert report["steps"] == 100 and report["sampling_rate"] == 0.01
    assert report["noise_multiplier"] == 1.1 and report["max_grad_norm"] == 1.0
    assert report["metrics"][0]["name"] == "test_accuracy"
    assert report["job_id"] == "job-0001" and report["spec_sha256"] == body.spec_sha256
    assert report["model_sha256"] == body.model_sha256
    assert report["checkpoint_sha256"] == body.checkpoint_sha256
    assert report["attested_at"].endswith("+00:00")
    assert report["resumed_from"] is None


def test_the_resume_lineage_is_shown(ca: LocalCa, root_pem: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    resumed = tmp_path / "resumed.cbor"
    lineage = ResumedFrom(sealed_sha256="cd" * 32, step=40)
    resumed.write_bytes(issue_certificate(dataclasses.replace(make_body(), resumed_from=lineage), new_nsm(ca)))
    assert run(str(resumed), "--root", str(root_pem), *PIN, "--json") == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == {"sealed_sha256": "cd" * 32, "step": 40}
    assert run(str(resumed), "--root", str(root_pem), *PIN) == 0
    assert f"resumed from: the checkpoint at step 40, sealed sha256 {'cd' * 32}" in capsys.readouterr().out


def test_accountant_choice(cert: Path, root_pem: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(cert), "--root", str(root_pem), *PIN, "--json", "--accountant", "rdp") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accountant"] == "rdp" and report["epsilon"] == report["epsilons"]["rdp"]


def test_stdin(cert: Path, root_pem: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(cert.read_bytes())))
    assert run("-", "--root", str(root_pem), *PIN) == 0
    assert "VALID" in capsys.readouterr().out


def test_default_aws_root_refuses_mock_certificates(cert: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(cert), *PIN) == 1
    assert "pinned root" in one_line_error(capsys)


def test_pcr_requirements(cert: Path, root_pem: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(cert), "--root", str(root_pem), "--pcr", f"0={PCRS[0].hex()}",
               "--pcr", f"3={PCRS[3].hex()}") == 0
    capsys.readouterr()
    assert run(str(cert), "--root", str(root_pem), "--pcr", f"0={'00' * 48}") == 1
    assert "PCR" in one_line_error(capsys)


def test_invalid_json_verdict(cert: Path, root_pem: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    body_bytes, attestation = decode_envelope(cert.read_bytes())
    tampered = tmp_path / "tampered.cert"
    tampered.write_bytes(encode_envelope(body_bytes.replace(b"job-0001", b"job-0002"), attestation))
    assert run(str(tampered), "--root", str(root_pem), *PIN, "--json") == 1
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict["valid"] is False and verdict["error_type"] == "CertificateBindingError"
    assert captured.err.startswith("hermetic: error: ") and captured.err.count("\n") == 1


def test_truncated_and_missing_files(cert: Path, root_pem: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    truncated = tmp_path / "truncated.cert"
    truncated.write_bytes(cert.read_bytes()[:-10])
    assert run(str(truncated), "--root", str(root_pem), *PIN) == 1
    one_line_error(capsys)
    assert run(str(tmp_path / "absent.cert"), "--root", str(root_pem), *PIN) == 1
    one_line_error(capsys)
    bad_root = tmp_path / "bad.pem"
    bad_root.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert run(str(cert), "--root", str(bad_root), *PIN) == 1
    one_line_error(capsys)


@pytest.mark.parametrize("argv", [
    (),
    ("--pcr", "0=00"),
    ("--pcr", "x=" + "00" * 48),
    ("--pcr", "40=" + "00" * 48),
    ("--pcr", "0=" + "zz" * 48),
    ("--pcr", "0=" + "00" * 48, "--pcr", "0=" + "11" * 48),
    ("--accountant", "moments"),
    ("--bogus",),
])
def test_usage_errors(cert: Path, argv: tuple[str, ...]) -> None:
    usage_error(*((str(cert),) if argv else ()), *argv)


def test_json_verdict_for_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(tmp_path / "absent.cert"), *PIN, "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "valid": False, "error": captured.err.removeprefix("hermetic: error: ").strip(),
        "error_type": "ConfigError", "code": "config",
    }


def _measurements(tmp_path: Path, pcrs: dict[str, str], nitro_shape: bool = True) -> Path:
    path = tmp_path / "measurements.json"
    doc: dict[str, object] = {"HashAlgorithm": "Sha384 { ... }", **pcrs}
    path.write_text(json.dumps({"Measurements": doc} if nitro_shape else pcrs))
    return path


@pytest.mark.parametrize("nitro_shape", [True, False])
def test_measurements_file_pins_pcrs(cert: Path, root_pem: Path, tmp_path: Path, nitro_shape: bool,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = _measurements(tmp_path, {f"PCR{i}": PCRS[i].hex() for i in (0, 1, 2)}, nitro_shape)
    assert run(str(cert), "--root", str(root_pem), "--measurements", str(good)) == 0
    capsys.readouterr()
    bad = _measurements(tmp_path, {"PCR0": PCRS[0].hex(), "PCR1": "00" * 48}, nitro_shape)
    assert run(str(cert), "--root", str(root_pem), "--measurements", str(bad)) == 1
    assert "PCR" in one_line_error(capsys)


def test_measurements_and_pcr_combine(cert: Path, root_pem: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    measurements = _measurements(tmp_path, {"PCR0": PCRS[0].hex()})
    assert run(str(cert), "--root", str(root_pem), "--measurements", str(measurements),
               "--pcr", f"3={PCRS[3].hex()}") == 0
    capsys.readouterr()
    # Each source alone would pass; together PCR3 must match as well.
    assert run(str(cert), "--root", str(root_pem), "--measurements", str(measurements),
               "--pcr", f"3={'00' * 48}") == 1
    one_line_error(capsys)
    # The same PCR from both sources must agree: a usage error otherwise.
    usage_error(str(cert), "--root", str(root_pem), "--measurements", str(measurements), "--pcr", f"0={'00' * 48}")


@pytest.mark.parametrize("content", [
    "not json", "[]", '{"Measurements": {}}', '{"Measurements": {"PCR0": "00"}}',
    '{"Measurements": {"PCR99": "' + "00" * 48 + '"}}', '{"Measurements": {"Kernel": "x"}}',
])
def test_bad_measurements_files_are_one_line_errors(cert: Path, root_pem: Path, tmp_path: Path, content: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    assert run(str(cert), "--root", str(root_pem), "--measurements", str(path)) == 1
    assert "measurements file" in one_line_error(capsys)


# --- --sealed and --spec: the certificate is about the verifier's own dataset and job ---------

KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/verify"
SPEC = """
[job]
name = "verify-me"
[model]
name = "mlp"
[optimizer]
name = "sgd"
lr = 0.5
[privacy]
expected_batch_size = 50
steps = 100
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.1
[checkpoint]
key_id = "alias/model"
"""


class StubKms:
    def encrypt(self, **kwargs: object) -> dict[str, object]:
        return {"CiphertextBlob": b"blob", "KeyId": KEY_ARN}


def seal(tmp_path: Path, name: str, *, dataset_id: str = "train-v1", max_epsilon: float = MAX_EPSILON,
         seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    source = tmp_path / f"{name}.npz"
    np.savez(source, image=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             label=rng.integers(0, 10, 64, dtype=np.uint8))
    out = tmp_path / f"{name}.sealed"
    # One data key for every seal here, so the ledger key (derived from it) and with it the
    # context stay the same and only the bytes differ between two seals of one dataset.
    with mock.patch("parent.seal.secrets.token_bytes", return_value=bytes(range(32))):
        seal_dataset(source, out, key_id=KEY_ARN, kms_client=StubKms(), max_epsilon=max_epsilon, delta=DELTA,
                     owner="hospital-a", dataset_id=dataset_id, ledger=MEMORY_LOCATION, model_owner_keys=[KEY_ARN])
    return out


@pytest.fixture()
def job(ca: LocalCa, tmp_path: Path) -> dict[str, Path]:
    """A certificate about one sealed file and one spec, as the enclave would record them."""
    sealed, spec = seal(tmp_path, "train"), tmp_path / "job.toml"
    spec.write_text(SPEC, encoding="utf-8")
    with sealed.open("rb") as handle:
        header = read_header(handle)
    context = dict(header.encryption_context)
    record = DatasetRecord(context["dataset_id"], hashlib.sha256(sealed.read_bytes()).hexdigest(), header.key_id,
                           context, int(context["record_count"]), 0.6, 2.5)
    spec_hashes = {"spec_sha256": JobSpec.from_toml(SPEC).sha256, "model_spec_sha256": JobSpec.from_toml(SPEC).model_sha256}
    body = make_body(datasets=(record,), **spec_hashes)
    cert, root = tmp_path / "job.cert", tmp_path / "root.pem"
    cert.write_bytes(issue_certificate(body, new_nsm(ca)))
    root.write_bytes(ca.root_pem)
    return {"cert": cert, "root": root, "sealed": sealed, "spec": spec}


def verify_job(job: dict[str, Path], *argv: str) -> int:
    return run(str(job["cert"]), "--root", str(job["root"]), *PIN, *argv)


def test_the_certificate_is_about_the_sealed_file_and_spec(job: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_job(job, "--sealed", str(job["sealed"]), "--spec", str(job["spec"]), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["pinned_pcrs"] == [0]
    assert report["sealed_checked"] == [{"file": str(job["sealed"]), "dataset_id": "train-v1"}]
    assert report["spec_checked"] is True
    assert report["model_spec_sha256"] == JobSpec.from_toml(SPEC).model_sha256
    assert verify_job(job, "--sealed", str(job["sealed"]), "--spec", str(job["spec"])) == 0
    out = capsys.readouterr().out
    assert f"sealed file:  {job['sealed']} is dataset train-v1" in out and "job spec:     matches" in out
    # Formatting does not change a spec's hash (JobSpec.sha256 is over its canonical form).
    job["spec"].write_text("# reformatted\n" + SPEC.replace("lr = 0.5", "lr = 5e-1"), encoding="utf-8")
    assert verify_job(job, "--spec", str(job["spec"])) == 0


def test_a_sealed_file_of_another_dataset_is_named(job: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    other = seal(tmp_path, "other", dataset_id="other-v1")
    assert verify_job(job, "--sealed", str(job["sealed"]), "--sealed", str(other), "--json") == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and verdict["error_type"] == "SubjectMismatch"
    assert verdict["code"] == "certificate"
    assert verdict["error"] == f"dataset_id: sealed file {other} is dataset 'other-v1', the certificate lists 'train-v1'"


def test_a_resealed_budget_is_named_with_both_values(job: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    resealed = seal(tmp_path, "resealed", max_epsilon=3.0)
    assert verify_job(job, "--sealed", str(resealed)) == 1
    assert one_line_error(capsys) == (f"hermetic: error: encryption_context max_epsilon of dataset 'train-v1': "
                                      f"certificate '8.0', {resealed} '3.0'\n")


def test_other_bytes_of_the_same_dataset_are_named_with_both_hashes(job: dict[str, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Other records of the same shape sealed under the same id, key and context: other bytes.
    again = seal(tmp_path, "again", seed=2)
    certified = hashlib.sha256(job["sealed"].read_bytes()).hexdigest()
    found = hashlib.sha256(again.read_bytes()).hexdigest()
    assert verify_job(job, "--sealed", str(again)) == 1
    assert one_line_error(capsys) == (
        f"hermetic: error: sealed_sha256 of dataset 'train-v1': certificate {certified[:8]}...{certified[-8:]}, "
        f"{again} {found[:8]}...{found[-8:]}\n")


def test_another_spec_is_named_with_both_hashes(job: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("noise_multiplier = 1.1", "noise_multiplier = 0.5"), encoding="utf-8")
    certified, found = JobSpec.from_toml(SPEC).sha256, JobSpec.from_toml(other.read_text()).sha256
    assert verify_job(job, "--spec", str(other)) == 1
    assert one_line_error(capsys) == (f"hermetic: error: spec_sha256: certificate {certified[:8]}...{certified[-8:]}, "
                                      f"{other} {found[:8]}...{found[-8:]}\n")


def test_a_certificate_about_another_model_is_named_with_both_hashes(
    ca: LocalCa, job: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec hash matches but the certified model format is not the spec's (the preset it names)."""
    certified = hashlib.sha256(b"another architecture").hexdigest()
    found = JobSpec.from_toml(SPEC).model_sha256
    body = make_body(spec_sha256=JobSpec.from_toml(SPEC).sha256, model_spec_sha256=certified)
    job["cert"].write_bytes(issue_certificate(body, new_nsm(ca)))
    assert verify_job(job) == 0
    capsys.readouterr()
    assert verify_job(job, "--spec", str(job["spec"])) == 1
    assert one_line_error(capsys) == (
        f"hermetic: error: model_spec_sha256: certificate {certified[:8]}...{certified[-8:]}, "
        f"{job['spec']} {found[:8]}...{found[-8:]}\n")


def test_unreadable_sealed_and_spec_files_are_one_line_errors(job: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_job(job, "--sealed", str(tmp_path / "absent.sealed")) == 1
    assert "cannot read sealed file" in one_line_error(capsys)
    assert verify_job(job, "--sealed", str(job["spec"])) == 1
    assert f"sealed file {job['spec']}" in one_line_error(capsys)
    assert verify_job(job, "--spec", str(job["sealed"])) == 1
    assert f"job spec {job['sealed']}" in one_line_error(capsys)
    assert verify_job(job, "--spec", str(tmp_path / "absent.toml"), "--json") == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and verdict["code"] == "config" and "cannot read job spec" in verdict["error"]
