"""The empirical audit result is read strictly: anything but a well-formed object is a typed error."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import ConfigError
from parent.audit.result import AuditResultError, EmpiricalAudit, parse_audit_result, read_audit_result
from tests.parent.report.evidence import audit_result


def _parse(value: Any) -> EmpiricalAudit:
    return parse_audit_result(json.dumps(value).encode())


def test_a_well_formed_result_parses_into_a_frozen_record() -> None:
    audit = _parse(audit_result())
    assert audit.epsilon_lower_bound == 0.4 and audit.canaries == 1000 and audit.control is False
    assert audit.to_json() == audit_result()
    with pytest.raises(AttributeError):
        audit.ceiling = 9.0  # type: ignore[misc]


@pytest.mark.parametrize("bad, message", [
    ({"canaries": True}, "canaries is not an integer"),
    ({"correct": 101}, "correct (101) <= guesses (100)"),
    ({"epsilon_lower_bound": "0.4"}, "epsilon_lower_bound is not a number"),
    ({"epsilon_lower_bound": 2.5}, "above the ceiling"),
    ({"confidence": 1.0}, "confidence 1.0 is not in (0, 1)"),
    ({"control": "no"}, "control is not true or false"),
    ({"job": ""}, "job is not a printable text"),
    ({"extra": 1}, "unknown [\"'extra'\"]"),
])
def test_a_bad_field_is_refused_naming_it(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(AuditResultError) as info:
        _parse(audit_result(**bad))
    assert message in str(info.value)


def test_a_missing_key_and_non_objects_are_refused() -> None:
    result = audit_result()
    del result["ceiling"]
    with pytest.raises(AuditResultError, match=r"missing \['ceiling'\]"):
        _parse(result)
    for raw in (b"[1, 2]", b"{not json", b'{"ceiling": NaN}', b"\xff"):
        with pytest.raises(AuditResultError):
            parse_audit_result(raw)


def test_reading_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(AuditResultError, match="cannot read audit result") as info:
        read_audit_result(tmp_path / "absent.json")
    assert isinstance(info.value, ConfigError) and info.value.code == "config"
