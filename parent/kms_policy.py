"""The KMS key-policy grammar Hermetic supports (IAM JSON policy language, a subset).

One parser for everything on the host that reads a key policy: `hermetic policy
render` validates what it renders with it, and the local KMS emulator evaluates the
statements it returns. Matching a request against a parsed policy is not here.

Supported: Version, Id, Statement (object or list) with Sid, Effect (Allow/Deny),
Principal ("*" or {"AWS": arn | account | [...]}; other principal types parse but
name no IAM caller), Action / Resource (string or list; actions need a service
prefix) and Condition with the String operators, Bool and Null, each (except Null)
also as `...IfExists`. Condition keys are any non-empty name, compared
case-insensitively. Anything else (NotPrincipal, NotAction, set operators, numeric
operators...) is rejected when the policy is parsed, so a policy is never
half-understood.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclave.errors import PolicyError

MAX_POLICY_BYTES = 32_768
VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
POLICY_FIELDS = frozenset({"Version", "Id", "Statement"})
STATEMENT_FIELDS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource", "Condition"})
# Condition operators without the IfExists suffix; Null alone takes no suffix.
STRING_OPERATORS = frozenset(
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
NULL_OPERATOR = "Null"
NEGATED_OPERATORS = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike"})
IF_EXISTS = "IfExists"
ACCOUNT_ID = re.compile(r"^\d{12}$")
IAM_OR_STS_ARN = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):.+$")


class MalformedPolicy(PolicyError):
    """A key policy document is outside the supported policy grammar."""


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
            continue  # Service/Federated principals never name an IAM caller
        for name in listed:
            if name != "*" and not (ACCOUNT_ID.match(name) or IAM_OR_STS_ARN.match(name)):
                raise MalformedPolicy(f"policy Principal {name!r} is not an account id or IAM ARN")
            principals.append(name)
    return tuple(principals)


def _conditions(value: Any) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise MalformedPolicy("policy Condition must be an object")
    out: list[Condition] = []
    for raw_operator, block in value.items():
        operator, if_exists = raw_operator, False
        if raw_operator.endswith(IF_EXISTS) and raw_operator != IF_EXISTS:
            operator, if_exists = raw_operator[: -len(IF_EXISTS)], True
        if operator not in STRING_OPERATORS and not (operator == NULL_OPERATOR and not if_exists):
            raise MalformedPolicy(f"policy condition operator {raw_operator!r} is not supported")
        if not isinstance(block, dict) or not block:
            raise MalformedPolicy(f"policy condition {raw_operator} must map keys to values")
        for key, values in block.items():
            if not isinstance(key, str) or not key:
                raise MalformedPolicy(f"policy condition {raw_operator} has an empty key")
            parsed = _condition_values(values, f"{raw_operator}/{key}")
            if operator == NULL_OPERATOR and any(v.lower() not in ("true", "false") for v in parsed):
                raise MalformedPolicy(f"policy Null condition on {key} must be true or false")
            out.append(Condition(operator, if_exists, key.lower(), parsed))
    return tuple(out)


def _statement(raw: Any) -> Statement:
    if not isinstance(raw, dict):
        raise MalformedPolicy("policy Statement entries must be objects")
    unknown = set(raw) - STATEMENT_FIELDS
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
        except json.JSONDecodeError as exc:
            raise MalformedPolicy(f"policy is not valid JSON: {exc.msg}") from None
    else:
        raw = dict(document)
        text = json.dumps(raw, indent=2)
    if not isinstance(raw, dict):
        raise MalformedPolicy("policy must be a JSON object")
    unknown = set(raw) - POLICY_FIELDS
    if unknown:
        raise MalformedPolicy(f"policy field {sorted(unknown)[0]} is not supported")
    if "Version" in raw and raw["Version"] not in VERSIONS:
        raise MalformedPolicy("policy Version must be 2012-10-17")
    statements = raw.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise MalformedPolicy("policy must have at least one Statement")
    return KeyPolicy(statements=tuple(_statement(s) for s in statements), text=text)
