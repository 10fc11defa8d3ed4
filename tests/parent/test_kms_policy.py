"""The one key-policy grammar (parent.kms_policy): what parses, what is refused, and that rendering uses it."""
from __future__ import annotations

import json
from typing import Any

import pytest

from enclave.errors import PolicyError
from parent.kms_policy import Condition, MalformedPolicy, parse_policy
from parent.policy_render import render_template

PCR0 = "ab" * 48
ROLE = "arn:aws:iam::111122223333:role/parent"


def _allow(condition: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    statement.update(overrides)
    return statement


def test_parsed_statement_fields() -> None:
    policy = parse_policy({"Version": "2012-10-17", "Statement": {
        "Sid": "s", "Effect": "Deny", "Principal": {"AWS": [ROLE, "111122223333"], "Service": "ec2.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "*",
        "Condition": {"StringEqualsIfExists": {"Kms:RecipientAttestation:PCR0": PCR0},
                      "Null": {"aws:SourceIp": True}, "Bool": {"aws:SecureTransport": [True, "false"]}},
    }})
    (statement,) = policy.statements
    assert (statement.sid, statement.effect) == ("s", "Deny")
    assert statement.principals == (ROLE, "111122223333")  # non-AWS principals name no IAM caller
    assert statement.actions == ("kms:Decrypt", "kms:Encrypt") and statement.resources == ("*",)
    assert statement.conditions == (
        Condition("StringEquals", True, "kms:recipientattestation:pcr0", (PCR0,)),
        Condition("Null", False, "aws:sourceip", ("true",)),
        Condition("Bool", False, "aws:securetransport", ("true", "false")),
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ({"Statement": []}, "at least one Statement"),
        ({"Version": "2020-01-01", "Statement": [_allow()]}, "Version"),
        ({"Statement": [_allow()], "Extra": 1}, "Extra"),
        ({"Statement": [{**_allow(), "Effect": "Maybe"}]}, "Effect"),
        ({"Statement": [{k: v for k, v in _allow().items() if k != "Principal"}]}, "Principal"),
        ({"Statement": [{**_allow(), "NotAction": "kms:Decrypt"}]}, "NotAction"),
        ({"Statement": [_allow({"ForAnyValue:StringEquals": {"k": "v"}})]}, "not supported"),
        ({"Statement": [_allow({"NumericLessThan": {"k": "1"}})]}, "not supported"),
        ({"Statement": [_allow({"NullIfExists": {"k": "true"}})]}, "not supported"),
        ({"Statement": [_allow({"IfExists": {"k": "true"}})]}, "not supported"),
        ({"Statement": [_allow({"Null": {"k": "maybe"}})]}, "true or false"),
        ({"Statement": [_allow({"StringEquals": {"k": []}})]}, "no values"),
        ({"Statement": [_allow({"StringEquals": {"k": {"x": 1}}})]}, "non-scalar"),
        ({"Statement": [_allow({"StringEquals": {"": "v"}})]}, "empty key"),
        ({"Statement": [_allow(Action=[])]}, "Action"),
        ({"Statement": [_allow(Action="Decrypt")]}, "service prefix"),
        ({"Statement": [_allow(Principal={"AWS": "bob"})]}, "not an account id"),
        ({"Statement": [_allow(Principal="someone")]}, "Principal"),
    ],
)
def test_malformed_policies_rejected(document: Any, message: str) -> None:
    with pytest.raises(MalformedPolicy, match=message) as info:
        parse_policy(document)
    assert isinstance(info.value, PolicyError)


def test_policy_size_limit() -> None:
    big = json.dumps({"Statement": [_allow(Sid="x" * 40_000)]})
    with pytest.raises(MalformedPolicy, match="larger than"):
        parse_policy(big)


def test_rendering_refuses_a_template_outside_the_grammar() -> None:
    # Placeholders all resolve, so only the grammar check can refuse it.
    template = {"Version": "2012-10-17", "Statement": [_allow(
        {"NumericEquals": {"kms:RecipientAttestation:ImageSha384": "${PCR0}"}}, Principal={"AWS": "${PARENT_ROLE_ARN}"}
    )]}
    with pytest.raises(MalformedPolicy, match="NumericEquals"):
        render_template(template, {"PCR0": PCR0}, {"PARENT_ROLE_ARN": ROLE})
