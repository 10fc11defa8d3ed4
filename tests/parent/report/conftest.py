from __future__ import annotations

from pathlib import Path

import pytest

from parent.local.local_ca import LocalCa
from tests.parent.report.evidence import Evidence, make_evidence


@pytest.fixture()
def evidence(ca: LocalCa, tmp_path: Path) -> Evidence:
    return make_evidence(ca, tmp_path / "evidence")
