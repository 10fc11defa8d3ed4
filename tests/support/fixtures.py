"""Fixtures shared across test packages: a local CA, a mock NSM, a test attestation chain."""
from __future__ import annotations

from pathlib import Path

import pytest

from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from tests.support.attestation_chain import TestChain, make_chain, make_document
from tests.support.certificates import new_nsm


@pytest.fixture(scope="session")
def chain() -> TestChain:
    return make_chain()


@pytest.fixture(scope="session")
def document(chain: TestChain) -> bytes:
    return make_document(chain, user_data=b"user-data", nonce=b"nonce-0123")


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(Path(tmp_path_factory.mktemp("other-ca")))


@pytest.fixture()
def nsm(ca: LocalCa) -> MockNsm:
    return new_nsm(ca)
