"""Rendering the key-policy templates in kms-policies/ with real measurements and ARNs.

Templates are valid JSON policies with `${NAME}` placeholders in strings:
OWNER_ARN, PARENT_ROLE_ARN, MODEL_OWNER_ARN (principals), MODEL_OWNER_ACCOUNT_ROOT
(derived: the root of MODEL_OWNER_ARN's account, through which that account's key
administrators, and nobody named in the template, may change the policy), LEDGER_BUCKET (the budget
ledger's bucket name, for its bucket policy) and IMAGE_SHA384 (= PCR0),
PCR0, PCR1, PCR2, PCR8 (measurements, lower-case hex). PCR8 is optional: a
statement that mentions it is dropped when the image is not signed. Any other
missing value, an unknown placeholder or malformed input is a PolicyError, and the
result is checked against the policy grammar (parent.kms_policy, which the KMS
emulator enforces too).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError, PolicyError
from enclave.ledger.s3 import check_bucket_name
from parent.kms_policy import parse_policy

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]*)\}")
PRINCIPAL_PLACEHOLDERS = frozenset({"OWNER_ARN", "PARENT_ROLE_ARN", "MODEL_OWNER_ARN"})
MEASUREMENT_PLACEHOLDERS = frozenset({"IMAGE_SHA384", "PCR0", "PCR1", "PCR2", "PCR8"})
RESOURCE_PLACEHOLDERS = frozenset({"LEDGER_BUCKET"})
DERIVED_PLACEHOLDERS = frozenset({"MODEL_OWNER_ACCOUNT_ROOT"})
OPTIONAL_PLACEHOLDERS = frozenset({"PCR8"})
KNOWN_PLACEHOLDERS = PRINCIPAL_PLACEHOLDERS | MEASUREMENT_PLACEHOLDERS | RESOURCE_PLACEHOLDERS | DERIVED_PLACEHOLDERS
MEASUREMENT_KEYS = ("PCR0", "PCR1", "PCR2", "PCR8")
SHA384_HEX = re.compile(r"^[0-9a-fA-F]{96}$")
IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(?:root|(?:user|role)/[\w+=,.@/-]+)$")


def normalise_measurements(raw: Mapping[str, Any]) -> dict[str, str]:
    """PCRs from `{"PCR0": hex, ...}` or nitro-cli's `{"Measurements": {...}}`, lower-case."""
    if "Measurements" in raw and isinstance(raw["Measurements"], Mapping):
        raw = raw["Measurements"]
    values: dict[str, str] = {}
    for name in MEASUREMENT_KEYS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not SHA384_HEX.match(value):
            raise PolicyError(f"measurement {name} must be 96 hex digits (SHA-384)")
        values[name] = value.lower()
    if "PCR0" not in values:
        raise PolicyError("measurements must include PCR0 (the image SHA-384)")
    return values


def _placeholder_values(
    measurements: Mapping[str, Any], principals: Mapping[str, str], resources: Mapping[str, str]
) -> dict[str, str]:
    pcrs = normalise_measurements(measurements)
    values: dict[str, str] = dict(pcrs)
    values["IMAGE_SHA384"] = pcrs["PCR0"]
    for name, arn in principals.items():
        if name not in PRINCIPAL_PLACEHOLDERS:
            raise PolicyError(f"unknown principal placeholder {name}")
        if arn is None:
            continue
        if not isinstance(arn, str) or not IAM_ARN.match(arn):
            raise PolicyError(f"{name} {arn!r} is not an IAM user, role or account-root ARN")
        values[name] = arn
    if "MODEL_OWNER_ARN" in values:
        partition, account = values["MODEL_OWNER_ARN"].split(":")[1], values["MODEL_OWNER_ARN"].split(":")[4]
        values["MODEL_OWNER_ACCOUNT_ROOT"] = f"arn:{partition}:iam::{account}:root"
    for name, value in resources.items():
        if name not in RESOURCE_PLACEHOLDERS:
            raise PolicyError(f"unknown resource placeholder {name}")
        if name == "LEDGER_BUCKET":
            try:
                check_bucket_name(value)
            except ConfigError as err:
                raise PolicyError(str(err)) from None
        values[name] = value
    return values


def _names_in(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(PLACEHOLDER.findall(node))
    if isinstance(node, list):
        return set().union(*(_names_in(item) for item in node)) if node else set()
    if isinstance(node, dict):
        names: set[str] = set()
        for key, value in node.items():
            names |= _names_in(key) | _names_in(value)
        return names
    return set()


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in node.items()}
    return node


def render_template(
    template: Mapping[str, Any],
    measurements: Mapping[str, Any],
    principals: Mapping[str, str],
    resources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render an already-loaded template document."""
    values = _placeholder_values(measurements, principals, resources or {})
    unknown = _names_in(template) - KNOWN_PLACEHOLDERS
    if unknown:
        raise PolicyError(f"template uses unknown placeholder ${{{sorted(unknown)[0]}}}")
    statements = template.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise PolicyError("template has no Statement list")
    kept: list[Any] = []
    for statement in statements:
        missing = _names_in(statement) - values.keys()
        if missing - OPTIONAL_PLACEHOLDERS:
            raise PolicyError(f"a value for ${{{sorted(missing - OPTIONAL_PLACEHOLDERS)[0]}}} is required")
        if missing:
            continue  # the statement only applies when the optional value exists
        kept.append(_substitute(statement, values))
    if not kept:
        raise PolicyError("rendering left the policy without statements")
    rendered = {k: _substitute(v, values) for k, v in template.items() if k != "Statement"}
    rendered["Statement"] = kept
    # Fail here, not at CreateKey time, if the result is outside the supported grammar.
    parse_policy(rendered)
    return rendered


def render_policy(
    template_path: Path,
    measurements: Mapping[str, Any],
    principals: Mapping[str, str],
    resources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Load `template_path` and render it (see module docstring)."""
    try:
        template = json.loads(Path(template_path).read_text("utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read policy template {template_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PolicyError(f"policy template {template_path} is not valid JSON: {exc}") from None
    if not isinstance(template, dict):
        raise PolicyError(f"policy template {template_path} must be a JSON object")
    return render_template(template, measurements, principals, resources)
