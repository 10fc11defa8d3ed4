from __future__ import annotations

from pathlib import Path

import pytest

from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from tests.enclave.certificate.factory import new_nsm


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(Path(tmp_path_factory.mktemp("other-ca")))


@pytest.fixture()
def nsm(ca: LocalCa) -> MockNsm:
    return new_nsm(ca)
