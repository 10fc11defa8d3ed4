"""Genuine AWS NSM documents (see tests/vectors/aws-attestation/README.md) as known answers."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from enclave.attestation.document import parse_attestation
from enclave.attestation.errors import AttestationError
from parent.verify.attestation import verify_attestation
from parent.verify.errors import CertificateExpired, CertificateNotYetValid, NonceMismatch, PcrMismatch, UntrustedRoot
from parent.verify.policy import AttestationPolicy
from parent.verify.roots import AWS_NITRO_ROOT_G1_DER
from tests.support.attestation_chain import make_chain
from tests.support.vectors import AWS_ATTESTATION

FIXTURES = AWS_ATTESTATION
ZERO48 = b"\x00" * 48

# name -> (module_id, timestamp_ms, first payload byte, debug mode)
KNOWN = {
    "aws_2022_brave_definite_map.cbor": ("i-0936512d5ae6ee91a-enc01823bcde8eb8a8a", 1658860752566, 0xA9, True),
    "aws_2021_uid2_null_fields.cbor": ("i-0fd25f30661854f2b-enc01790c5d9eab829d", 1619410153100, 0xA9, True),
    "aws_2026_indefinite_map.cbor": ("i-0340e0cb833504eb6-enc019c12d31f78864d", 1770065027502, 0xBF, False),
}


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_real_document_verifies_at_its_own_timestamp(name: str) -> None:
    data = load(name)
    module_id, timestamp_ms, first_payload_byte, debug = KNOWN[name]
    parsed = parse_attestation(data)
    doc = verify_attestation(data, at=parsed.timestamp)
    assert doc.module_id == module_id
    assert doc.timestamp_ms == timestamp_ms
    assert doc.digest == "SHA384"
    assert doc.payload[0] == first_payload_byte
    assert doc.cabundle[0] == AWS_NITRO_ROOT_G1_DER
    assert len(doc.cabundle) == 4
    assert sorted(doc.pcrs) == list(range(16))
    assert all(len(v) == 48 for v in doc.pcrs.values())
    assert doc.is_debug_mode is debug
    assert data[:1] == b"\x84"  # real documents are untagged


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_real_document_fails_now_because_leaf_expired(name: str) -> None:
    with pytest.raises(CertificateExpired):
        verify_attestation(load(name))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_real_document_not_yet_valid_before_issue(name: str) -> None:
    doc = parse_attestation(load(name))
    with pytest.raises(CertificateNotYetValid):
        verify_attestation(load(name), at=doc.timestamp - timedelta(hours=1))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_real_document_refused_under_other_root(name: str) -> None:
    doc = parse_attestation(load(name))
    with pytest.raises(UntrustedRoot):
        verify_attestation(load(name), at=doc.timestamp, root_der=make_chain().root_der)


def test_known_field_values() -> None:
    brave = parse_attestation(load("aws_2022_brave_definite_map.cbor"))
    assert brave.public_key == b""
    assert brave.user_data == bytes(32)
    assert len(brave.nonce or b"") == 20
    assert brave.pcrs[0] == ZERO48 and brave.pcrs[4] != ZERO48

    uid2 = parse_attestation(load("aws_2021_uid2_null_fields.cbor"))
    assert (uid2.public_key, uid2.user_data, uid2.nonce) == (None, None, None)

    recent = parse_attestation(load("aws_2026_indefinite_map.cbor"))
    assert recent.public_key == b"dummy"
    assert recent.nonce == bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
    assert len(recent.user_data or b"") == 68
    assert recent.pcrs[0].hex().startswith("9baef8390978")
    assert recent.timestamp == datetime(2026, 2, 2, 20, 43, 47, 502000, tzinfo=UTC)


def test_policy_on_real_document() -> None:
    data = load("aws_2026_indefinite_map.cbor")
    doc = parse_attestation(data)
    pcrs = {i: doc.pcrs[i] for i in (0, 1, 2)}
    good = AttestationPolicy.from_pcrs(pcrs, nonce=doc.nonce, max_age=timedelta(minutes=5))
    verify_attestation(data, at=doc.timestamp, policy=good)
    with pytest.raises(PcrMismatch):
        verify_attestation(data, at=doc.timestamp,
                           policy=AttestationPolicy.from_pcrs({0: ZERO48, 1: ZERO48, 2: ZERO48}))
    with pytest.raises(NonceMismatch):
        verify_attestation(data, at=doc.timestamp, policy=AttestationPolicy(nonce=b"\x00" * 20))


def _tamper_positions(data: bytes) -> list[int]:
    # Full verification costs milliseconds, so sample: every byte of the COSE framing,
    # protected header and signature; every 5th byte of the payload (fields, PCRs, leaf);
    # every 17th byte inside the four AWS CA certificates, which are the same in every
    # document. Offsets differ per document, so together they hit different positions.
    in_ca = set()
    for der in parse_attestation(data).cabundle:
        start = data.index(der)
        in_ca |= set(range(start, start + len(der)))
    head, tail = set(range(16)), set(range(len(data) - 100, len(data)))
    sampled = {p for p in range(len(data)) if p % (17 if p in in_ca else 5) == 0}
    return sorted(head | tail | sampled)


# Tampered country names make cryptography warn while it parses; the verdict is what counts.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_any_tampered_byte_is_refused(name: str) -> None:
    data = load(name)
    at = parse_attestation(data).timestamp
    for position in _tamper_positions(data):
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        with pytest.raises(AttestationError):
            verify_attestation(bytes(tampered), at=at)
