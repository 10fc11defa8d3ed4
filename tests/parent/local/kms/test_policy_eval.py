from __future__ import annotations

import json
from typing import Any

import pytest

from parent.kms_policy import parse_policy
from parent.local.kms.policy_eval import (
    Decision,
    RequestContext,
    evaluate,
    glob_match,
    principal_matches,
)

ACCT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE = f"arn:aws:iam::{ACCT}:role/parent"
USER = f"arn:aws:iam::{ACCT}:user/owner"


def _policy(*statements: dict[str, Any]) -> Any:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(condition: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    statement.update(overrides)
    return statement


def _decide(policy: Any, keys: dict[str, str] | None = None, *, principal: str = ROLE,
            action: str = "kms:Decrypt", resource: str = KEY) -> Decision:
    return evaluate(policy, RequestContext(principal, action, resource, keys or {}))


def _holds(operator: str, key: str, values: Any, keys: dict[str, str]) -> bool:
    return _decide(_policy(_allow({operator: {key: values}})), keys) is Decision.ALLOW


# --- operators, one by one --------------------------------------------------------------
@pytest.mark.parametrize(
    ("operator", "values", "actual", "expected"),
    [
        ("StringEquals", "abc", "abc", True),
        ("StringEquals", "abc", "ABC", False),
        ("StringEquals", ["x", "abc"], "abc", True),  # values OR together
        ("StringNotEquals", "abc", "abc", False),
        ("StringNotEquals", ["x", "y"], "abc", True),  # NOR over values
        ("StringNotEquals", ["x", "abc"], "abc", False),
        ("StringEqualsIgnoreCase", "ABC", "abc", True),
        ("StringEqualsIgnoreCase", "abd", "abc", False),
        ("StringNotEqualsIgnoreCase", "ABC", "abc", False),
        ("StringNotEqualsIgnoreCase", "abd", "abc", True),
        ("StringLike", "a*c", "abbbc", True),
        ("StringLike", "a?c", "abc", True),
        ("StringLike", "a?c", "abbc", False),
        ("StringLike", "A*", "abc", False),  # case-sensitive
        ("StringLike", "a.c", "abc", False),  # regex metacharacters are literal
        ("StringNotLike", "a*", "abc", False),
        ("StringNotLike", "b*", "abc", True),
        ("Bool", True, "true", True),
        ("Bool", "false", "true", False),
    ],
)
def test_operator_with_key_present(operator: str, values: Any, actual: str, expected: bool) -> None:
    assert _holds(operator, "kms:EncryptionContext:k", values, {"kms:EncryptionContext:k": actual}) is expected


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        # IAM: an absent key fails positive operators and satisfies negated ones.
        ("StringEquals", False),
        ("StringEqualsIgnoreCase", False),
        ("StringLike", False),
        ("Bool", False),
        ("StringNotEquals", True),
        ("StringNotEqualsIgnoreCase", True),
        ("StringNotLike", True),
        # ...IfExists: true when the key is absent.
        ("StringEqualsIfExists", True),
        ("StringNotEqualsIfExists", True),
        ("StringEqualsIgnoreCaseIfExists", True),
        ("StringNotEqualsIgnoreCaseIfExists", True),
        ("StringLikeIfExists", True),
        ("StringNotLikeIfExists", True),
        ("BoolIfExists", True),
    ],
)
def test_operator_with_key_missing(operator: str, expected: bool) -> None:
    assert _holds(operator, "kms:EncryptionContext:k", "v", {}) is expected


@pytest.mark.parametrize(
    ("operator", "actual", "expected"),
    [
        ("StringEqualsIfExists", "v", True),
        ("StringEqualsIfExists", "w", False),
        ("StringNotEqualsIfExists", "v", False),
        ("StringLikeIfExists", "w", False),
    ],
)
def test_if_exists_checks_present_keys(operator: str, actual: str, expected: bool) -> None:
    assert _holds(operator, "kms:EncryptionContext:k", "v", {"kms:EncryptionContext:k": actual}) is expected


@pytest.mark.parametrize(
    ("value", "present", "expected"),
    [("true", False, True), ("true", True, False), ("false", True, True), ("false", False, False), (True, False, True)],
)
def test_null(value: Any, present: bool, expected: bool) -> None:
    keys = {"kms:RecipientAttestation:ImageSha384": "ab"} if present else {}
    assert _holds("Null", "kms:RecipientAttestation:ImageSha384", value, keys) is expected


