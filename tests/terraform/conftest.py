"""Terraform files parsed with python-hcl2 into a queryable form, for structural tests.

python-hcl2 returns expressions as `${...}` strings; these helpers compare those
strings exactly and never evaluate Terraform. Blocks come back as lists of dicts.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULE_DIR = TERRAFORM / "modules" / "hermetic"
EXAMPLE_DIR = TERRAFORM / "examples" / "basic"
USER_DATA_TEMPLATE = MODULE_DIR / "templates" / "user_data.sh.tpl"

_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def parse_tf(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


@dataclass
class TfModule:
    """Every top-level block of one Terraform directory, keyed by type and name."""

    path: Path
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(rtype, {}), f"{rtype}.{name} is not defined"
        return self.resources[rtype][name]

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(rtype, {})

    def policy_document(self, name: str) -> dict[str, Any]:
        assert name in self.data.get("aws_iam_policy_document", {}), f"policy document {name} is not defined"
        return self.data["aws_iam_policy_document"][name]


def _merge_labelled(target: dict[str, dict[str, dict[str, Any]]], entries: list[dict[str, Any]], where: Path) -> None:
    for entry in entries:
        for rtype, named in entry.items():
            for name, body in named.items():
                assert name not in target.setdefault(rtype, {}), f"{rtype}.{name} defined twice ({where})"
                target[rtype][name] = body


def load_module(directory: Path) -> TfModule:
    module = TfModule(directory)
    for path in sorted(directory.glob("*.tf")):
        parsed = parse_tf(path)
        _merge_labelled(module.resources, parsed.get("resource", []), path)
        _merge_labelled(module.data, parsed.get("data", []), path)
        for entry in parsed.get("variable", []):
            module.variables.update(entry)
        for entry in parsed.get("output", []):
            module.outputs.update(entry)
        for entry in parsed.get("locals", []):
            module.locals.update(entry)
        for entry in parsed.get("module", []):
            module.modules.update(entry)
        module.terraform.extend(parsed.get("terraform", []))
    return module


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body."""
    value = body.get(name)
    assert isinstance(value, list) and len(value) == 1, f"expected exactly one {name} block, got {value!r}"
    return value[0]


def blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = body.get(name, [])
    assert isinstance(value, list), f"{name} is not a block list: {value!r}"
    return value


def ref(expression: str) -> str:
    """`${aws_x.y.id}` -> `aws_x.y.id` (a plain reference, nothing else)."""
    match = re.fullmatch(r"\$\{([^${}]+)\}", expression)
    assert match, f"{expression!r} is not a plain reference"
    return match.group(1)


def statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from blocks(document, "statement")


@pytest.fixture(scope="session")
def module() -> TfModule:
    return load_module(MODULE_DIR)


@pytest.fixture(scope="session")
def example() -> TfModule:
    return load_module(EXAMPLE_DIR)
