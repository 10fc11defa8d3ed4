"""Evaluating KMS key policies for the local emulator: a request against a parsed policy.

The grammar (what a policy may say, and parsing it) is `parent.kms_policy`; this
module only decides requests.

Semantics follow the IAM documentation: explicit Deny wins, then any Allow,
otherwise deny by default. Condition operators AND together, keys AND together,
the values of one key OR together (NOR for negated operators). A condition key
absent from the request makes a positive operator false and a negated operator
(StringNotEquals, StringNotLike...) true; `...IfExists` is true when the key is
absent; Null tests presence. Condition key names are case-insensitive. Actions
match case-insensitively; `*` and `?` are wildcards in actions, resources and
StringLike values.

Emulator simplification: a principal `arn:aws:iam::ACCOUNT:root` (or the bare
account id) matches every caller of that account, standing in for "IAM policies
in that account allow it" -- the emulator has no IAM policies.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from parent.kms_policy import (
    ACCOUNT_ID,
    IAM_OR_STS_ARN,
    NEGATED_OPERATORS,
    NULL_OPERATOR,
    Condition,
    KeyPolicy,
    Statement,
)

_ROOT_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):root$")
_ASSUMED_ROLE_RE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")


class Decision(Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class RequestContext:
    """What a statement is matched against. `keys` maps condition keys to values."""

    principal_arn: str
    action: str
    resource: str
    keys: Mapping[str, str] = field(default_factory=dict)


def _lowered(keys: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in keys.items()}


@lru_cache(maxsize=512)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern
    )
    return re.compile(f"^{body}$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcard match: `*` any run of characters, `?` one character."""
    return bool(_glob(pattern, ignore_case).match(value))


def _principal_identities(arn: str) -> tuple[str, str | None]:
    """(the ARN the policy names, its account): an assumed role is named by its role."""
    assumed = _ASSUMED_ROLE_RE.match(arn)
    if assumed:
        partition, account, role = assumed.groups()
        return f"arn:{partition}:iam::{account}:role/{role}", account
    match = IAM_OR_STS_ARN.match(arn)
    return arn, match.group(1) if match else None


def principal_matches(policy_principal: str, caller_arn: str) -> bool:
    if policy_principal == "*":
        return True
    named, account = _principal_identities(caller_arn)
    if ACCOUNT_ID.match(policy_principal):
        return account == policy_principal
    root = _ROOT_RE.match(policy_principal)
    if root:
        return account == root.group(1)
    if caller_arn == policy_principal:
        return True
    if named == policy_principal:
        return True
    # A role ARN in a policy may carry a path; the assumed-role ARN never does.
    role = re.match(r"^(arn:aws[a-z-]*:iam::\d{12}:role/)(?:.*/)?([^/]+)$", policy_principal)
    return role is not None and named == f"{role.group(1)}{role.group(2)}"


def _condition_holds(condition: Condition, keys: Mapping[str, str]) -> bool:
    actual = keys.get(condition.key)
    if condition.operator == NULL_OPERATOR:
        is_null = actual is None
        return any((v.lower() == "true") == is_null for v in condition.values)
    if actual is None:
        return condition.if_exists or condition.operator in NEGATED_OPERATORS
    op = condition.operator
    if op in ("StringEquals", "StringNotEquals"):
        hit = any(actual == v for v in condition.values)
    elif op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        hit = any(actual.casefold() == v.casefold() for v in condition.values)
    elif op in ("StringLike", "StringNotLike"):
        hit = any(glob_match(v, actual) for v in condition.values)
    else:  # Bool
        hit = any(actual.lower() == v.lower() for v in condition.values)
    return not hit if op in NEGATED_OPERATORS else hit


def statement_applies(statement: Statement, request: RequestContext) -> bool:
    if not any(principal_matches(p, request.principal_arn) for p in statement.principals):
        return False
    if not any(glob_match(a, request.action, ignore_case=True) for a in statement.actions):
        return False
    if not any(glob_match(r, request.resource) for r in statement.resources):
        return False
    keys = _lowered(request.keys)
    return all(_condition_holds(c, keys) for c in statement.conditions)


def evaluate(policy: KeyPolicy, request: RequestContext) -> Decision:
    """Explicit deny, else allow if any statement allows, else implicit deny."""
    allowed = False
    for statement in policy.statements:
        if statement_applies(statement, request):
            if statement.effect == "Deny":
                return Decision.EXPLICIT_DENY
            allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY
