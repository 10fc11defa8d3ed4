from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from parent.verify.errors import RootPinMismatch
from parent.verify.roots import AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256, load_pinned_root
from tests.support.attestation_chain import make_chain


def test_pinned_root_hash_matches_aws_publication() -> None:
    assert AWS_NITRO_ROOT_G1_SHA256 == "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    assert hashlib.sha256(AWS_NITRO_ROOT_G1_DER).hexdigest() == AWS_NITRO_ROOT_G1_SHA256


def test_pinned_root_identity() -> None:
    cert = x509.load_der_x509_certificate(AWS_NITRO_ROOT_G1_DER)
    assert cert.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    assert cert.subject == cert.issuer
    assert cert.not_valid_after_utc.year == 2049
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_other_certificate_is_refused_as_root() -> None:
    pem = make_chain().root.cert.public_bytes(Encoding.PEM)
    with pytest.raises(RootPinMismatch):
        load_pinned_root(pem)
    with pytest.raises(RootPinMismatch):
        load_pinned_root(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_load_pinned_root_from_explicit_pem() -> None:
    pem = x509.load_der_x509_certificate(AWS_NITRO_ROOT_G1_DER).public_bytes(Encoding.PEM)
    assert load_pinned_root(pem) == AWS_NITRO_ROOT_G1_DER
