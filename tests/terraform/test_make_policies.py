"""`make policies`: key policies rendered from eif/measurements.json, and the ledger's bucket policy, for Terraform to load."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from parent.kms_policy import parse_policy
from parent.local.kms.policy_eval import Decision, RequestContext, evaluate
from tests.terraform.conftest import REPO

ACCOUNT = "111122223333"
PARENT_ROLE = f"arn:aws:iam::{ACCOUNT}:role/hermetic-parent"  # what the module names its role
PARENT_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/hermetic-parent/i-0123456789abcdef0"
OWNER = "arn:aws:iam::444455556666:role/hospital-data"
MODEL_OWNER = "arn:aws:iam::777788889999:role/model-owner"
PCR0, PCR1, PCR2 = "a1" * 48, "b2" * 48, "c3" * 48
KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LEDGER_BUCKET = f"hermetic-ledger-{ACCOUNT}-eu-west-1"  # what the module names the bucket
SLOT = f"arn:aws:s3:::{LEDGER_BUCKET}/ledger/fmnist-train/0000000000"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _nitro_cli_measurements() -> dict[str, Any]:
    # The shape `nitro-cli describe-eif` and `build-enclave` print.
    return {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2}}


def make_policies(**variables: str) -> subprocess.CompletedProcess[str]:
    # -o: treat the venv stamp as up to date, so the test never reinstalls packages.
    argv = ["make", "--no-print-directory", "-o", ".venv/.installed", "policies"]
    argv += [f"{name}={value}" for name, value in variables.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False, env=env, timeout=120)


def test_missing_measurements_says_how_to_get_them(tmp_path: Path) -> None:
    result = make_policies(POLICY_MEASUREMENTS=str(tmp_path / "measurements.json"),
                           POLICY_OUT=str(tmp_path / "out"), OWNER_ARN=OWNER, MODEL_OWNER_ARN=MODEL_OWNER,
                           PARENT_ROLE_ARN=PARENT_ROLE, LEDGER_BUCKET=LEDGER_BUCKET)
    assert result.returncode != 0
    assert "measurements.json not found" in result.stderr and "make eif" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_arns_are_named(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps(_nitro_cli_measurements()))
    result = make_policies(POLICY_MEASUREMENTS=str(measurements), POLICY_OUT=str(tmp_path / "out"),
                           OWNER_ARN=OWNER)
    assert result.returncode != 0
    assert "set MODEL_OWNER_ARN PARENT_ROLE_ARN LEDGER_BUCKET" in result.stderr
    assert not (tmp_path / "out").exists()


def _decide(policy: Any, principal: str, action: str, pcr0: str | None) -> Decision:
    keys = {} if pcr0 is None else {"kms:RecipientAttestation:ImageSha384": pcr0,
                                    "kms:RecipientAttestation:PCR0": pcr0}
    return evaluate(policy, RequestContext(principal, action, KEY, keys))


def test_renders_both_policies_for_terraform(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps(_nitro_cli_measurements()))
    out = tmp_path / "rendered"
    result = make_policies(POLICY_MEASUREMENTS=str(measurements), POLICY_OUT=str(out), OWNER_ARN=OWNER,
                           MODEL_OWNER_ARN=MODEL_OWNER, PARENT_ROLE_ARN=PARENT_ROLE, LEDGER_BUCKET=LEDGER_BUCKET)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["data-owner.json", "ledger-bucket.json", "model-owner.json"]

    data_text = (out / "data-owner.json").read_text("utf-8")
    model_text = (out / "model-owner.json").read_text("utf-8")
    for text in (data_text, model_text):
        # The module's preconditions: the policy names its parent role and has the attestation condition.
        assert PARENT_ROLE in text and "kms:RecipientAttestation:ImageSha384" in text
        assert "${" not in text

    data = parse_policy(json.loads(data_text))
    assert _decide(data, PARENT_SESSION, "kms:Decrypt", PCR0) is Decision.ALLOW
    assert _decide(data, PARENT_SESSION, "kms:Decrypt", "dd" * 48) is Decision.IMPLICIT_DENY
    assert _decide(data, PARENT_SESSION, "kms:Decrypt", None) is Decision.EXPLICIT_DENY
    assert _decide(data, OWNER, "kms:GenerateDataKey", None) is Decision.ALLOW
    assert _decide(data, OWNER, "kms:Decrypt", None) is Decision.IMPLICIT_DENY

    model = parse_policy(json.loads(model_text))
    assert _decide(model, PARENT_SESSION, "kms:GenerateDataKey", PCR0) is Decision.ALLOW
    assert _decide(model, PARENT_SESSION, "kms:GenerateDataKey", "dd" * 48) is Decision.IMPLICIT_DENY
    assert _decide(model, PARENT_SESSION, "kms:GenerateDataKey", None) is Decision.EXPLICIT_DENY
    assert _decide(model, MODEL_OWNER, "kms:Decrypt", None) is Decision.ALLOW


def test_bad_measurements_fail_without_output(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps({"Measurements": {"PCR0": "not-hex"}}))
    out = tmp_path / "rendered"
    result = make_policies(POLICY_MEASUREMENTS=str(measurements), POLICY_OUT=str(out), OWNER_ARN=OWNER,
                           MODEL_OWNER_ARN=MODEL_OWNER, PARENT_ROLE_ARN=PARENT_ROLE, LEDGER_BUCKET=LEDGER_BUCKET)
    assert result.returncode != 0
    assert "hermetic: error: measurement PCR0 must be 96 hex digits" in result.stderr
    assert not (out / "data-owner.json").exists()


def _s3(policy: Any, principal: str, action: str, resource: str = SLOT, **keys: str) -> Decision:
    return evaluate(policy, RequestContext(principal, action, resource, {"aws:SecureTransport": "true", **keys}))


def test_renders_the_ledger_bucket_policy(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps(_nitro_cli_measurements()))
    out = tmp_path / "rendered"
    result = make_policies(POLICY_MEASUREMENTS=str(measurements), POLICY_OUT=str(out), OWNER_ARN=OWNER,
                           MODEL_OWNER_ARN=MODEL_OWNER, PARENT_ROLE_ARN=PARENT_ROLE, LEDGER_BUCKET=LEDGER_BUCKET)
    assert result.returncode == 0, result.stderr
    text = (out / "ledger-bucket.json").read_text("utf-8")
    # The module's preconditions: the bucket, the parent role and the conditional-write key.
    assert f"arn:aws:s3:::{LEDGER_BUCKET}" in text and PARENT_ROLE in text and "s3:if-none-match" in text
    assert "${" not in text
    policy = parse_policy(json.loads(text))
    create = {"s3:if-none-match": "*", "s3:object-lock-mode": "COMPLIANCE"}
    # The enclave's calls, signed with the parent role's credentials.
    assert _s3(policy, PARENT_SESSION, "s3:PutObject", **create) is Decision.ALLOW
    assert _s3(policy, PARENT_SESSION, "s3:PutObjectRetention", **create) is Decision.ALLOW
    assert _s3(policy, PARENT_SESSION, "s3:GetObject") is Decision.ALLOW
    assert _s3(policy, PARENT_SESSION, "s3:GetObjectRetention") is Decision.ALLOW
    assert _s3(policy, PARENT_SESSION, "s3:ListBucket", f"arn:aws:s3:::{LEDGER_BUCKET}") is Decision.ALLOW
    # Overwrites, weaker locks, deletes and unlocking: nobody, whatever IAM grants them.
    for who in (PARENT_SESSION, OWNER, f"arn:aws:iam::{ACCOUNT}:root"):
        assert _s3(policy, who, "s3:PutObject", **{"s3:object-lock-mode": "COMPLIANCE"}) is Decision.EXPLICIT_DENY
        assert _s3(policy, who, "s3:PutObject", **{"s3:if-none-match": "*"}) is Decision.EXPLICIT_DENY
        assert _s3(policy, who, "s3:PutObject", **{"s3:if-none-match": "*", "s3:object-lock-mode": "GOVERNANCE"}) \
            is Decision.EXPLICIT_DENY
        assert _s3(policy, who, "s3:PutObjectRetention", **{"s3:object-lock-mode": "GOVERNANCE"}) \
            is Decision.EXPLICIT_DENY
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                       "s3:PutObjectLegalHold"):
            assert _s3(policy, who, action) is Decision.EXPLICIT_DENY, action
        for action in ("s3:PutBucketObjectLockConfiguration", "s3:PutLifecycleConfiguration"):
            assert _s3(policy, who, action, f"arn:aws:s3:::{LEDGER_BUCKET}") is Decision.EXPLICIT_DENY, action
    # Plain HTTP: refused even for what is otherwise allowed.
    insecure = RequestContext(PARENT_SESSION, "s3:GetObject", SLOT, {"aws:SecureTransport": "false"})
    assert evaluate(policy, insecure) is Decision.EXPLICIT_DENY
    # The data owner reads and lists the slots to audit them, and may write none.
    assert _s3(policy, OWNER, "s3:GetObject") is Decision.ALLOW
    assert _s3(policy, OWNER, "s3:ListBucket", f"arn:aws:s3:::{LEDGER_BUCKET}") is Decision.ALLOW
    assert _s3(policy, OWNER, "s3:PutObject", **create) is Decision.IMPLICIT_DENY
    # Others get nothing from this policy (the bucket's account decides through IAM).
    assert _s3(policy, MODEL_OWNER, "s3:GetObject") is Decision.IMPLICIT_DENY


def test_bad_ledger_bucket_fails_without_output(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps(_nitro_cli_measurements()))
    out = tmp_path / "rendered"
    result = make_policies(POLICY_MEASUREMENTS=str(measurements), POLICY_OUT=str(out), OWNER_ARN=OWNER,
                           MODEL_OWNER_ARN=MODEL_OWNER, PARENT_ROLE_ARN=PARENT_ROLE, LEDGER_BUCKET="Not_A_Bucket")
    assert result.returncode != 0
    assert "is not a valid S3 bucket name" in result.stderr
    assert not (out / "ledger-bucket.json").exists()
