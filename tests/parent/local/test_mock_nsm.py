"""MockNsm: documents in exactly the AWS shape, real signatures, real NSM semantics."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from enclave.nsm.errors import (
    NsmClosed,
    NsmInputTooLarge,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmReadOnlyIndex,
)
from enclave.nsm.interface import Nsm
from parent.local.local_ca import LocalCa
from parent.local.measure import measure_enclave_package, pcr_of_text
from parent.local.mock_nsm import MockNsm, MockNsmConfigError

NOW = datetime(2031, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
NOW_MS = 1930367167891  # ms since the epoch, computed independently
MODULE_ID = "i-mock0123456789abc-enc0123456789abcdef"
PCR3 = pcr_of_text("arn:aws:iam::123456789012:role/hermetic")
PCR4 = pcr_of_text("i-0123456789abcdef0")
KEY_ORDER = [
    "module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
    "public_key", "user_data", "nonce",
]


@pytest.fixture(scope="module")
def measured() -> dict[int, bytes]:
    return measure_enclave_package()


@pytest.fixture()
def nsm(ca: LocalCa) -> MockNsm:
    return MockNsm(ca, {3: PCR3, 4: PCR4}, module_id=MODULE_ID, clock=lambda: NOW)


def _split(document: bytes) -> tuple[bytes, dict, bytes, bytes]:
    outer = cbor2.loads(document)
    assert isinstance(outer, list) and len(outer) == 4
    protected, unprotected, payload, signature = outer
    return protected, unprotected, payload, signature


def test_is_an_nsm(nsm: MockNsm) -> None:
    assert isinstance(nsm, Nsm)


def test_document_has_exactly_the_aws_shape(nsm: MockNsm, ca: LocalCa) -> None:
    document = nsm.attest()
    # Untagged COSE_Sign1: a definite 4-element array, no tag 18 (0xd2) in front.
    assert document[0] == 0x84
    protected, unprotected, payload, signature = _split(document)
    assert protected == bytes.fromhex("a1013822")  # {1: -35}
    assert cbor2.loads(protected) == {1: -35}
    assert unprotected == {}
    assert isinstance(signature, bytes) and len(signature) == 96
    assert payload[0] == 0xA9  # definite map of 9 entries
    body = cbor2.loads(payload)
    assert list(body) == KEY_ORDER
    assert body["module_id"] == MODULE_ID
    assert body["digest"] == "SHA384"
    assert type(body["timestamp"]) is int and body["timestamp"] == NOW_MS
    assert list(body["pcrs"]) == list(range(16))
    assert all(type(k) is int for k in body["pcrs"])
    assert all(isinstance(v, bytes) and len(v) == 48 for v in body["pcrs"].values())
    assert isinstance(body["certificate"], bytes)
    assert body["cabundle"] == list(ca.cabundle)
    assert body["cabundle"][0] == ca.root_der
    assert body["public_key"] is None and body["user_data"] is None and body["nonce"] is None
    # Absent fields are encoded as CBOR null (0xf6), as real documents do.
    assert payload.endswith(bytes([0x65]) + b"nonce" + b"\xf6")


def test_optional_fields_are_carried(nsm: MockNsm) -> None:
    body = cbor2.loads(
        _split(nsm.attest(user_data=b"u", nonce=b"\x00" * 32, public_key=b"k" * 294))[2]
    )
    assert body["user_data"] == b"u"
    assert body["nonce"] == b"\x00" * 32
    assert body["public_key"] == b"k" * 294
    empty = cbor2.loads(_split(nsm.attest(user_data=b""))[2])
    assert empty["user_data"] == b""


def test_pcr_values(nsm: MockNsm, measured: dict[int, bytes]) -> None:
    pcrs = cbor2.loads(_split(nsm.attest())[2])["pcrs"]
    for index in (0, 1, 2):
        assert pcrs[index] == measured[index]
    assert pcrs[3] == PCR3 and pcrs[4] == PCR4
    assert pcrs[8] == bytes(48)
    assert all(pcrs[i] == bytes(48) for i in range(5, 16))


def test_debug_mode_zeroes_image_pcrs_but_keeps_3_and_4(ca: LocalCa) -> None:
    debug = MockNsm(ca, {3: PCR3, 4: PCR4, 8: b"\x08" * 48}, debug=True, clock=lambda: NOW)
    pcrs = cbor2.loads(_split(debug.attest())[2])["pcrs"]
    for index in (0, 1, 2, 8):
        assert pcrs[index] == bytes(48)
    assert pcrs[3] == PCR3 and pcrs[4] == PCR4


def test_explicit_pcrs_override_the_measurement(ca: LocalCa) -> None:
    given = {0: b"\xaa" * 48, 1: b"\xbb" * 48, 2: b"\xcc" * 48}
    pcrs = cbor2.loads(_split(MockNsm(ca, given).attest())[2])["pcrs"]
    assert [pcrs[i] for i in (0, 1, 2)] == [given[0], given[1], given[2]]


@pytest.mark.parametrize("bad", [{32: bytes(48)}, {-1: bytes(48)}, {0: bytes(32)}])
def test_bad_pcr_settings_are_refused(ca: LocalCa, bad: dict[int, bytes]) -> None:
    with pytest.raises(MockNsmConfigError):
        MockNsm(ca, bad)


def test_signature_verifies_with_the_leaf_key(nsm: MockNsm) -> None:
    protected, _, payload, signature = _split(nsm.attest(nonce=b"n"))
    leaf = x509.load_der_x509_certificate(cbor2.loads(payload)["certificate"])
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    signed = cbor2.dumps(["Signature1", protected, b"", payload])
    key.verify(der, signed, ec.ECDSA(hashes.SHA384()))
    tampered = bytearray(payload)
    tampered[-2] ^= 0x01
    with pytest.raises(InvalidSignature):
        key.verify(
            der, cbor2.dumps(["Signature1", protected, b"", bytes(tampered)]),
            ec.ECDSA(hashes.SHA384()),
        )


def test_leaf_chains_to_the_root(nsm: MockNsm, ca: LocalCa) -> None:
    body = cbor2.loads(_split(nsm.attest())[2])
    leaf = x509.load_der_x509_certificate(body["certificate"])
    bundle = [x509.load_der_x509_certificate(c) for c in body["cabundle"]]
    # leaf -> cabundle reversed -> root
    chain = [leaf, *reversed(bundle)]
    for child, parent in pairwise(chain):
        child.verify_directly_issued_by(parent)
    assert bundle[0].public_bytes(serialization.Encoding.DER) == ca.root_der
    assert leaf.not_valid_before_utc <= NOW <= leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)
    cn = leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == f"{MODULE_ID}.mock.aws"


def test_every_document_gets_a_fresh_leaf(nsm: MockNsm) -> None:
    first = cbor2.loads(_split(nsm.attest())[2])["certificate"]
    second = cbor2.loads(_split(nsm.attest())[2])["certificate"]
    assert first != second


def test_indefinite_payload_mode(ca: LocalCa) -> None:
    mock = MockNsm(ca, module_id=MODULE_ID, clock=lambda: NOW, indefinite_payload=True)
    protected, _, payload, signature = _split(mock.attest(nonce=b"x"))
    assert payload[0] == 0xBF and payload[-1] == 0xFF
    body = cbor2.loads(payload)
    assert list(body) == KEY_ORDER and body["nonce"] == b"x"
    # The signature covers the indefinite-length bytes as sent.
    leaf = x509.load_der_x509_certificate(body["certificate"])
    der = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    leaf.public_key().verify(  # type: ignore[call-arg]
        der, cbor2.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(hashes.SHA384())
    )


def test_input_limits(nsm: MockNsm) -> None:
    biggest = nsm.attest(user_data=b"u" * 1024, nonce=b"n" * 1024, public_key=b"p" * 1024)
    assert len(biggest) < 0x3000
    for field in ("user_data", "nonce", "public_key"):
        with pytest.raises(NsmInputTooLarge):
            nsm.attest(**{field: bytes(1025)})
    with pytest.raises(NsmInvalidArgument):
        nsm.attest(nonce="text")  # type: ignore[arg-type]


def test_pcr_extend_and_lock_semantics(nsm: MockNsm) -> None:
    assert nsm.describe_pcr(16) == type(nsm.describe_pcr(16))(value=bytes(48), locked=False)
    first = nsm.extend_pcr(16, b"abc")
    assert first == hashlib.sha384(bytes(48) + b"abc").digest()
    second = nsm.extend_pcr(16, b"def")
    assert second == hashlib.sha384(first + b"def").digest()
    assert nsm.describe_pcr(16).value == second
    for index in (0, 4, 15):
        with pytest.raises(NsmReadOnlyIndex):
            nsm.extend_pcr(index, b"x")
        with pytest.raises(NsmReadOnlyIndex):
            nsm.lock_pcr(index)
    for index in (32, 65535, -1):
        with pytest.raises(NsmInvalidIndex):
            nsm.describe_pcr(index)
        with pytest.raises(NsmInvalidIndex):
            nsm.extend_pcr(index, b"x")
    with pytest.raises(NsmInputTooLarge):
        nsm.extend_pcr(17, bytes(0x1000))
    nsm.lock_pcr(16)
    assert nsm.describe_pcr(16).locked
    with pytest.raises(NsmReadOnlyIndex):
        nsm.extend_pcr(16, b"x")
    # A locked user PCR is listed in later documents.
    pcrs = cbor2.loads(_split(nsm.attest())[2])["pcrs"]
    assert list(pcrs) == list(range(17)) and pcrs[16] == second
    assert nsm.describe().locked_pcrs == tuple(range(17))


def test_describe(nsm: MockNsm) -> None:
    d = nsm.describe()
    assert (d.module_id, d.max_pcrs, d.digest) == (MODULE_ID, 32, "SHA384")
    assert d.locked_pcrs == tuple(range(16))


def test_get_random(nsm: MockNsm) -> None:
    a, b = nsm.get_random(64), nsm.get_random(64)
    assert len(a) == 64 and a != b
    assert nsm.get_random(0) == b""
    with pytest.raises(NsmInvalidArgument):
        nsm.get_random(-1)


def test_close_and_context_manager(ca: LocalCa) -> None:
    with MockNsm(ca, clock=lambda: NOW) as mock:
        mock.get_random(1)
    with pytest.raises(NsmClosed):
        mock.attest()
    with pytest.raises(NsmClosed):
        mock.get_random(1)


def test_naive_clock_is_refused(ca: LocalCa) -> None:
    mock = MockNsm(ca, clock=lambda: datetime(2031, 1, 1))
    with pytest.raises(MockNsmConfigError):
        mock.attest()


def test_root_private_key_is_not_in_the_enclave_package(ca: LocalCa) -> None:
    from parent.local.measure import enclave_package_dir

    package = enclave_package_dir().resolve()
    assert package not in (ca.directory / "root.key.pem").resolve().parents
    root_key = (ca.directory / "root.key.pem").read_bytes()
    for path in package.rglob("*"):
        if path.is_file():
            assert root_key not in path.read_bytes()


def test_documents_pass_the_attestation_verifier(ca: LocalCa, tmp_path: Path) -> None:
    verify = pytest.importorskip("parent.verify.attestation")
    mock = MockNsm(ca, {3: PCR3})
    document = mock.attest(user_data=b"cert-hash", nonce=b"n" * 16, public_key=b"k")
    parsed = verify.verify_attestation(document, root_der=ca.root_der)
    assert parsed.module_id == mock.module_id
    assert parsed.user_data == b"cert-hash" and parsed.nonce == b"n" * 16
    assert parsed.pcrs[3] == PCR3
    indefinite = MockNsm(ca, indefinite_payload=True).attest()
    verify.verify_attestation(indefinite, root_der=ca.root_der)
    # Archived document from 30 days ago: valid at its own timestamp, expired now.
    then = datetime.now(UTC) - timedelta(days=30)
    archived = MockNsm(ca, clock=lambda: then).attest()
    parsed = verify.verify_attestation(archived, root_der=ca.root_der, at=then)
    assert parsed.timestamp_ms == (then - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    from enclave.errors import AttestationError

    with pytest.raises(AttestationError):
        verify.verify_attestation(archived, root_der=ca.root_der)
    other = LocalCa.load_or_create(tmp_path)
    with pytest.raises(AttestationError):
        verify.verify_attestation(document, root_der=other.root_der)


def test_measured_pcrs_satisfy_a_policy_and_debug_documents_do_not(ca: LocalCa) -> None:
    pytest.importorskip("parent.verify.attestation")
    from parent.verify.attestation import verify_attestation
    from parent.verify.errors import PcrMismatch
    from parent.verify.policy import AttestationPolicy

    policy = AttestationPolicy.from_pcrs(measure_enclave_package(), nonce=b"n")
    verify_attestation(MockNsm(ca).attest(nonce=b"n"), root_der=ca.root_der, policy=policy)
    with pytest.raises(PcrMismatch):
        verify_attestation(
            MockNsm(ca, debug=True).attest(nonce=b"n"), root_der=ca.root_der, policy=policy
        )
