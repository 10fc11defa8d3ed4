"""End-to-end verification of synthetic documents and every tampering the brief lists."""
from __future__ import annotations

from datetime import datetime, timedelta

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.attestation.document import parse_attestation
from enclave.attestation.errors import MalformedDocument, UnsupportedAlgorithm
from parent.verify.attestation import verify_attestation
from parent.verify.errors import BadSignature, CertificateExpired, ChainBroken, PcrMismatch, UntrustedRoot
from parent.verify.policy import AttestationPolicy
from tests.support.attestation_chain import (
    ABSENT,
    AT,
    PROTECTED_ES384,
    TestChain,
    cose_sign1,
    issue,
    join,
    leaf_spec,
    make_chain,
    make_document,
    raw_signature,
    split,
)


def verify(chain: TestChain, data: bytes, **kwargs):
    kwargs.setdefault("at", AT)
    return verify_attestation(data, root_der=chain.root_der, **kwargs)


@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize("indefinite", [False, True])
def test_valid_documents(chain: TestChain, tagged: bool, indefinite: bool) -> None:
    data = make_document(chain, tagged=tagged, indefinite=indefinite, user_data=b"u", nonce=b"n")
    doc = verify(chain, data)
    assert doc == parse_attestation(data)
    assert doc.user_data == b"u" and doc.nonce == b"n"


@pytest.mark.parametrize("style", ["null", "absent"])
def test_null_and_absent_optional_fields_verify(chain: TestChain, style: str) -> None:
    value = None if style == "null" else ABSENT
    doc = verify(chain, make_document(chain, public_key=value, user_data=value, nonce=value))
    assert (doc.public_key, doc.user_data, doc.nonce) == (None, None, None)


def test_signature_covers_original_indefinite_bytes(chain: TestChain) -> None:
    # Signed over the indefinite encoding: re-encoding the map definitely would break it,
    # so verification passing proves the original bytes were used.
    data = make_document(chain, indefinite=True)
    members = split(data)
    assert members[2][0] == 0xBF
    verify(chain, data)
    members[2] = cbor2.dumps(cbor2.loads(members[2]))
    with pytest.raises(BadSignature):
        verify(chain, join(members))


def test_pinned_aws_root_refuses_local_chain(document: bytes) -> None:
    with pytest.raises(UntrustedRoot):
        verify_attestation(document, at=AT)


def test_default_time_is_now(chain: TestChain, document: bytes) -> None:
    # The synthetic leaf expired in 2025; "now" (default) must notice.
    with pytest.raises(CertificateExpired):
        verify_attestation(document, root_der=chain.root_der)


def test_naive_time_is_refused(chain: TestChain, document: bytes) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_attestation(document, root_der=chain.root_der, at=datetime(2025, 6, 1))


def test_payload_byte_flip(chain: TestChain, document: bytes) -> None:
    members = split(document)
    payload = bytearray(members[2])
    offset = payload.index(b"i-0123")  # inside module_id: still parses, signature must fail
    payload[offset + 2] ^= 0x01
    members[2] = bytes(payload)
    with pytest.raises(BadSignature):
        verify(chain, join(members))


def test_pcr_value_tampered(chain: TestChain, document: bytes) -> None:
    members = split(document)
    payload = bytearray(members[2])
    offset = payload.index(bytes([5]) * 48)
    payload[offset] = 6
    members[2] = bytes(payload)
    with pytest.raises(BadSignature):
        verify(chain, join(members))


def test_protected_header_alg_change(chain: TestChain, document: bytes) -> None:
    members = split(document)
    members[0] = cbor2.dumps({1: -7})
    with pytest.raises(UnsupportedAlgorithm):
        verify(chain, join(members))


def test_protected_header_reencoded_is_a_different_message(chain: TestChain, document: bytes) -> None:
    # Same meaning ({1: -35}) but a non-minimal integer encoding: signed bytes differ.
    members = split(document)
    members[0] = bytes.fromhex("a101390022")
    assert cbor2.loads(members[0]) == {1: -35}
    with pytest.raises(BadSignature):
        verify(chain, join(members))


def test_signature_flip(chain: TestChain, document: bytes) -> None:
    for position in (0, 47, 48, 95):
        members = split(document)
        sig = bytearray(members[3])
        sig[position] ^= 0x80
        members[3] = bytes(sig)
        with pytest.raises(BadSignature):
            verify(chain, join(members))


@pytest.mark.parametrize("length", [95, 97, 0, 104])
def test_wrong_length_signature(chain: TestChain, document: bytes, length: int) -> None:
    members = split(document)
    members[3] = (members[3] * 2)[:length]
    with pytest.raises(MalformedDocument):
        verify(chain, join(members))


def test_der_signature_instead_of_raw(chain: TestChain) -> None:
    data = make_document(chain)
    members = split(data)
    tbs = cbor2.dumps(["Signature1", members[0], b"", members[2]])
    members[3] = chain.leaf.key.sign(tbs, ec.ECDSA(hashes.SHA384()))  # DER, ~102-104 bytes
    with pytest.raises(MalformedDocument):
        verify(chain, join(members))


def test_swapped_leaf_same_issuer_other_key(chain: TestChain, document: bytes) -> None:
    # A genuine certificate from the same CA, but not the key that signed the document.
    twin = issue(leaf_spec(), chain.intermediates[0])
    payload = cbor2.loads(split(document)[2])
    payload["certificate"] = twin.der
    resigned = cose_sign1(cbor2.dumps(payload), chain.leaf.key)
    with pytest.raises(BadSignature):
        verify(chain, resigned)


def test_swapped_leaf_from_other_chain(chain: TestChain) -> None:
    other = make_chain()
    data = make_document(chain, certificate=other.leaf.der, signing_key=other.leaf.key)
    with pytest.raises(ChainBroken):
        verify(chain, data)


def test_signed_by_intermediate_key_instead_of_leaf(chain: TestChain) -> None:
    data = make_document(chain, signing_key=chain.intermediates[0].key)
    with pytest.raises(BadSignature):
        verify(chain, data)


def test_resigned_payload_with_attacker_key(chain: TestChain, document: bytes) -> None:
    members = split(document)
    attacker = make_chain().leaf.key
    members[3] = raw_signature(attacker, PROTECTED_ES384, members[2])
    with pytest.raises(BadSignature):
        verify(chain, join(members))


def test_unprotected_header_is_not_trusted_for_algorithm(chain: TestChain) -> None:
    payload = split(make_document(chain))[2]
    data = cose_sign1(payload, chain.leaf.key, unprotected={1: -7, 4: b"kid"})
    assert verify(chain, data).module_id  # ignored: only the protected alg counts


def test_policy_runs_after_signature(chain: TestChain, document: bytes) -> None:
    wrong = AttestationPolicy.from_pcrs({0: b"\xff" * 48})
    with pytest.raises(PcrMismatch):
        verify(chain, document, policy=wrong)
    members = split(document)
    members[3] = bytes(96 - 1) + b"\x01"
    # Bad signature wins over the policy: nothing is evaluated on unauthenticated data.
    with pytest.raises(BadSignature):
        verify(chain, join(members), policy=wrong)


def test_archived_document_at_its_own_timestamp(chain: TestChain, document: bytes) -> None:
    doc = parse_attestation(document)
    assert verify(chain, document, at=doc.timestamp) == doc
    with pytest.raises(CertificateExpired):
        verify(chain, document, at=doc.timestamp + timedelta(hours=3))
