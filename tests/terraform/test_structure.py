"""Structural checks of terraform/: what the deployment promises, asserted on the parsed HCL."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from enclave.ledger.s3 import InvalidLedgerLocation, parse_s3_location
from tests.terraform.conftest import (
    EXAMPLE_DIR,
    MODULE_DIR,
    REPO,
    TERRAFORM,
    TfModule,
    block,
    blocks,
    parse_tf,
    ref,
    statements,
)

TF_FILES = sorted(TERRAFORM.rglob("*.tf"))


def test_there_is_a_module_and_an_example_root() -> None:
    names = {path.relative_to(TERRAFORM).as_posix() for path in TF_FILES}
    for required in ("modules/hermetic/main.tf", "modules/hermetic/variables.tf", "modules/hermetic/outputs.tf",
                     "examples/basic/main.tf"):
        assert required in names


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.relative_to(TERRAFORM).as_posix())
def test_every_file_parses(path: Path) -> None:
    parsed = parse_tf(path)
    assert parsed, f"{path} is empty"


def test_aws_provider_is_5x(module: TfModule, example: TfModule) -> None:
    for tf in (module, example):
        providers = [p for t in tf.terraform for p in blocks(t, "required_providers")]
        aws = [p["aws"] for p in providers if "aws" in p]
        assert len(aws) == 1
        assert aws[0]["source"] == "hashicorp/aws"
        assert re.fullmatch(r"~> 5\.\d+", aws[0]["version"]), aws[0]["version"]


# --------------------------------------------------------------------------- instance


def test_instance_is_an_enclave_host_with_imdsv2_and_encrypted_root(module: TfModule) -> None:
    instance = module.resource("aws_instance", "parent")
    assert block(instance, "enclave_options")["enabled"] is True
    metadata = block(instance, "metadata_options")
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 1
    root = block(instance, "root_block_device")
    assert root["encrypted"] is True
    assert ref(root["kms_key_id"]) == "aws_kms_key.storage.arn"
    assert instance["associate_public_ip_address"] is False
    assert instance["ebs_optimized"] is True
    assert instance["monitoring"] is True
    assert ref(instance["subnet_id"]) == "aws_subnet.private[0].id"
    assert [ref(sg) for sg in instance["vpc_security_group_ids"]] == ["aws_security_group.parent.id"]
    assert ref(instance["iam_instance_profile"]) == "aws_iam_instance_profile.parent.name"
    assert ref(instance["user_data"]) == "local.user_data"
    assert "ebs_block_device" not in instance  # every volume is the encrypted root


def test_instance_type_defaults_to_an_enclave_capable_size(module: TfModule) -> None:
    variable = module.variables["instance_type"]
    assert variable["default"] == "m5.xlarge"
    assert ref(module.resource("aws_instance", "parent")["instance_type"]) == "var.instance_type"
    # The validation rejects sizes Nitro Enclaves cannot use: keep the rule honest.
    condition = block(variable, "validation")["condition"]
    pattern = re.search(r'regex\("(.+)", var\.instance_type\)', condition)
    assert pattern, condition
    regex = re.compile(pattern.group(1).replace("\\\\", "\\"))
    for bad in ("t3.xlarge", "m5.large", "c5.large", "m5.medium"):
        assert regex.search(bad), bad
    for good in ("m5.xlarge", "m5.2xlarge", "c6i.4xlarge", "r5.xlarge"):
        assert not regex.search(good), good


# --------------------------------------------------------------------------- network


def test_no_internet_path_exists(module: TfModule) -> None:
    for forbidden in ("aws_internet_gateway", "aws_nat_gateway", "aws_egress_only_internet_gateway", "aws_eip"):
        assert not module.of_type(forbidden), f"{forbidden} must not exist: the VPC is private only"
    for name, route in module.of_type("aws_route").items():
        assert route.get("destination_cidr_block") != "0.0.0.0/0", name
    for name, table in module.of_type("aws_route_table").items():
        for route in blocks(table, "route"):
            assert route.get("cidr_block") != "0.0.0.0/0", name
            assert "gateway_id" not in route and "nat_gateway_id" not in route, name


def test_subnets_are_private_and_use_the_private_route_table(module: TfModule) -> None:
    subnet = module.resource("aws_subnet", "private")
    assert subnet["map_public_ip_on_launch"] is False
    assert set(module.of_type("aws_subnet")) == {"private"}
    association = module.resource("aws_route_table_association", "private")
    assert ref(association["subnet_id"]) == "aws_subnet.private[count.index].id"
    assert ref(association["route_table_id"]) == "aws_route_table.private.id"
    assert association["count"] == subnet["count"] == "${var.az_count}"
    vpc = module.resource("aws_vpc", "this")
    # Private DNS of the interface endpoints needs both.
    assert vpc["enable_dns_support"] is True and vpc["enable_dns_hostnames"] is True


def test_vpc_flow_logs_go_to_the_log_bucket(module: TfModule) -> None:
    flow = module.resource("aws_flow_log", "vpc")
    assert flow["traffic_type"] == "ALL"
    assert ref(flow["vpc_id"]) == "aws_vpc.this.id"
    assert flow["log_destination"].startswith("${aws_s3_bucket.logs.arn}/")


def test_s3_gateway_and_kms_interface_endpoints(module: TfModule) -> None:
    s3 = module.resource("aws_vpc_endpoint", "s3")
    assert s3["vpc_endpoint_type"] == "Gateway"
    assert s3["service_name"] == "com.amazonaws.${local.region}.s3"
    assert [ref(rt) for rt in s3["route_table_ids"]] == ["aws_route_table.private.id"]

    kms = module.resource("aws_vpc_endpoint", "kms")
    assert kms["vpc_endpoint_type"] == "Interface"
    assert kms["service_name"] == "com.amazonaws.${local.region}.kms"
    assert kms["private_dns_enabled"] is True
    assert ref(kms["subnet_ids"]) == "aws_subnet.private[*].id"
    assert [ref(sg) for sg in kms["security_group_ids"]] == ["aws_security_group.endpoints.id"]
    # vsock-proxy dials exactly this name; private DNS resolves it to the endpoint.
    assert module.locals["kms_endpoint_host"] == "kms.${local.region}.amazonaws.com"

    ssm = module.resource("aws_vpc_endpoint", "ssm")
    assert ssm["vpc_endpoint_type"] == "Interface" and ssm["private_dns_enabled"] is True
    assert "ssmmessages" in ssm["for_each"] and "ec2messages" in ssm["for_each"]


def test_endpoint_policies_name_only_hermetic_resources(module: TfModule) -> None:
    kms = list(statements(module.policy_document("kms_endpoint")))
    assert len(kms) == 1
    assert kms[0]["resources"] == ["${local.data_owner_key_arn}", "${local.model_owner_key_arn}"]
    assert block(kms[0], "principals")["identifiers"] == ["${aws_iam_role.parent.arn}"]
    s3 = {s["sid"]: s for s in statements(module.policy_document("s3_endpoint"))}
    assert set(s3) == {"HermeticBuckets", "ListReleases", "LedgerSlots", "ListLedger", "AmazonLinuxRepositories"}
    assert s3["ListReleases"]["resources"] == ["${aws_s3_bucket.artifacts.arn}"]
    assert s3["LedgerSlots"]["resources"] == ["${aws_s3_bucket.ledger.arn}/*"]
    assert sorted(s3["LedgerSlots"]["actions"]) == ["s3:GetObject", "s3:GetObjectRetention", "s3:PutObject",
                                                   "s3:PutObjectRetention"]
    assert (s3["ListLedger"]["actions"], s3["ListLedger"]["resources"]) == (["s3:ListBucket"],
                                                                            ["${aws_s3_bucket.ledger.arn}"])
    assert s3["AmazonLinuxRepositories"]["actions"] == ["s3:GetObject"]
    assert s3["AmazonLinuxRepositories"]["resources"] == [
        "arn:${local.partition}:s3:::al2023-repos-${local.region}-de612dc2/*"
    ]


def _sg_rules(module: TfModule, rtype: str, group: str) -> list[dict[str, Any]]:
    return [r for r in module.of_type(rtype).values() if ref(r["security_group_id"]) == f"aws_security_group.{group}.id"]


def test_parent_security_group_has_no_ingress_and_https_egress_inside_the_vpc(module: TfModule) -> None:
    parent = module.resource("aws_security_group", "parent")
    assert "ingress" not in parent and "egress" not in parent  # rules are separate resources
    assert not _sg_rules(module, "aws_vpc_security_group_ingress_rule", "parent")
    assert not module.of_type("aws_security_group_rule")
    egress = _sg_rules(module, "aws_vpc_security_group_egress_rule", "parent")
    assert len(egress) == 2
    for rule in egress:
        assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 443, 443)
        destinations = {k: rule[k] for k in ("cidr_ipv4", "cidr_ipv6", "prefix_list_id", "referenced_security_group_id")
                        if k in rule}
        assert destinations in ({"cidr_ipv4": "${var.vpc_cidr}"},
                                {"prefix_list_id": "${aws_vpc_endpoint.s3.prefix_list_id}"}), destinations
    for rtype in ("aws_vpc_security_group_egress_rule", "aws_vpc_security_group_ingress_rule"):
        for name, rule in module.of_type(rtype).items():
            assert rule.get("cidr_ipv4") != "0.0.0.0/0" and "cidr_ipv6" not in rule, name
            assert rule.get("description"), name


def test_endpoints_accept_https_from_the_parent_only(module: TfModule) -> None:
    ingress = _sg_rules(module, "aws_vpc_security_group_ingress_rule", "endpoints")
    assert len(ingress) == 1
    assert ref(ingress[0]["referenced_security_group_id"]) == "aws_security_group.parent.id"
    assert (ingress[0]["from_port"], ingress[0]["to_port"]) == (443, 443)
    assert not _sg_rules(module, "aws_vpc_security_group_egress_rule", "endpoints")


def test_default_security_group_is_emptied(module: TfModule) -> None:
    default = module.resource("aws_default_security_group", "this")
    assert "ingress" not in default and "egress" not in default


# --------------------------------------------------------------------------- S3

BUCKETS = {"sealed", "results", "artifacts", "logs", "ledger"}
SHARED_BUCKETS = {"sealed", "results", "artifacts", "logs"}  # local.all_buckets; the ledger is configured on its own
DATA_BUCKETS = {"sealed", "results", "artifacts"}


def _bucket_set(module: TfModule, body: dict[str, Any]) -> set[str]:
    """The buckets one per-bucket configuration resource applies to."""
    if "for_each" in body:
        groups = {"${local.data_buckets}": DATA_BUCKETS, "${local.all_buckets}": SHARED_BUCKETS}
        assert body["for_each"] in groups, body["for_each"]
        assert ref(body["bucket"]) == "each.value.id"
        return groups[body["for_each"]]
    match = re.fullmatch(r"\$\{aws_s3_bucket\.(\w+)\.id\}", body["bucket"])
    assert match, body["bucket"]
    return {match.group(1)}


def test_bucket_groups_are_what_the_tests_assume(module: TfModule) -> None:
    assert set(module.of_type("aws_s3_bucket")) == BUCKETS
    assert module.locals["data_buckets"] == {name: f"${{aws_s3_bucket.{name}}}" for name in DATA_BUCKETS}
    assert module.locals["all_buckets"] == "${merge(local.data_buckets, {logs = aws_s3_bucket.logs})}"


def _covered(module: TfModule, rtype: str) -> dict[str, dict[str, Any]]:
    covered: dict[str, dict[str, Any]] = {}
    for body in module.of_type(rtype).values():
        for bucket in _bucket_set(module, body):
            assert bucket not in covered, f"{rtype} configured twice for {bucket}"
            covered[bucket] = body
    return covered


def test_every_bucket_is_versioned(module: TfModule) -> None:
    covered = _covered(module, "aws_s3_bucket_versioning")
    assert set(covered) == BUCKETS
    for body in covered.values():
        assert block(body, "versioning_configuration")["status"] == "Enabled"


def test_every_bucket_blocks_all_public_access(module: TfModule) -> None:
    covered = _covered(module, "aws_s3_bucket_public_access_block")
    assert set(covered) == BUCKETS
    for body in covered.values():
        for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            assert body[flag] is True, flag
    ownership = _covered(module, "aws_s3_bucket_ownership_controls")
    assert set(ownership) == BUCKETS
    assert all(block(b, "rule")["object_ownership"] == "BucketOwnerEnforced" for b in ownership.values())


def test_data_buckets_use_sse_kms_and_logs_use_the_only_encryption_log_delivery_supports(module: TfModule) -> None:
    covered = _covered(module, "aws_s3_bucket_server_side_encryption_configuration")
    assert set(covered) == BUCKETS
    for name in DATA_BUCKETS | {"ledger"}:
        default = block(block(covered[name], "rule"), "apply_server_side_encryption_by_default")
        assert default["sse_algorithm"] == "aws:kms"
        assert ref(default["kms_master_key_id"]) == "aws_kms_key.storage.arn"
    logs = block(block(covered["logs"], "rule"), "apply_server_side_encryption_by_default")
    assert logs["sse_algorithm"] == "AES256"


def test_data_buckets_log_access_and_every_bucket_has_a_lifecycle(module: TfModule) -> None:
    logging = _covered(module, "aws_s3_bucket_logging")
    assert set(logging) == DATA_BUCKETS | {"ledger"}
    assert all(ref(b["target_bucket"]) == "aws_s3_bucket.logs.id" for b in logging.values())
    lifecycle = _covered(module, "aws_s3_bucket_lifecycle_configuration")
    # Not the ledger: expiring current versions would hide locked slots behind delete markers.
    assert set(lifecycle) == BUCKETS - {"ledger"}
    for name, body in lifecycle.items():
        rule = block(body, "rule")
        assert rule["status"] == "Enabled"
        assert block(rule, "abort_incomplete_multipart_upload")["days_after_initiation"] > 0, name
        assert "noncurrent_version_expiration" in rule, name


def test_every_bucket_policy_denies_plain_http(module: TfModule) -> None:
    tls = module.policy_document("tls_only")
    assert tls["for_each"] == "${local.all_buckets}"
    (deny,) = statements(tls)
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:*"]
    assert deny["resources"] == ["${each.value.arn}", "${each.value.arn}/*"]
    condition = block(deny, "condition")
    assert (condition["test"], condition["variable"], condition["values"]) == ("Bool", "aws:SecureTransport", ["false"])

    policies = module.of_type("aws_s3_bucket_policy")
    assert {_bucket_set(module, p).pop() for p in policies.values()} == BUCKETS
    for body in policies.values():
        (bucket,) = _bucket_set(module, body)
        tls_ref = f'data.aws_iam_policy_document.tls_only["{bucket}"].json'
        document = ref(body["policy"])
        if bucket == "ledger":
            # Rendered by `make policies`; its template carries the same TLS deny.
            assert document == "var.ledger_bucket_policy"
            template = json.loads((REPO / "kms-policies" / "ledger-bucket.template.json").read_text("utf-8"))
            tls_deny = {s["Sid"]: s for s in template["Statement"]}["DenyInsecureTransport"]
            assert (tls_deny["Effect"], tls_deny["Principal"], tls_deny["Action"]) == ("Deny", "*", "s3:*")
            assert tls_deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            continue
        if document == tls_ref:
            continue
        name = re.fullmatch(r"data\.aws_iam_policy_document\.(\w+)\.json", document)
        assert name, document
        assert module.policy_document(name.group(1))["source_policy_documents"] == [f"${{{tls_ref}}}"]


def test_ledger_bucket_is_compliance_locked_and_takes_the_rendered_policy(module: TfModule, example: TfModule) -> None:
    bucket = module.resource("aws_s3_bucket", "ledger")
    assert bucket["object_lock_enabled"] is True
    assert bucket["force_destroy"] is False  # locked objects could not be deleted anyway
    assert bucket["bucket"] == "${var.name}-ledger-${local.bucket_suffix}"
    lock = module.resource("aws_s3_bucket_object_lock_configuration", "ledger")
    assert ref(lock["bucket"]) == "aws_s3_bucket.ledger.id"
    retention = block(block(lock, "rule"), "default_retention")
    assert retention == {"mode": "COMPLIANCE", "days": "${var.ledger_retention_days}"}
    assert module.variables["ledger_retention_days"]["default"] >= 3650

    policy = module.resource("aws_s3_bucket_policy", "ledger")
    assert ref(policy["policy"]) == "var.ledger_bucket_policy"
    # The policy forbids lock-configuration changes, so the lock is set before it.
    assert "${aws_s3_bucket_object_lock_configuration.ledger}" in policy["depends_on"]
    conditions = [p["condition"] for p in blocks(block(policy, "lifecycle"), "precondition")]
    assert any("var.ledger_bucket_policy != null" in c for c in conditions)
    assert any("local.parent_role_arn" in c for c in conditions)
    assert any("s3:if-none-match" in c for c in conditions)
    assert any(":s3:::${var.name}-ledger-${local.bucket_suffix}/*" in c for c in conditions)

    argument = example.modules["hermetic"]["ledger_bucket_policy"]
    assert "local.ledger_policy" in argument and "file(" in argument
    assert example.locals["ledger_policy"] == "${local.policy_dir}/ledger-bucket.json"
    location = module.outputs["ledger_location"]["value"]
    assert location == "s3://${aws_s3_bucket.ledger.id}/${var.ledger_prefix}?owner=${local.account_id}"
    assert example.outputs["ledger_location"]["value"] == "${module.hermetic.ledger_location}"


def test_ledger_prefix_validation_matches_the_enclaves_parser(module: TfModule) -> None:
    condition = block(module.variables["ledger_prefix"], "validation")["condition"]
    pattern = re.search(r'regex\("(.+)", var\.ledger_prefix\)', condition)
    assert pattern, condition
    regex = re.compile(pattern.group(1).replace("\\\\", "\\"))
    for prefix in ("ledger/default", "a", "x_1/y-2/z.3", "a/.b", "a//b", "a/", "/a", "a/..", ".", "a b", "é"):
        try:
            parse_s3_location(f"s3://bucket/{prefix}?owner=123456789012")
            enclave_accepts = True
        except InvalidLedgerLocation:
            enclave_accepts = False
        assert bool(regex.fullmatch(prefix)) == enclave_accepts, prefix
    assert regex.fullmatch(module.variables["ledger_prefix"]["default"])


# --------------------------------------------------------------------------- KMS


def test_every_key_rotates_and_carries_a_policy(module: TfModule) -> None:
    keys = module.of_type("aws_kms_key")
    assert set(keys) == {"data_owner", "model_owner", "storage"}
    for name, key in keys.items():
        assert key["enable_key_rotation"] is True, name
        assert key.get("policy"), name
        assert key["deletion_window_in_days"] == "${var.kms_deletion_window_days}"
    assert module.variables["kms_deletion_window_days"]["default"] >= 7


def test_owner_keys_use_the_rendered_policies(module: TfModule, example: TfModule) -> None:
    for key, variable, template in (("data_owner", "data_owner_key_policy", "data-owner"),
                                    ("model_owner", "model_owner_key_policy", "model-owner")):
        body = module.resource("aws_kms_key", key)
        assert body["policy"] == f"${{var.{variable}}}"
        # The principal in the policy must exist before the key.
        assert body["depends_on"] == ["${aws_iam_role.parent}"]
        conditions = [p["condition"] for p in blocks(block(body, "lifecycle"), "precondition")]
        assert any("local.parent_role_arn" in c for c in conditions), key
        assert any("kms:RecipientAttestation:ImageSha384" in c for c in conditions), key
        argument = example.modules["hermetic"][variable]
        assert f"local.{key}_policy" in argument and "file(" in argument
        assert example.locals[f"{key}_policy"] == f"${{local.policy_dir}}/{template}.json"
    assert example.locals["policy_dir"] == '${coalesce(var.policy_dir, "${path.module}/../../../kms-policies/rendered")}'
    rendered = (EXAMPLE_DIR / "../../../kms-policies/rendered").resolve()
    assert rendered == REPO / "kms-policies" / "rendered"
    makefile = (REPO / "Makefile").read_text("utf-8")
    assert re.search(r"^POLICY_OUT \?= kms-policies/rendered$", makefile, re.M)


def test_parent_role_name_matches_the_arn_the_policies_are_rendered_for(module: TfModule) -> None:
    role = module.resource("aws_iam_role", "parent")
    assert role["name"] == "${local.parent_role_name}"
    assert module.locals["parent_role_name"] == "${var.name}-parent"
    assert module.locals["parent_role_arn"] == "arn:${local.partition}:iam::${local.account_id}:role/${local.parent_role_name}"


# --------------------------------------------------------------------------- IAM


def _all_statements(module: TfModule) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, document in module.data.get("aws_iam_policy_document", {}).items():
        for statement in statements(document):
            found.append((name, statement))
        for dynamic in blocks(document, "dynamic"):
            for content in blocks(dynamic["statement"], "content"):
                found.append((name, content))
    return found


def test_no_policy_allows_a_whole_service(module: TfModule) -> None:
    for name, statement in _all_statements(module):
        if statement.get("effect", "Allow") != "Allow":
            continue
        for action in statement["actions"]:
            assert action != "*" and not action.endswith(":*"), f"{name}: {action}"


def test_parent_role_is_least_privilege(module: TfModule) -> None:
    document = module.policy_document("parent")
    by_sid = {s["sid"]: s for s in statements(document)}
    assert set(by_sid) == {"ReadSealedDatasets", "ReadArtifacts", "ListReleases", "WriteResults", "AttestedKeyUse",
                           "StorageKeyThroughS3", "CreateLedgerSlots", "ReadLedgerSlots", "ListLedgerSlots"}
    for statement in by_sid.values():
        assert statement["effect"] == "Allow"
        assert "*" not in statement["resources"]
        assert all("*" not in action for action in statement["actions"])
    assert (by_sid["ReadSealedDatasets"]["actions"], by_sid["ReadSealedDatasets"]["resources"]) == (
        ["s3:GetObject"], ["${aws_s3_bucket.sealed.arn}/*"])
    assert (by_sid["ReadArtifacts"]["actions"], by_sid["ReadArtifacts"]["resources"]) == (
        ["s3:GetObject"], ["${aws_s3_bucket.artifacts.arn}/*"])
    assert (by_sid["ListReleases"]["actions"], by_sid["ListReleases"]["resources"]) == (
        ["s3:ListBucket"], ["${aws_s3_bucket.artifacts.arn}"])
    prefix = block(by_sid["ListReleases"], "condition")
    assert (prefix["variable"], prefix["values"]) == ("s3:prefix", ["release/*"])
    assert (by_sid["WriteResults"]["actions"], by_sid["WriteResults"]["resources"]) == (
        ["s3:PutObject"], ["${aws_s3_bucket.results.arn}/*"])
    assert sorted(by_sid["AttestedKeyUse"]["actions"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert by_sid["AttestedKeyUse"]["resources"] == ["${local.data_owner_key_arn}", "${local.model_owner_key_arn}"]
    # The enclave's ledger calls: create only with If-None-Match, read with the lock headers, list.
    assert (sorted(by_sid["CreateLedgerSlots"]["actions"]), by_sid["CreateLedgerSlots"]["resources"]) == (
        ["s3:PutObject", "s3:PutObjectRetention"], ["${aws_s3_bucket.ledger.arn}/*"])
    conditional = block(by_sid["CreateLedgerSlots"], "condition")
    assert (conditional["test"], conditional["variable"], conditional["values"]) == ("Null", "s3:if-none-match",
                                                                                     ["false"])
    assert (sorted(by_sid["ReadLedgerSlots"]["actions"]), by_sid["ReadLedgerSlots"]["resources"]) == (
        ["s3:GetObject", "s3:GetObjectRetention"], ["${aws_s3_bucket.ledger.arn}/*"])
    assert (by_sid["ListLedgerSlots"]["actions"], by_sid["ListLedgerSlots"]["resources"]) == (
        ["s3:ListBucket"], ["${aws_s3_bucket.ledger.arn}"])
    via = block(by_sid["StorageKeyThroughS3"], "condition")
    assert (via["variable"], via["values"]) == ("kms:ViaService", ["s3.${local.region}.amazonaws.com"])

    policy = module.resource("aws_iam_role_policy", "parent")
    assert ref(policy["policy"]) == "data.aws_iam_policy_document.parent.json"
    assert ref(policy["role"]) == "aws_iam_role.parent.id"
    assert set(module.of_type("aws_iam_role_policy")) == {"parent"}
    attachments = module.of_type("aws_iam_role_policy_attachment")
    assert [a["policy_arn"] for a in attachments.values()] == [
        "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    ]


def test_only_ec2_assumes_the_parent_role(module: TfModule) -> None:
    (statement,) = statements(module.policy_document("parent_assume"))
    assert statement["actions"] == ["sts:AssumeRole"]
    assert block(statement, "principals") == {"type": "Service", "identifiers": ["ec2.amazonaws.com"]}
    profile = module.resource("aws_iam_instance_profile", "parent")
    assert ref(profile["role"]) == "aws_iam_role.parent.name"


def test_example_outputs_what_the_deploy_guide_uses(example: TfModule) -> None:
    for name in ("instance_id", "parent_role_arn", "data_owner_key_arn", "model_owner_key_arn",
                 "sealed_bucket", "results_bucket", "artifacts_bucket"):
        assert example.outputs[name]["value"] == f"${{module.hermetic.{name}}}"
    assert example.modules["hermetic"]["source"] == "../../modules/hermetic"
    assert (EXAMPLE_DIR / example.modules["hermetic"]["source"]).resolve() == MODULE_DIR
