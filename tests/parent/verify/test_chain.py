"""Certificate path checks, each defect mapped to its own error type."""
from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from enclave.attestation.errors import UnsupportedAlgorithm
from parent.verify.attestation import verify_attestation
from parent.verify.chain import verify_chain
from parent.verify.errors import (
    BadBasicConstraints,
    BadCertificate,
    BadKeyUsage,
    CertificateExpired,
    CertificateNotYetValid,
    ChainBroken,
    ChainError,
    UntrustedRoot,
)
from tests.support.attestation_chain import (
    AT,
    CA_USAGE,
    TestChain,
    intermediate_spec,
    issue,
    leaf_spec,
    make_chain,
    make_document,
    root_spec,
)


def check(chain: TestChain, *, at=AT, root_der: bytes | None = None) -> None:
    verify_chain(chain.leaf.der, chain.cabundle, root_der or chain.root_der, at)


def test_valid_chain_returns_path_leaf_first(chain: TestChain) -> None:
    path = verify_chain(chain.leaf.der, chain.cabundle, chain.root_der, AT)
    assert [c.subject for c in path] == [
        chain.leaf.cert.subject,
        chain.intermediates[0].cert.subject,
        chain.root.cert.subject,
    ]


def test_longer_chain_like_aws() -> None:
    # AWS bundles carry root + 3 intermediates (regional, zonal, instance).
    specs = [intermediate_spec(i) for i in range(3)]
    check(make_chain(intermediates=specs))


def test_chain_directly_under_root() -> None:
    check(make_chain(intermediates=[]))


def test_cabundle_not_ending_at_pinned_root(chain: TestChain) -> None:
    other = make_chain()
    with pytest.raises(UntrustedRoot):
        check(chain, root_der=other.root_der)


def test_cabundle_without_root_but_chaining_to_it(chain: TestChain) -> None:
    # cabundle[0] may be an intermediate issued by the pinned root.
    verify_chain(chain.leaf.der, (chain.intermediates[0].der,), chain.root_der, AT)


def test_impostor_root_of_same_name(chain: TestChain) -> None:
    # Every make_chain() root is named "hermetic-test-root": only the key tells them apart.
    impostor = make_chain()
    assert impostor.root.cert.subject == chain.root.cert.subject
    with pytest.raises(UntrustedRoot):
        check(impostor, root_der=chain.root_der)
    # Splicing the impostor root in front of genuine intermediates breaks the path instead.
    bundle = (impostor.root_der, chain.intermediates[0].der)
    with pytest.raises(ChainBroken):
        verify_chain(chain.leaf.der, bundle, chain.root_der, AT)


def test_swapped_leaf_from_another_chain(chain: TestChain) -> None:
    other = make_chain()
    with pytest.raises(ChainBroken):
        verify_chain(other.leaf.der, chain.cabundle, chain.root_der, AT)


def test_intermediates_in_wrong_order() -> None:
    chain = make_chain(intermediates=[intermediate_spec(0), intermediate_spec(1)])
    bundle = (chain.cabundle[0], chain.cabundle[2], chain.cabundle[1])
    with pytest.raises(ChainBroken):
        verify_chain(chain.leaf.der, bundle, chain.root_der, AT)


def test_empty_cabundle(chain: TestChain) -> None:
    with pytest.raises(UntrustedRoot):
        verify_chain(chain.leaf.der, (), chain.root_der, AT)


def test_garbage_certificates(chain: TestChain) -> None:
    with pytest.raises(BadCertificate):
        verify_chain(b"\x30\x03\x02\x01\x01", chain.cabundle, chain.root_der, AT)
    with pytest.raises(BadCertificate):
        verify_chain(chain.leaf.der, (chain.root_der, b"junk"), chain.root_der, AT)
    with pytest.raises(BadCertificate):
        verify_chain(chain.leaf.der, chain.cabundle, b"junk", AT)


@pytest.mark.parametrize(
    "at,error",
    [
        (AT + timedelta(hours=2, seconds=1), CertificateExpired),  # leaf lives 3 hours
        (AT - timedelta(hours=1, seconds=1), CertificateNotYetValid),
        (AT + timedelta(days=11), CertificateExpired),
        (AT - timedelta(days=11), CertificateNotYetValid),
    ],
)
def test_time_outside_validity(chain: TestChain, at, error) -> None:
    with pytest.raises(error):
        check(chain, at=at)


