"""Checks with the real terraform binary, where one is installed (skipped, saying why, elsewhere).

`terraform validate` needs the AWS provider: it runs only against a local provider
mirror (HERMETIC_TF_PLUGIN_MIRROR, default /opt/tf-plugins), never the network.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.terraform.conftest import TERRAFORM, USER_DATA_TEMPLATE
from tests.terraform.test_user_data import VALUES, render

TERRAFORM_BIN = shutil.which("terraform")
MIRROR = Path(os.environ.get("HERMETIC_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))

pytestmark = pytest.mark.skipif(TERRAFORM_BIN is None, reason="terraform is not installed on this machine")


def _terraform(args: list[str], cwd: Path, rc_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM_BIN is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update({"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
    if rc_file is not None:
        env["TF_CLI_CONFIG_FILE"] = str(rc_file)
    return subprocess.run([TERRAFORM_BIN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def _hcl_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def test_files_are_terraform_fmt_clean() -> None:
    result = _terraform(["fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], cwd=TERRAFORM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_templatefile_renders_exactly_like_the_test_renderer(tmp_path: Path) -> None:
    variables = ", ".join(f"{k} = {_hcl_literal(v)}" for k, v in VALUES.items())
    (tmp_path / "main.tf").write_text(
        f'output "user_data" {{\n  value = templatefile({json.dumps(str(USER_DATA_TEMPLATE))}, {{ {variables} }})\n}}\n'
    )
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        result = _terraform(args, tmp_path)
        assert result.returncode == 0, result.stderr
    output = _terraform(["output", "-raw", "user_data"], tmp_path)
    assert output.returncode == 0, output.stderr
    assert output.stdout == render(USER_DATA_TEMPLATE.read_text("utf-8"), VALUES)


@pytest.mark.skipif(not (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir(),
                    reason=f"no local AWS provider mirror at {MIRROR} (terraform validate needs the provider)")
def test_example_root_validates_against_the_aws_provider(tmp_path: Path) -> None:
    rc_file = tmp_path / "terraformrc"
    rc_file.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{MIRROR}"\n    include = ["registry.terraform.io/hashicorp/*"]\n  }}\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/*"]\n  }\n'
        "}\n"
    )
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"))
    root = copy / "examples" / "basic"
    init = _terraform(["init", "-backend=false", "-input=false"], root, rc_file)
    if init.returncode != 0 and "Failed to query available provider packages" in init.stderr:
        pytest.skip(f"the provider mirror at {MIRROR} has no AWS provider matching ~> 5.50")
    assert init.returncode == 0, init.stderr
    result = _terraform(["validate", "-json"], root, rc_file)
    report = json.loads(result.stdout)
    diagnostics = [f'{d["severity"]}: {d["summary"]}: {d.get("detail", "")}' for d in report["diagnostics"]]
    assert report["valid"] is True, diagnostics
    assert report["warning_count"] == 0, diagnostics
