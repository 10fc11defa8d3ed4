"""Input limits shared by every NSM backend."""
from __future__ import annotations

import pytest

from enclave.nsm.errors import NsmInputTooLarge, NsmInvalidArgument
from enclave.nsm.interface import (
    MAX_ATTESTATION_FIELD,
    MAX_RANDOM_REQUEST,
    check_attestation_inputs,
    check_random_length,
)


def test_limits_match_the_real_nsm() -> None:
    assert MAX_ATTESTATION_FIELD == 1024


@pytest.mark.parametrize("field", ["user_data", "nonce", "public_key"])
def test_each_field_is_limited_to_1024_bytes(field: str) -> None:
    args = {"user_data": None, "nonce": None, "public_key": None}
    args[field] = bytes(1024)
    check_attestation_inputs(**args)
    args[field] = bytes(1025)
    with pytest.raises(NsmInputTooLarge, match=field):
        check_attestation_inputs(**args)


def test_fields_must_be_bytes() -> None:
    with pytest.raises(NsmInvalidArgument):
        check_attestation_inputs("text", None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [-1, 1.5, "3", True])
def test_random_length_must_be_a_natural_number(n: object) -> None:
    with pytest.raises(NsmInvalidArgument):
        check_random_length(n)  # type: ignore[arg-type]


def test_random_length_upper_bound() -> None:
    assert check_random_length(MAX_RANDOM_REQUEST) == MAX_RANDOM_REQUEST
    with pytest.raises(NsmInputTooLarge):
        check_random_length(MAX_RANDOM_REQUEST + 1)
