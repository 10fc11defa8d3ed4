"""Hostile input never escapes as anything but an AttestationError."""
from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.attestation.document import parse_attestation
from enclave.attestation.errors import AttestationError
from parent.verify.attestation import verify_attestation
from tests.support.attestation_chain import (
    AT,
    cose_sign1,
    encode_payload,
    make_chain,
    make_document,
    payload_fields,
)
from tests.support.vectors import AWS_ATTESTATION

CHAIN = make_chain()
VALID = make_document(CHAIN, user_data=b"user", nonce=b"nonce", indefinite=True)
# Mangled certificate names make cryptography warn while parsing; only the verdict matters.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def must_refuse_or_accept(data: bytes) -> None:
    try:
        verify_attestation(data, root_der=CHAIN.root_der, at=AT)
    except AttestationError:
        return
    # Accepting is only allowed for the untouched document.
    assert data == VALID


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    try:
        parse_attestation(data)
    except AttestationError:
        pass
    must_refuse_or_accept(data)


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes_behind_a_plausible_header(tail: bytes) -> None:
    # Start like a real document so the fuzzing reaches past the first byte.
    must_refuse_or_accept(bytes.fromhex("8444a1013822a059") + tail)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.integers(1, 8)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1), st.none()),
)


def apply(data: bytes, op: tuple[str, int, Any]) -> bytes:
    kind, at, arg = op
    if not data:
        return data
    at = min(at, len(data) - 1)  # earlier mutations may have shortened the document
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ arg]) + data[at + 1:]
    if kind == "delete":
        return data[:at] + data[at + arg:]
    if kind == "insert":
        return data[:at] + arg + data[at:]
    return data[:at]


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=4))
def test_random_mutations_of_a_valid_document(ops: list[tuple[str, int, Any]]) -> None:
    data = VALID
    for op in ops:
        data = apply(data, op)
    must_refuse_or_accept(data)


REAL = (
    AWS_ATTESTATION / "aws_2026_indefinite_map.cbor"
).read_bytes()
REAL_AT = parse_attestation(REAL).timestamp


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=3))
def test_random_mutations_of_a_real_aws_document(ops: list[tuple[str, int, Any]]) -> None:
    data = REAL
    for op in ops:
        data = apply(data, op)
    try:
        verify_attestation(data, at=REAL_AT)
    except AttestationError:
        return
    assert data == REAL


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=80)
    | st.text(max_size=20) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.integers(-2, 40) | st.text(max_size=10), inner, max_size=4
    ),
    max_leaves=12,
)
FIELDS = ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
          "public_key", "user_data", "nonce"]


@SETTINGS
@given(st.sampled_from(FIELDS), cbor_values)
def test_wrongly_typed_fields_signed_by_the_real_leaf(name: str, value: Any) -> None:
    # Correctly signed, so only the structural checks stand between this and acceptance.
    entries = payload_fields(CHAIN, **{name: value})
    try:
        payload = encode_payload(entries)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return
    data = cose_sign1(payload, CHAIN.leaf.key)
    try:
        doc = verify_attestation(data, root_der=CHAIN.root_der, at=AT)
    except AttestationError:
        return
    # Accepted values must have come through with the documented types.
    assert isinstance(doc.module_id, str) and isinstance(doc.timestamp_ms, int)
    assert all(isinstance(v, bytes) for v in doc.pcrs.values())
    for optional in (doc.public_key, doc.user_data, doc.nonce):
        assert optional is None or isinstance(optional, bytes)
