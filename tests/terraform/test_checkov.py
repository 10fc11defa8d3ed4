"""checkov on terraform/: no failed check unless skipped in the code with a written reason.

checkov pins boto3/botocore below this project's runtime pins, so `make checkov`
installs it into its own venv (.venv-checkov); this test runs it from there.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.conftest import REPO, TERRAFORM

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?$")
# Checks that must have run and passed, so a parse failure cannot pass vacuously.
MUST_PASS = {
    "CKV_AWS_79": "instance metadata service v2 only",
    "CKV_AWS_8": "encrypted root volume",
    "CKV_AWS_88": "no public IP",
    "CKV_AWS_126": "detailed monitoring",
    "CKV_AWS_135": "EBS optimized",
    "CKV_AWS_7": "KMS key rotation",
    "CKV_AWS_21": "S3 versioning",
    "CKV2_AWS_6": "S3 public access block",
    "CKV2_AWS_11": "VPC flow logs",
    "CKV2_AWS_12": "default security group restricts all traffic",
}


def _checkov() -> Path | None:
    local = REPO / ".venv-checkov" / "bin" / "checkov"
    if local.exists():
        return local
    found = shutil.which("checkov")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    checkov = _checkov()
    if checkov is None:
        if os.environ.get("CI"):
            pytest.fail("checkov is not installed; `make test` installs it with `make checkov`")
        pytest.skip("checkov is not installed: `make checkov` installs it into .venv-checkov "
                    "(it could not be installed on this machine)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no guideline download
    result = subprocess.run(
        [str(checkov), "-d", str(TERRAFORM), "--framework", "terraform", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, check=False, timeout=600, env=env, cwd=REPO,
    )
    # Exit 1 means failed checks: the JSON still says which; anything else is a crash.
    assert result.returncode in (0, 1), result.stderr[-2000:]
    data = json.loads(result.stdout)
    reports = data if isinstance(data, list) else [data]
    (terraform,) = [r for r in reports if r.get("check_type") == "terraform"]
    return terraform


def test_checkov_parsed_everything(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] > 40


def test_no_failed_checks(report: dict[str, Any]) -> None:
    failed = [f'{c["check_id"]} {c["resource"]} ({c["file_path"]}): {c["check_name"]}'
              for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failures (fix them, or skip in the code with a reason):\n" + "\n".join(failed)


def test_key_controls_were_checked_and_passed(report: dict[str, Any]) -> None:
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    missing = {k: v for k, v in MUST_PASS.items() if k not in passed}
    assert not missing, missing


def _skips_in_code() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        for line in path.read_text("utf-8").splitlines():
            match = SKIP_COMMENT.search(line.strip())
            if match:
                found.append((path.relative_to(TERRAFORM).as_posix(), match.group(1), (match.group(2) or "").strip()))
    return found


def test_every_skip_has_a_written_reason_and_is_used(report: dict[str, Any]) -> None:
    skips = _skips_in_code()
    assert skips, "expected the documented skips in terraform/"
    for path, check_id, reason in skips:
        assert len(reason) >= 20, f"{path}: skip of {check_id} needs a written reason"
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        comment = check["check_result"].get("suppress_comment", "")
        assert comment and len(comment) >= 20, check["check_id"]
    used = {c["check_id"] for c in skipped}
    stale = {check_id for _, check_id, _ in skips} - used
    assert not stale, f"skip comments for checks that no longer fail or do not apply: {stale}"
