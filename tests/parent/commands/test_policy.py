from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import PolicyError
from parent.cli import main
from parent.kms_policy import parse_policy
from parent.local.kms.policy_eval import Decision, RequestContext, evaluate
from parent.policy_render import render_policy

TEMPLATES = Path(__file__).resolve().parents[3] / "kms-policies"
PCR0 = "AB" * 48
PCR1 = "01" * 48
PCR2 = "02" * 48
PCR8 = "08" * 48
OWNER = "arn:aws:iam::111122223333:user/data-owner"
MODEL_OWNER = "arn:aws:iam::111122223333:user/model-owner"
PARENT = "arn:aws:iam::111122223333:role/hermetic-parent"
PARENT_SESSION = "arn:aws:sts::111122223333:assumed-role/hermetic-parent/i-0abc"
KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _measurements(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2, **extra}))
    return path


def _render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["policy", "render", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _data_owner_args(measurements: Path) -> list[str]:
    return ["--template", "data-owner", "--measurements", str(measurements),
            "--owner-arn", OWNER, "--parent-role-arn", PARENT]


def test_render_data_owner_without_pcr8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _render(tmp_path, capsys, *_data_owner_args(_measurements(tmp_path)))
    sids = [s["Sid"] for s in policy["Statement"]]
    assert sids == ["OwnerAdministersKey", "OwnerSealsDatasets", "AttestedEnclaveUnseals", "DenyParentWithoutAttestation"]
    unseal = policy["Statement"][2]
    assert unseal["Principal"] == {"AWS": PARENT}
    assert unseal["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"] == PCR0.lower()
    assert "${" not in json.dumps(policy)


def test_render_with_pcr8_and_nitro_cli_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "describe-eif.json"
    path.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1,
                                                  "PCR2": PCR2, "PCR8": PCR8}}))
    policy = _render(tmp_path, capsys, *_data_owner_args(path))
    pinned = [s for s in policy["Statement"] if s["Sid"] == "EnclaveMustBeSignedByPinnedCertificate"]
    assert pinned[0]["Condition"]["StringNotEqualsIgnoreCase"]["kms:RecipientAttestation:PCR8"] == PCR8


def test_render_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy.json"
    assert main(["policy", "render", *_data_owner_args(_measurements(tmp_path)), "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["Id"] == "hermetic-data-owner"
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_model_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _render(tmp_path, capsys, "--template", str(TEMPLATES / "model-owner.template.json"),
                     "--measurements", str(_measurements(tmp_path)), "--parent-role-arn", PARENT,
                     "--model-owner-arn", MODEL_OWNER)
    assert policy["Id"] == "hermetic-model-owner"
    assert "EnclaveMustBeSignedByPinnedCertificate" not in [s["Sid"] for s in policy["Statement"]]


@pytest.mark.parametrize(
    ("args", "measurements", "message"),
    [
        (["--template", "model-owner", "--parent-role-arn", PARENT], {}, "MODEL_OWNER_ARN"),
        (["--template", "data-owner", "--parent-role-arn", PARENT], {}, "OWNER_ARN"),
        (["--template", "data-owner", "--owner-arn", OWNER, "--parent-role-arn", PARENT], {"PCR0": "zz"}, "96 hex"),
        (["--template", "data-owner", "--owner-arn", OWNER, "--parent-role-arn", PARENT], {"PCR0": None}, "include PCR0"),
        (["--template", "data-owner", "--owner-arn", "bob", "--parent-role-arn", PARENT], {}, "not an IAM"),
        (["--template", "no-such-template", "--owner-arn", OWNER, "--parent-role-arn", PARENT], {}, "not found"),
    ],
)
def test_render_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                       measurements: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2, **measurements}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
    assert main(["policy", "render", *args, "--measurements", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error:") and message in err and err.count("\n") == 1


def test_unknown_placeholder_and_bad_template(tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "${SOMEONE}"},
                                                   "Action": "kms:*", "Resource": "*"}]}))
    with pytest.raises(PolicyError, match="SOMEONE"):
        render_policy(template, {"PCR0": PCR0}, {"PARENT_ROLE_ARN": PARENT})
    template.write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        render_policy(template, {"PCR0": PCR0}, {"PARENT_ROLE_ARN": PARENT})
    with pytest.raises(PolicyError, match="unknown principal"):
        render_policy(TEMPLATES / "data-owner.template.json", {"PCR0": PCR0}, {"ROOT": OWNER})


def test_template_only_optional_statements_fails(tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "kms:*",
                                                   "Resource": "*", "Condition": {"StringNotEquals": {
                                                       "kms:RecipientAttestation:PCR8": "${PCR8}"}}}]}))
    with pytest.raises(PolicyError, match="without statements"):
        render_policy(template, {"PCR0": PCR0}, {})


# --- what the shipped data-owner policy means --------------------------------------------
def _decide(policy: Any, principal: str, action: str, keys: dict[str, str] | None = None) -> Decision:
    return evaluate(policy, RequestContext(principal, action, KEY, keys or {}))


def _attested(pcr0: str, pcr8: str | None = None) -> dict[str, str]:
    keys = {"kms:RecipientAttestation:ImageSha384": pcr0, "kms:RecipientAttestation:PCR0": pcr0}
    if pcr8 is not None:
        keys["kms:RecipientAttestation:PCR8"] = pcr8
    return keys


