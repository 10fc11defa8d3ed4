from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import cbor2
import pytest

from enclave.attestation.document import AttestationDocument, parse_attestation
from enclave.attestation.errors import DocumentTooLarge, MalformedDocument
from tests.support.attestation_chain import (
    ABSENT,
    AT,
    TestChain,
    cose_sign1,
    default_pcrs,
    encode_payload,
    make_document,
    payload_fields,
    split,
)


def test_parse_all_fields(chain: TestChain) -> None:
    data = make_document(chain, public_key=b"\x04" + b"k" * 96, user_data=b"ud", nonce=b"n" * 20)
    doc = parse_attestation(data)
    assert doc.module_id == "i-0123456789abcdef0-enc0123456789abcdef"
    assert doc.digest == "SHA384"
    assert doc.timestamp_ms == int(AT.timestamp() * 1000)
    assert doc.timestamp == AT
    assert doc.timestamp.tzinfo is not None
    assert dict(doc.pcrs) == default_pcrs()
    assert list(doc.pcrs) == sorted(doc.pcrs)
    assert doc.certificate == chain.leaf.der
    assert doc.cabundle == chain.cabundle
    assert isinstance(doc.cabundle, tuple)
    assert doc.public_key == b"\x04" + b"k" * 96
    assert doc.user_data == b"ud"
    assert doc.nonce == b"n" * 20
    members = split(data)
    assert (doc.protected, doc.payload, doc.signature) == (members[0], members[2], members[3])


def test_document_is_immutable(chain: TestChain) -> None:
    data = make_document(chain)
    doc = parse_attestation(data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.module_id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        doc.pcrs[0] = b"\x00" * 48  # type: ignore[index]
    assert hash(doc) == hash(parse_attestation(data))


def test_timestamp_keeps_milliseconds(chain: TestChain) -> None:
    doc = parse_attestation(make_document(chain, timestamp=1658860752566))
    assert doc.timestamp == datetime(2022, 7, 26, 18, 39, 12, 566000, tzinfo=UTC)


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_fields_null_or_absent(chain: TestChain, field: str) -> None:
    null_doc = parse_attestation(make_document(chain, **{field: None}))
    absent_doc = parse_attestation(make_document(chain, **{field: ABSENT}))
    empty_doc = parse_attestation(make_document(chain, **{field: b""}))
    assert getattr(null_doc, field) is None
    assert getattr(absent_doc, field) is None
    # Empty bytes are a value (real 2022 documents carry public_key = h''), not absence.
    assert getattr(empty_doc, field) == b""


def test_indefinite_length_payload_parses_and_keeps_original_bytes(chain: TestChain) -> None:
    data = make_document(chain, indefinite=True, user_data=b"u")
    doc = parse_attestation(data)
    assert doc.payload[0] == 0xBF and doc.payload[-1] == 0xFF
    assert doc.user_data == b"u"
    definite = parse_attestation(make_document(chain, user_data=b"u"))
    assert doc.payload != definite.payload
    assert dict(doc.pcrs) == dict(definite.pcrs)


@pytest.mark.parametrize("missing", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"])
def test_required_fields(chain: TestChain, missing: str) -> None:
    with pytest.raises(MalformedDocument, match=missing):
        parse_attestation(make_document(chain, **{missing: ABSENT}))


BAD_FIELDS: list[tuple[str, Any]] = [
    ("module_id", b"bytes"),
    ("module_id", ""),
    ("module_id", "m" * 257),
    ("digest", "SHA256"),
    ("digest", "sha384"),
    ("digest", b"SHA384"),
    ("timestamp", True),
    ("timestamp", -1),
    ("timestamp", 0),
    ("timestamp", 1.5),
    ("timestamp", "1658860752566"),
    ("timestamp", 2**64 - 1),
    ("pcrs", []),
    ("pcrs", {}),
    ("pcrs", {0: b"\x00" * 47}),
    ("pcrs", {0: "00" * 48}),
    ("pcrs", {32: b"\x00" * 48}),
    ("pcrs", {-1: b"\x00" * 48}),
    ("pcrs", {"0": b"\x00" * 48}),
    ("pcrs", {True: b"\x00" * 48}),
    ("pcrs", {i: b"\x00" * 48 for i in range(33)} | {0: b"\x00" * 48}),
    ("certificate", b""),
    ("certificate", "pem"),
    ("cabundle", []),
    ("cabundle", b"der"),
    ("cabundle", [b""]),
    ("cabundle", ["text"]),
    ("public_key", "text"),
    ("user_data", 5),
    ("nonce", []),
]


@pytest.mark.parametrize("name,value", BAD_FIELDS)
def test_strict_field_types(chain: TestChain, name: str, value: Any) -> None:
    with pytest.raises(MalformedDocument):
        parse_attestation(make_document(chain, **{name: value}))


@pytest.mark.parametrize("size", [32, 48, 64])
def test_pcr_value_sizes(chain: TestChain, size: int) -> None:
    doc = parse_attestation(make_document(chain, pcrs={0: b"\x01" * size, 31: b"\x02" * size}))
    assert doc.pcrs[31] == b"\x02" * size


@pytest.mark.parametrize("field", ["public_key", "user_data", "nonce"])
def test_optional_field_size_limit(chain: TestChain, field: str) -> None:
    assert getattr(parse_attestation(make_document(chain, **{field: b"a" * 1024})), field) == b"a" * 1024
    with pytest.raises(DocumentTooLarge):
        parse_attestation(make_document(chain, **{field: b"a" * 1025}))


def test_cabundle_and_certificate_limits(chain: TestChain) -> None:
    with pytest.raises(DocumentTooLarge):
        parse_attestation(make_document(chain, cabundle=[chain.root.der] * 9))
    with pytest.raises(DocumentTooLarge):
        parse_attestation(make_document(chain, certificate=b"c" * 2049))


def test_unknown_fields_are_ignored_but_keys_must_be_text(chain: TestChain) -> None:
    entries = payload_fields(chain) + [("future_field", b"x")]
    assert parse_attestation(cose_sign1(encode_payload(entries), chain.leaf.key)).module_id
    entries = payload_fields(chain) + [(7, b"x")]
    with pytest.raises(MalformedDocument, match="non-text key"):
        parse_attestation(cose_sign1(encode_payload(entries), chain.leaf.key))


def test_duplicate_payload_key_is_rejected(chain: TestChain) -> None:
    entries = payload_fields(chain) + [("nonce", b"second")]
    payload = encode_payload(entries, indefinite=True)  # dict() would merge the duplicate
    with pytest.raises(MalformedDocument):
        parse_attestation(cose_sign1(payload, chain.leaf.key))


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps([1, 2]),
        cbor2.dumps("map"),
        b"\xbf\x69module_id",  # indefinite map cut short
        b"\xa1\x69module_id\x61a\x00",  # trailing byte
        b"",
    ],
)
def test_payload_must_be_one_cbor_map(chain: TestChain, payload: bytes) -> None:
    with pytest.raises(MalformedDocument):
        parse_attestation(cose_sign1(payload, chain.leaf.key))


def test_every_truncation_is_malformed(document: bytes) -> None:
    for length in range(len(document)):
        with pytest.raises(MalformedDocument):
            parse_attestation(document[:length])


def test_returns_attestation_document(document: bytes) -> None:
    assert isinstance(parse_attestation(document), AttestationDocument)
    assert parse_attestation(bytearray(document)) == parse_attestation(document)