def test_validity_bounds_are_inclusive(chain: TestChain) -> None:
    check(chain, at=chain.leaf.cert.not_valid_before_utc)
    check(chain, at=chain.leaf.cert.not_valid_after_utc)


def test_expired_intermediate_even_if_leaf_valid() -> None:
    chain = make_chain(intermediates=[intermediate_spec(not_after=AT - timedelta(minutes=1))],
                       leaf=leaf_spec(not_before=AT - timedelta(hours=3)))
    with pytest.raises(CertificateExpired, match="intermediate"):
        check(chain)


def test_ca_without_ca_flag() -> None:
    chain = make_chain(intermediates=[intermediate_spec(ca=False)])
    with pytest.raises(BadBasicConstraints, match="not marked as a CA"):
        check(chain)


def test_ca_without_basic_constraints() -> None:
    chain = make_chain(intermediates=[intermediate_spec(ca=None)])
    with pytest.raises(BadBasicConstraints):
        check(chain)


def test_leaf_with_ca_flag() -> None:
    chain = make_chain(leaf=leaf_spec(ca=True, key_usage=CA_USAGE))
    with pytest.raises(BadBasicConstraints, match="leaf"):
        check(chain)


def test_leaf_without_basic_constraints_is_fine() -> None:
    check(make_chain(leaf=leaf_spec(ca=None)))


@pytest.mark.parametrize("holder", ["root", "intermediate"])
def test_path_length_exceeded(holder: str) -> None:
    if holder == "root":
        chain = make_chain(root=root_spec(path_length=0))
    else:
        chain = make_chain(intermediates=[intermediate_spec(0, path_length=0), intermediate_spec(1)])
    with pytest.raises(BadBasicConstraints, match="allows 0"):
        check(chain)


def test_path_length_respected() -> None:
    chain = make_chain(
        root=root_spec(path_length=1),
        intermediates=[intermediate_spec(0, path_length=0), intermediate_spec(1, path_length=0)],
    )
    with pytest.raises(BadBasicConstraints):
        check(chain)
    check(make_chain(root=root_spec(path_length=1),
                     intermediates=[intermediate_spec(0, path_length=0)]))


def test_issuer_without_key_cert_sign() -> None:
    chain = make_chain(intermediates=[intermediate_spec(key_usage=frozenset({"digital_signature", "crl_sign"}))])
    with pytest.raises(BadKeyUsage, match="keyCertSign"):
        check(chain)


def test_issuer_without_key_usage_extension() -> None:
    chain = make_chain(intermediates=[intermediate_spec(key_usage=None)])
    with pytest.raises(BadKeyUsage):
        check(chain)


def test_root_without_key_cert_sign() -> None:
    chain = make_chain(root=root_spec(key_usage=frozenset({"crl_sign"})))
    with pytest.raises(BadKeyUsage):
        check(chain)


def test_leaf_without_digital_signature() -> None:
    chain = make_chain(leaf=leaf_spec(key_usage=frozenset({"key_agreement"})))
    with pytest.raises(BadKeyUsage, match="digitalSignature"):
        check(chain)


def test_leaf_without_key_usage_extension() -> None:
    chain = make_chain(leaf=leaf_spec(key_usage=None))
    with pytest.raises(BadKeyUsage):
        check(chain)


def test_leaf_key_must_be_p384() -> None:
    chain = make_chain(leaf=leaf_spec(curve=ec.SECP256R1()))
    with pytest.raises(UnsupportedAlgorithm, match="P-384"):
        check(chain)


def test_rsa_issuer_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = issue(root_spec(private_key=rsa_key), None)
    intermediate = issue(intermediate_spec(), root)
    leaf = issue(leaf_spec(), intermediate)
    chain = TestChain(root=root, intermediates=(intermediate,), leaf=leaf)
    with pytest.raises(UnsupportedAlgorithm):
        check(chain)


def test_unknown_critical_extension_caught_by_rfc5280_layer() -> None:
    # Nothing in the explicit walk looks at this extension; the library layer must refuse it.
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    chain = make_chain(intermediates=[intermediate_spec(extra_extensions=((odd, True),))])
    with pytest.raises(ChainError, match="RFC 5280"):
        check(chain)
    tolerated = make_chain(intermediates=[intermediate_spec(extra_extensions=((odd, False),))])
    check(tolerated)


def test_chain_errors_surface_through_verify_attestation() -> None:
    chain = make_chain(intermediates=[intermediate_spec(ca=False)])
    with pytest.raises(BadBasicConstraints):
        verify_attestation(make_document(chain), root_der=chain.root_der, at=AT)
