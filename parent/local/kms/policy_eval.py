"""Evaluating KMS key policies (IAM JSON policy grammar) for the local emulator.

Supported: Version, Id, Statement (object or list) with Sid, Effect (Allow/Deny),
Principal ("*" or {"AWS": arn | account | [...]}; other principal types parse but
never match an IAM caller), Action / Resource (string or list, `*` and `?`
wildcards, actions case-insensitive) and Condition with the String operators,
Bool and Null, each (except Null) also as `...IfExists`. Anything else
(NotPrincipal, NotAction, set operators, numeric operators...) is rejected when the
policy is parsed, so a policy is never half-understood.

Semantics follow the IAM documentation: explicit Deny wins, then any Allow,
otherwise deny by default. Condition operators AND together, keys AND together,
the values of one key OR together (NOR for negated operators). A condition key
absent from the request makes a positive operator false and a negated operator
(StringNotEquals, StringNotLike...) true; `...IfExists` is true when the key is
absent; Null tests presence. Condition key names are case-insensitive.

Emulator simplification: a principal `arn:aws:iam::ACCOUNT:root` (or the bare
account id) matches every caller of that account, standing in for "IAM policies
in that account allow it" -- the emulator has no IAM policies.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

from parent.local.kms.errors import MalformedPolicy

MAX_POLICY_BYTES = 32_768
_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
_POLICY_FIELDS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_FIELDS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource", "Condition"})
_STRING_OPERATORS = frozenset(
    {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "Bool",
    }
)
_NEGATED = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike"})
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ROOT_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):root$")
_ASSUMED_ROLE_RE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
_IAM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):.+$")


class Decision(Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class Condition:
    operator: str  # without the IfExists suffix
    if_exists: bool
    key: str  # lower-cased
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    sid: str | None
    effect: str
    principals: tuple[str, ...]  # "*" for anyone; AWS principals only
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class KeyPolicy:
    statements: tuple[Statement, ...]
    text: str


@dataclass(frozen=True)
class RequestContext:
    """What a statement is matched against. `keys` maps condition keys to values."""

    principal_arn: str
    action: str
    resource: str
    keys: Mapping[str, str] = field(default_factory=dict)


def _lowered(keys: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in keys.items()}


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise MalformedPolicy(f"policy {what} must be a non-empty string or list of strings")
    return tuple(items)


def _condition_values(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MalformedPolicy(f"policy condition {what} has no values")
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, (str, int, float)):
            out.append(str(item))
        else:
            raise MalformedPolicy(f"policy condition {what} has a non-scalar value")
    return tuple(out)


def _principals(value: Any) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or not value:
        raise MalformedPolicy('policy Principal must be "*" or an object such as {"AWS": ...}')
    principals: list[str] = []
    for kind, names in value.items():
        listed = _string_list(names, f"Principal.{kind}")
        if kind != "AWS":
            continue  # Service/Federated principals never match an IAM caller here
        for name in listed:
            if name != "*" and not (_ACCOUNT_RE.match(name) or _IAM_ARN_RE.match(name)):
                raise MalformedPolicy(f"policy Principal {name!r} is not an account id or IAM ARN")
            principals.append(name)
    return tuple(principals)


def _conditions(value: Any) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise MalformedPolicy("policy Condition must be an object")
    out: list[Condition] = []
    for raw_operator, block in value.items():
        operator, if_exists = raw_operator, False
        if raw_operator.endswith("IfExists") and raw_operator != "IfExists":
            operator, if_exists = raw_operator[: -len("IfExists")], True
        if operator not in _STRING_OPERATORS and not (operator == "Null" and not if_exists):
            raise MalformedPolicy(f"policy condition operator {raw_operator!r} is not supported")
        if not isinstance(block, dict) or not block:
            raise MalformedPolicy(f"policy condition {raw_operator} must map keys to values")
        for key, values in block.items():
            if not isinstance(key, str) or not key:
                raise MalformedPolicy(f"policy condition {raw_operator} has an empty key")
            parsed = _condition_values(values, f"{raw_operator}/{key}")
            if operator == "Null" and any(v.lower() not in ("true", "false") for v in parsed):
                raise MalformedPolicy(f"policy Null condition on {key} must be true or false")
            out.append(Condition(operator, if_exists, key.lower(), parsed))
    return tuple(out)


def _statement(raw: Any) -> Statement:
    if not isinstance(raw, dict):
        raise MalformedPolicy("policy Statement entries must be objects")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise MalformedPolicy(f"policy statement field {sorted(unknown)[0]} is not supported")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicy("policy Sid must be a string")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy("policy Effect must be Allow or Deny")
    for required in ("Principal", "Action", "Resource"):
        if required not in raw:
            raise MalformedPolicy(f"policy statement {sid or '(no Sid)'} lacks {required}")
    actions = _string_list(raw["Action"], "Action")
    for action in actions:
        if action != "*" and ":" not in action:
            raise MalformedPolicy(f"policy Action {action!r} lacks a service prefix")
    return Statement(
        sid=sid,
        effect=effect,
        principals=_principals(raw["Principal"]),
        actions=actions,
        resources=_string_list(raw["Resource"], "Resource"),
        conditions=_conditions(raw["Condition"]) if "Condition" in raw else (),
    )


def parse_policy(document: str | Mapping[str, Any]) -> KeyPolicy:
    """Parse and validate a key policy; raise MalformedPolicy on anything unsupported."""
    if isinstance(document, str):
        text = document
        if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
            raise MalformedPolicy(f"policy is larger than {MAX_POLICY_BYTES} bytes")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise MalformedPolicy(f"policy is not valid JSON: {exc.msg}") from None
    else:
        raw = dict(document)
        text = json.dumps(raw, indent=2)
    if not isinstance(raw, dict):
        raise MalformedPolicy("policy must be a JSON object")
    unknown = set(raw) - _POLICY_FIELDS
    if unknown:
        raise MalformedPolicy(f"policy field {sorted(unknown)[0]} is not supported")
    if "Version" in raw and raw["Version"] not in _VERSIONS:
        raise MalformedPolicy("policy Version must be 2012-10-17")
    statements = raw.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise MalformedPolicy("policy must have at least one Statement")
    return KeyPolicy(statements=tuple(_statement(s) for s in statements), text=text)


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
    match = _IAM_ARN_RE.match(arn)
    return arn, match.group(1) if match else None


def principal_matches(policy_principal: str, caller_arn: str) -> bool:
    if policy_principal == "*":
        return True
    named, account = _principal_identities(caller_arn)
    if _ACCOUNT_RE.match(policy_principal):
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
    return bool(role) and named == f"{role.group(1)}{role.group(2)}"


def _condition_holds(condition: Condition, keys: Mapping[str, str]) -> bool:
    actual = keys.get(condition.key)
    if condition.operator == "Null":
        is_null = actual is None
        return any((v.lower() == "true") == is_null for v in condition.values)
    if actual is None:
        return condition.if_exists or condition.operator in _NEGATED
    op = condition.operator
    if op in ("StringEquals", "StringNotEquals"):
        hit = any(actual == v for v in condition.values)
    elif op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        hit = any(actual.casefold() == v.casefold() for v in condition.values)
    elif op in ("StringLike", "StringNotLike"):
        hit = any(glob_match(v, actual) for v in condition.values)
    else:  # Bool
        hit = any(actual.lower() == v.lower() for v in condition.values)
    return not hit if op in _NEGATED else hit


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
