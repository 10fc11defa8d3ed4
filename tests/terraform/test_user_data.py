"""The parent's user data: rendered the way Terraform's templatefile() does, then checked.

The template uses only `${name}` interpolations (no directives), so a small renderer
with Terraform's escapes (`$${` and `%%{` for the literal forms) is exact for it.
"""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.terraform.conftest import USER_DATA_TEMPLATE, TfModule

REGION = "eu-west-1"
KMS_HOST = f"kms.{REGION}.amazonaws.com"
S3_HOST = f"s3.{REGION}.amazonaws.com"
VALUES: dict[str, Any] = {
    "region": REGION,
    "kms_endpoint_host": KMS_HOST,
    "vsock_proxy_port": 8000,
    "s3_endpoint_host": S3_HOST,
    "s3_relay_port": 8001,
    "kms_relay": "vsock-proxy",
    "enclave_cpu_count": 2,
    "enclave_memory_mib": 8192,
    "enclave_cid": 16,
    "artifacts_bucket": "hermetic-artifacts-111122223333-eu-west-1",
    "sealed_bucket": "hermetic-sealed-111122223333-eu-west-1",
    "results_bucket": "hermetic-results-111122223333-eu-west-1",
}
TOKEN = re.compile(r"\$\$\{|%%\{|\$\{([^}]*)\}|%\{")
EC2_USER_DATA_LIMIT = 16 * 1024


class TemplateError(Exception):
    pass


def _hcl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text: str, variables: dict[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if token == "%%{":
            return "%{"
        if token == "%{":
            raise TemplateError("template directives are not supported by this renderer")
        name = match.group(1).strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise TemplateError(f"only plain variables are interpolated, got ${{{name}}}")
        if name not in variables:
            raise TemplateError(f"vars map does not contain key {name!r}")
        return _hcl_value(variables[name])

    return TOKEN.sub(substitute, text)


def template_variables(text: str) -> set[str]:
    return {m.group(1).strip() for m in TOKEN.finditer(text) if m.group(1) is not None}


@pytest.fixture(scope="module")
def template() -> str:
    return USER_DATA_TEMPLATE.read_text("utf-8")


@pytest.fixture(scope="module")
def script(template: str) -> str:
    return render(template, VALUES)


def heredoc(script: str, target: str) -> str:
    match = re.search(rf"^cat > {re.escape(target)} <<'EOF'\n(.*?)^EOF$", script, re.M | re.S)
    assert match, f"no heredoc writes {target}"
    return match.group(1)


def unit(script: str, name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(heredoc(script, f"/etc/systemd/system/{name}"))
    return parser


# --------------------------------------------------------------------------- renderer


def test_renderer_follows_terraform_escapes() -> None:
    assert render("a ${x} $${y} %%{z}", {"x": 1}) == "a 1 ${y} %{z}"
    assert render("${flag}", {"flag": False}) == "false"
    with pytest.raises(TemplateError, match="does not contain key"):
        render("${missing}", {})
    with pytest.raises(TemplateError, match="directives"):
        render("%{ if x }", {"x": 1})
    with pytest.raises(TemplateError, match="plain variables"):
        render("${upper(x)}", {"x": 1})


def test_terraform_passes_exactly_the_template_variables(module: TfModule, template: str) -> None:
    call = module.locals["user_data"]
    assert call.startswith('${templatefile("${path.module}/templates/user_data.sh.tpl", {')
    passed = set(re.findall(r"(\w+) = ", call))
    assert passed == template_variables(template)
    assert passed == set(VALUES)


# --------------------------------------------------------------------------- script


def test_script_is_valid_bash_and_fits_ec2_user_data(script: str) -> None:
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in script
    assert len(script.encode()) < EC2_USER_DATA_LIMIT
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_installs_the_nitro_enclaves_cli_with_dnf(script: str) -> None:
    install = re.search(r"^dnf install -y (.+)$", script, re.M)
    assert install
    packages = install.group(1).split()
    assert "aws-nitro-enclaves-cli" in packages and "aws-nitro-enclaves-cli-devel" in packages
    assert "systemctl enable --now nitro-enclaves-allocator.service" in script


def test_allocator_is_sized_from_variables(script: str) -> None:
    allocator = yaml.safe_load(heredoc(script, "/etc/nitro_enclaves/allocator.yaml"))
    assert allocator == {"memory_mib": 8192, "cpu_count": 2}
    other = yaml.safe_load(heredoc(render(USER_DATA_TEMPLATE.read_text("utf-8"),
                                          {**VALUES, "enclave_cpu_count": 4, "enclave_memory_mib": 16384}),
                                   "/etc/nitro_enclaves/allocator.yaml"))
    assert other == {"memory_mib": 16384, "cpu_count": 4}


def test_vsock_proxy_allow_list_holds_only_the_regional_kms_endpoint(script: str) -> None:
    config = yaml.safe_load(heredoc(script, "/etc/nitro_enclaves/vsock-proxy.yaml"))
    assert config == {"allowlist": [{"address": KMS_HOST, "port": 443}]}
    proxy = unit(script, "hermetic-vsock-proxy.service")
    assert proxy["Service"]["ExecStart"] == (
        f"/usr/bin/vsock-proxy 8000 {KMS_HOST} 443 --config /etc/nitro_enclaves/vsock-proxy.yaml"
    )
    assert proxy["Service"]["Restart"] == "on-failure"
    assert proxy["Service"]["NoNewPrivileges"] == "yes"
    # No other host is ever named as a relay target: KMS, and S3 for the budget ledger.
    hosts = set(re.findall(r"\b[a-z0-9.-]+\.amazonaws\.com\b", script))
    assert hosts == {KMS_HOST, S3_HOST}


def test_the_s3_relay_reaches_only_the_regional_s3_endpoint_on_its_own_port(script: str) -> None:
    config = yaml.safe_load(heredoc(script, "/etc/nitro_enclaves/vsock-proxy-s3.yaml"))
    assert config == {"allowlist": [{"address": S3_HOST, "port": 443}]}
    proxy = unit(script, "hermetic-s3-vsock-proxy.service")
    assert proxy["Service"]["ExecStart"] == (
        f"/usr/bin/vsock-proxy 8001 {S3_HOST} 443 --config /etc/nitro_enclaves/vsock-proxy-s3.yaml"
    )
    for key, value in {"Restart": "on-failure", "NoNewPrivileges": "yes", "DynamicUser": "yes",
                       "ProtectSystem": "strict", "CapabilityBoundingSet": ""}.items():
        assert proxy["Service"].get(key) == value, key
    assert proxy["Install"]["WantedBy"] == "multi-user.target"
    # Enabled outside the KMS relay's choice: the image always dials it for S3 ledgers.
    assert re.search(r"^systemctl enable --now hermetic-s3-vsock-proxy\.service$", script, re.M)
    assert "hermetic-s3-vsock-proxy" not in _enable_block(script)


def test_the_relay_ports_are_the_ones_the_image_dials(script: str, module: TfModule) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "eif" / "entrypoint.py"
    spec = importlib.util.spec_from_file_location("hermetic_eif_entrypoint_tf", path)
    assert spec is not None and spec.loader is not None
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert entry.KMS_RELAY == f"vsock://3:{VALUES['vsock_proxy_port']}"
    assert entry.S3_RELAY == f"vsock://3:{VALUES['s3_relay_port']}"
    assert entry.s3_host(REGION) == S3_HOST and entry.kms_host(REGION) == KMS_HOST
    assert module.variables["vsock_proxy_port"]["default"] == VALUES["vsock_proxy_port"]
    assert module.variables["s3_relay_port"]["default"] == VALUES["s3_relay_port"]
    assert module.locals["s3_endpoint_host"] == "s3.${local.region}.amazonaws.com"


def _enable_block(script: str) -> str:
    """The conditional that enables the chosen relay, with systemctl replaced by echo."""
    match = re.search(r'^if \[ "[a-z-]+" = "hermetic" \]; then\n.*?^fi$', script, re.M | re.S)
    assert match, "no relay enable conditional"
    return "systemctl() { echo systemctl \"$@\"; }\n" + match.group(0)


@pytest.mark.parametrize(("relay", "enabled"), [
    ("vsock-proxy", "systemctl enable --now hermetic-vsock-proxy.service"),
    ("hermetic", "systemctl enable hermetic-parent.service"),
])
def test_exactly_one_relay_is_enabled(template: str, relay: str, enabled: str) -> None:
    script = render(template, {**VALUES, "kms_relay": relay})
    result = subprocess.run(["bash", "-c", _enable_block(script)], capture_output=True, text=True,
                            check=True, env={"PATH": "/usr/bin:/bin"})
    assert result.stdout == enabled + "\n"
    # The two units share the vsock port: systemd must never run both.
    assert "hermetic-parent.service" in conflicts(script, "hermetic-vsock-proxy.service")
    assert "hermetic-vsock-proxy.service" in conflicts(script, "hermetic-parent.service")


AWS_VSOCK_PROXY = "nitro-enclaves-vsock-proxy.service"  # shipped by aws-nitro-enclaves-cli


def conflicts(script: str, name: str) -> set[str]:
    return set(unit(script, name)["Unit"]["Conflicts"].split())


@pytest.mark.parametrize("relay", ["vsock-proxy", "hermetic"])
def test_each_relay_unit_conflicts_with_aws_vsock_proxy_unit(template: str, relay: str) -> None:
    # AWS's unit runs `vsock-proxy 8000 kms.<region>.amazonaws.com 443`: the same vsock
    # port as ours. Conflicts= (which systemd applies both ways) keeps one listener.
    script = render(template, {**VALUES, "kms_relay": relay})
    assert conflicts(script, "hermetic-vsock-proxy.service") == {"hermetic-parent.service", AWS_VSOCK_PROXY}
    assert conflicts(script, "hermetic-parent.service") == {"hermetic-vsock-proxy.service", AWS_VSOCK_PROXY}
    # We never enable or start AWS's unit ourselves.
    assert not re.search(rf"systemctl .*\b{re.escape(AWS_VSOCK_PROXY)}", script)
    # The reverse situation is written down where an operator reads the units.
    assert "starting AWS's unit stops ours" in template


def test_parent_serve_relays_only_to_kms_on_the_same_port(script: str) -> None:
    from parent.cli import build_parser

    exec_start = unit(script, "hermetic-parent.service")["Service"]["ExecStart"].split()
    assert exec_start[:3] == ["/opt/hermetic/venv/bin/hermetic", "parent", "serve"]
    # The flags must be ones the real CLI accepts.
    args = build_parser().parse_args(exec_start[1:])
    assert str(args.kms_relay) == "vsock://3:8000"
    assert args.region == REGION and args.kms_target is None and args.allow == []
    assert str(args.allowlist) == "/etc/hermetic/kms-allowlist"
    assert heredoc(script, "/etc/hermetic/kms-allowlist").splitlines() == [f"{KMS_HOST}:443"]


def test_parent_proxy_unit_is_hardened(script: str) -> None:
    parent = unit(script, "hermetic-parent.service")
    service = parent["Service"]
    assert service["ExecStart"].startswith("/opt/hermetic/venv/bin/hermetic parent serve ")
    assert service["Restart"] == "on-failure"
    assert service["User"] == "hermetic" and service["Group"] == "hermetic"
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert "AF_VSOCK" in service["RestrictAddressFamilies"].split()
    assert service["EnvironmentFile"] == "/etc/hermetic/parent.env"
    assert parent["Install"]["WantedBy"] == "multi-user.target"
    assert parent["Unit"]["ConditionPathExists"] == "/opt/hermetic/venv/bin/hermetic"


def test_settings_file_agrees_with_the_variables(script: str) -> None:
    settings = dict(line.split("=", 1) for line in heredoc(script, "/etc/hermetic/parent.env").splitlines())
    assert settings["AWS_REGION"] == REGION
    assert settings["ENCLAVE_CPU_COUNT"] == "2"
    assert settings["ENCLAVE_MEMORY_MIB"] == "8192"
    assert settings["ENCLAVE_CID"] == "16"
    assert settings["HERMETIC_SEALED_BUCKET"] == VALUES["sealed_bucket"]
    assert settings["HERMETIC_RESULTS_BUCKET"] == VALUES["results_bucket"]
    assert settings["HERMETIC_KMS_RELAY_PORT"] == "8000"
    assert settings["HERMETIC_KMS_RELAY"] == "vsock-proxy"
    assert settings["HERMETIC_S3_HOST"] == S3_HOST
    assert settings["HERMETIC_S3_RELAY_PORT"] == "8001"


def test_installer_reads_only_the_artifacts_bucket(script: str) -> None:
    installer = heredoc(script, "/usr/local/sbin/hermetic-install")
    assert f's3://{VALUES["artifacts_bucket"]}/release' in installer
    assert "--no-index" in installer  # no package index is reachable from the VPC
    buckets = set(re.findall(r"s3://([a-z0-9.-]+)", script))
    assert buckets == {VALUES["artifacts_bucket"]}


def test_no_credentials_in_user_data(template: str) -> None:
    for pattern in (r"AKIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)BEGIN [A-Z ]*PRIVATE KEY"):
        assert not re.search(pattern, template), pattern
