from __future__ import annotations

import pytest

from tests.enclave.attestation.chain_factory import TestChain, make_chain, make_document


@pytest.fixture(scope="session")
def chain() -> TestChain:
    return make_chain()


@pytest.fixture(scope="session")
def document(chain: TestChain) -> bytes:
    return make_document(chain, user_data=b"user-data", nonce=b"nonce-0123")
