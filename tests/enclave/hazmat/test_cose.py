from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.attestation.errors import DocumentTooLarge, MalformedDocument, UnsupportedAlgorithm
from enclave.hazmat.cose import MAX_DOCUMENT_SIZE, cbor_decode_strict, decode_cose_sign1, sig_structure
from parent.verify.cose import verify_es384
from parent.verify.errors import BadSignature
from tests.support.attestation_chain import (
    PROTECTED_ES384,
    cose_sign1,
    join,
    new_key,
    raw_signature,
    split,
)


def test_sig_structure_known_answer() -> None:
    # RFC 9052 section 4.4: array(4) "Signature1" bstr(protected) bstr(h'') bstr(payload).
    expected = bytes.fromhex("846a5369676e61747572653144a10138224043010203")
    assert sig_structure(PROTECTED_ES384, b"\x01\x02\x03") == expected


@pytest.mark.parametrize("tagged", [False, True])
def test_decode_tagged_and_untagged(tagged: bool) -> None:
    key = new_key()
    data = cose_sign1(b"payload", key, tagged=tagged)
    assert data[0] == (0xD2 if tagged else 0x84)
    message = decode_cose_sign1(data)
    assert message.tagged is tagged
    assert message.payload == b"payload"
    assert message.protected == PROTECTED_ES384
    assert len(message.signature) == 96
    verify_es384(message.protected, message.payload, message.signature, key.public_key())


def test_other_tag_is_rejected() -> None:
    members = split(cose_sign1(b"p", new_key()))
    with pytest.raises(MalformedDocument):
        decode_cose_sign1(cbor2.dumps(cbor2.CBORTag(98, members)))


@pytest.mark.parametrize(
    "members",
    [
        [],
        [PROTECTED_ES384, {}, b"p"],
        [PROTECTED_ES384, {}, b"p", b"\x00" * 96, b"extra"],
    ],
)
def test_wrong_member_count(members: list[object]) -> None:
    with pytest.raises(MalformedDocument):
        decode_cose_sign1(cbor2.dumps(members))


@pytest.mark.parametrize(
    "position,value",
    [
        (0, {1: -35}),  # protected header as a map rather than bstr
        (1, b""),  # unprotected header not a map
        (2, None),  # detached payload
        (2, "text"),
        (3, "sig"),
    ],
)
def test_member_types(position: int, value: object) -> None:
    members = split(cose_sign1(b"p", new_key()))
    members[position] = value
    with pytest.raises(MalformedDocument):
        decode_cose_sign1(join(members))


@pytest.mark.parametrize(
    "header,error",
    [
        ({1: -7}, UnsupportedAlgorithm),  # ES256
        ({1: -36}, UnsupportedAlgorithm),  # ES512
        ({1: "ES384"}, UnsupportedAlgorithm),  # text algorithm
        ({1: True}, UnsupportedAlgorithm),
        ({}, UnsupportedAlgorithm),
        ({1: -35, 4: b"kid"}, MalformedDocument),
        ([1, -35], MalformedDocument),
    ],
)
def test_protected_header_is_exactly_es384(header: object, error: type[Exception]) -> None:
    key = new_key()
    protected = cbor2.dumps(header)
    data = cose_sign1(b"p", key, protected=protected)
    with pytest.raises(error):
        decode_cose_sign1(data)


def test_protected_header_must_be_valid_cbor_without_trailing_bytes() -> None:
    for protected in (b"\xa1\x01", PROTECTED_ES384 + b"\x00"):
        members = split(cose_sign1(b"p", new_key()))
        members[0] = protected
        with pytest.raises(MalformedDocument):
            decode_cose_sign1(join(members))


@pytest.mark.parametrize("length", [0, 64, 95, 97, 104, 132])
def test_signature_must_be_96_bytes(length: int) -> None:
    members = split(cose_sign1(b"p", new_key()))
    members[3] = b"\x01" * length
    with pytest.raises(MalformedDocument, match="96"):
        decode_cose_sign1(join(members))


def test_trailing_bytes_after_document() -> None:
    data = cose_sign1(b"p", new_key())
    with pytest.raises(MalformedDocument, match="trailing"):
        decode_cose_sign1(data + b"\x00")


def test_size_limit() -> None:
    key = new_key()
    assert decode_cose_sign1(cose_sign1(b"x" * (MAX_DOCUMENT_SIZE - 200), key))
    with pytest.raises(DocumentTooLarge):
        decode_cose_sign1(cose_sign1(b"x" * MAX_DOCUMENT_SIZE, key))


@pytest.mark.parametrize("data", [b"", b"\x84", b"\xff", b"\x1c", "text", None])
def test_garbage(data: object) -> None:
    with pytest.raises(MalformedDocument):
        decode_cose_sign1(data)  # type: ignore[arg-type]


def test_strict_decoder_refuses_duplicate_keys_bignums_and_deep_nesting() -> None:
    with pytest.raises(MalformedDocument):
        cbor_decode_strict(bytes.fromhex("a201020103"), what="map")
    with pytest.raises(MalformedDocument):
        cbor_decode_strict(bytes.fromhex("c24101"), what="bignum")
    with pytest.raises(MalformedDocument):
        cbor_decode_strict(b"\x81" * 40 + b"\x01", what="nested")
    assert cbor_decode_strict(bytes.fromhex("bf616101ff"), what="indefinite") == {"a": 1}


def test_verify_es384_rejects_wrong_key_and_flips() -> None:
    key = new_key()
    sig = raw_signature(key, PROTECTED_ES384, b"payload")
    verify_es384(PROTECTED_ES384, b"payload", sig, key.public_key())
    with pytest.raises(BadSignature):
        verify_es384(PROTECTED_ES384, b"payload", sig, new_key().public_key())
    with pytest.raises(BadSignature):
        verify_es384(PROTECTED_ES384, b"payloaD", sig, key.public_key())
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(BadSignature):
        verify_es384(PROTECTED_ES384, b"payload", flipped, key.public_key())
    with pytest.raises(BadSignature):
        verify_es384(PROTECTED_ES384, b"payload", b"\x00" * 48 + sig[48:], key.public_key())


def test_verify_es384_requires_p384_key() -> None:
    key = new_key(ec.SECP256R1())
    with pytest.raises(UnsupportedAlgorithm):
        verify_es384(PROTECTED_ES384, b"p", b"\x01" * 96, key.public_key())