@pytest.mark.parametrize("with_pcr8", [False, True])
def test_data_owner_policy_semantics(with_pcr8: bool) -> None:
    measurements = {"PCR0": PCR0, **({"PCR8": PCR8} if with_pcr8 else {})}
    policy = parse_policy(render_policy(TEMPLATES / "data-owner.template.json", measurements,
                                        {"OWNER_ARN": OWNER, "PARENT_ROLE_ARN": PARENT}))
    pcr8 = PCR8 if with_pcr8 else "00" * 48
    assert _decide(policy, PARENT_SESSION, "kms:Decrypt") is Decision.EXPLICIT_DENY
    assert _decide(policy, PARENT_SESSION, "kms:GenerateDataKey") is Decision.EXPLICIT_DENY
    # KMS hex is lower-case; the policy compares ignoring case either way.
    assert _decide(policy, PARENT_SESSION, "kms:Decrypt", _attested(PCR0.lower(), pcr8)) is Decision.ALLOW
    assert _decide(policy, PARENT_SESSION, "kms:Decrypt", _attested(PCR0.upper(), pcr8)) is Decision.ALLOW
    assert _decide(policy, PARENT_SESSION, "kms:Decrypt", _attested("cd" * 48, pcr8)) is Decision.IMPLICIT_DENY
    assert _decide(policy, PARENT_SESSION, "kms:Encrypt", _attested(PCR0, pcr8)) is Decision.IMPLICIT_DENY
    assert _decide(policy, OWNER, "kms:Decrypt") is Decision.IMPLICIT_DENY
    assert _decide(policy, OWNER, "kms:GenerateDataKey") is Decision.ALLOW
    assert _decide(policy, OWNER, "kms:PutKeyPolicy") is Decision.ALLOW
    wrong_signer = _decide(policy, PARENT_SESSION, "kms:Decrypt", _attested(PCR0, "09" * 48))
    assert wrong_signer is (Decision.EXPLICIT_DENY if with_pcr8 else Decision.ALLOW)


def test_model_owner_policy_semantics() -> None:
    rendered = render_policy(TEMPLATES / "model-owner.template.json", {"PCR0": PCR0},
                             {"MODEL_OWNER_ARN": MODEL_OWNER, "PARENT_ROLE_ARN": PARENT})
    [admins] = [s for s in rendered["Statement"] if s["Sid"] == "AccountKeyAdministratorsChangeThePolicy"]
    assert admins["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    # What the model owner is granted by name, without the account's key administrators' statement.
    own = {**rendered, "Statement": [s for s in rendered["Statement"] if s is not admins]}
    policy = parse_policy(json.dumps(own))
    for action in ("kms:PutKeyPolicy", "kms:CreateGrant", "kms:UpdateKeyDescription", "kms:ReplicateKey",
                   "kms:UpdatePrimaryRegion", "kms:GenerateDataKey", "kms:Encrypt"):
        assert _decide(policy, MODEL_OWNER, action) is Decision.IMPLICIT_DENY, action
    for action in ("kms:Decrypt", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:ListGrants", "kms:EnableKey",
                   "kms:DisableKey", "kms:TagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                   "kms:CreateAlias", "kms:UpdateAlias"):
        assert _decide(policy, MODEL_OWNER, action) is Decision.ALLOW, action
    # The whole policy: a principal of another account may not change it.
    whole = parse_policy(json.dumps(rendered))
    assert _decide(whole, "arn:aws:iam::999988887777:user/someone", "kms:PutKeyPolicy") is Decision.IMPLICIT_DENY
    assert _decide(whole, PARENT_SESSION, "kms:Decrypt") is Decision.EXPLICIT_DENY


def test_render_ledger_bucket_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--template", "ledger-bucket", "--measurements", str(_measurements(tmp_path)), "--parent-role-arn", PARENT,
            "--owner-arn", OWNER]
    policy = _render(tmp_path, capsys, *args, "--ledger-bucket", "hermetic-ledger-111122223333-us-east-1")
    text = json.dumps(policy)
    assert "${" not in text and "arn:aws:s3:::hermetic-ledger-111122223333-us-east-1/*" in text
    assert {s["Sid"] for s in policy["Statement"] if s["Principal"] == {"AWS": PARENT}} == {
        "ParentCreatesSlots", "ParentReadsSlots", "ParentListsSlots"}
    # The data owner audits the ledger and writes nothing to it.
    [owner] = [s for s in policy["Statement"] if s["Principal"] == {"AWS": OWNER}]
    assert owner["Sid"] == "DataOwnerReadsSlots" and owner["Effect"] == "Allow"
    assert not [a for a in owner["Action"] if not a.startswith(("s3:Get", "s3:List"))]
    # Without the bucket name, or with one S3 would not create, nothing is rendered.
    with pytest.raises(PolicyError, match=r"a value for \$\{LEDGER_BUCKET\} is required"):
        render_policy(TEMPLATES / "ledger-bucket.template.json", {"PCR0": PCR0},
                      {"PARENT_ROLE_ARN": PARENT, "OWNER_ARN": OWNER})
    for bad in ("Hermetic-Ledger", "ab", "a..b", "10.0.0.1"):
        with pytest.raises(PolicyError, match="bucket"):
            render_policy(TEMPLATES / "ledger-bucket.template.json", {"PCR0": PCR0}, {"PARENT_ROLE_ARN": PARENT, "OWNER_ARN": OWNER},
                          {"LEDGER_BUCKET": bad})
    with pytest.raises(PolicyError, match="unknown resource placeholder"):
        render_policy(TEMPLATES / "ledger-bucket.template.json", {"PCR0": PCR0}, {"PARENT_ROLE_ARN": PARENT, "OWNER_ARN": OWNER},
                      {"BUCKET": "hermetic-ledger"})