def test_condition_keys_are_case_insensitive() -> None:
    assert _holds("StringEquals", "KMS:recipientattestation:PCR0", "ab", {"kms:RecipientAttestation:PCR0": "ab"})


def test_conditions_and_keys_are_anded() -> None:
    condition = {
        "StringEquals": {"kms:EncryptionContext:a": "1", "kms:EncryptionContext:b": "2"},
        "StringLike": {"kms:EncryptionContext:c": "x*"},
    }
    policy = _policy(_allow(condition))
    full = {"kms:EncryptionContext:a": "1", "kms:EncryptionContext:b": "2", "kms:EncryptionContext:c": "xy"}
    assert _decide(policy, full) is Decision.ALLOW
    for drop in full:
        partial = {k: v for k, v in full.items() if k != drop}
        assert _decide(policy, partial) is Decision.IMPLICIT_DENY


# --- statements and decisions ------------------------------------------------------------
def test_default_deny_and_explicit_deny_wins() -> None:
    assert _decide(_policy(_allow(Action="kms:Encrypt"))) is Decision.IMPLICIT_DENY
    deny = {"Effect": "Deny", "Principal": {"AWS": ROLE}, "Action": "kms:*", "Resource": "*"}
    assert _decide(_policy(_allow(), deny)) is Decision.EXPLICIT_DENY
    assert _decide(_policy(deny, _allow())) is Decision.EXPLICIT_DENY
    assert _decide(_policy(_allow(), deny), principal=USER) is Decision.ALLOW


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("kms:*", "kms:Decrypt", True),
        ("kms:Generate*", "kms:GenerateDataKey", True),
        ("kms:Generate*", "kms:Decrypt", False),
        ("KMS:decrypt", "kms:Decrypt", True),
        ("kms:De?rypt", "kms:Decrypt", True),
        ("*", "kms:Decrypt", True),
        ("s3:*", "kms:Decrypt", False),
    ],
)
def test_action_matching(pattern: str, action: str, expected: bool) -> None:
    policy = _policy(_allow(Action=[pattern]))
    assert (_decide(policy, action=action) is Decision.ALLOW) is expected


def test_resource_matching() -> None:
    assert _decide(_policy(_allow(Resource=KEY))) is Decision.ALLOW
    assert _decide(_policy(_allow(Resource=f"arn:aws:kms:us-east-1:{ACCT}:key/*"))) is Decision.ALLOW
    other = f"arn:aws:kms:us-east-1:{ACCT}:key/ffffffff-12ab-34cd-56ef-1234567890ab"
    assert _decide(_policy(_allow(Resource=other))) is Decision.IMPLICIT_DENY


@pytest.mark.parametrize(
    ("policy_principal", "caller", "expected"),
    [
        ("*", USER, True),
        (ROLE, ROLE, True),
        (ROLE, USER, False),
        (ROLE, f"arn:aws:sts::{ACCT}:assumed-role/parent/i-0123", True),
        (f"arn:aws:iam::{ACCT}:role/team/parent", f"arn:aws:sts::{ACCT}:assumed-role/parent/i-0", True),
        (ROLE, f"arn:aws:sts::{ACCT}:assumed-role/other/i-0123", False),
        (f"arn:aws:iam::{ACCT}:root", USER, True),
        (ACCT, USER, True),
        ("arn:aws:iam::444455556666:root", USER, False),
        (USER, f"arn:aws:iam::{ACCT}:user/owner2", False),
    ],
)
def test_principal_matching(policy_principal: str, caller: str, expected: bool) -> None:
    assert principal_matches(policy_principal, caller) is expected


def test_principal_list_and_service_principals() -> None:
    policy = _policy(_allow(Principal={"AWS": [USER, ROLE], "Service": "ec2.amazonaws.com"}))
    assert _decide(policy) is Decision.ALLOW
    only_service = _policy(_allow(Principal={"Service": "ec2.amazonaws.com"}))
    assert _decide(only_service) is Decision.IMPLICIT_DENY


def test_single_statement_object_and_json_text() -> None:
    text = json.dumps({"Version": "2012-10-17", "Statement": _allow()})
    policy = parse_policy(text)
    assert policy.text == text and _decide(policy) is Decision.ALLOW


def test_glob_match_anchors() -> None:
    assert glob_match("abc", "abc") and not glob_match("abc", "abcd") and not glob_match("bc", "abc")
