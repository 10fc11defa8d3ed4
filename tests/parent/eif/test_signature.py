"""Signed EIFs: PCR8 from the certificate's DER and describe-eif's SignatureCheck."""
from __future__ import annotations

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from parent.eif import read_eif_bytes
from parent.eif.errors import EifBadSignatureSection, EifDuplicateSection, EifSignatureInvalid
from parent.eif.writer import Signer, build_eif, cose_sign1, pcr0_of, signature_section
from tests.parent.eif.helpers import CMDLINE, KERNEL, RAMDISK, SIGNATURE, hand_built_eif, pcr, self_signed

KERNEL_BYTES = b"bzImage" * 10
CMD = b"console=ttyS0"
BOOT, APP = b"bootstrap ramdisk", b"application ramdisk"


@pytest.fixture(scope="module")
def signer() -> Signer:
    pem, key = self_signed()
    return Signer(pem, key)


def der_of(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_signed_image_has_pcr8_of_the_certificate_der(signer: Signer) -> None:
    d = read_eif_bytes(build_eif(KERNEL_BYTES, CMD, [BOOT, APP], signer=signer))
    m = d.measurements
    assert m.pcr8 is not None and m.pcr8.hex() == pcr(der_of(signer.certificate_pem))
    # The signature section is not measured into PCR0-2.
    assert m.pcr0.hex() == pcr(KERNEL_BYTES + CMD + BOOT + APP)
    assert m.pcr1.hex() == pcr(KERNEL_BYTES + CMD + BOOT)
    assert m.pcr2.hex() == pcr(APP)
    assert d.is_signed and d.signature_check is True
    out = d.describe()
    assert out["IsSigned"] is True and out["SignatureCheck"] is True
    assert out["Measurements"]["PCR8"] == m.pcr8.hex()
    assert out["SigningCertificate"]["IssuerName"] == {"commonName": "hermetic eif signer"}


def test_section_is_the_serde_cbor_shape(signer: Signer) -> None:
    section = signature_section(bytes(48), signer)
    [entry] = cbor2.loads(section)
    assert set(entry) == {"signing_certificate", "signature"}
    # serde writes Vec<u8> as an array of integers; the certificate stays PEM.
    assert bytes(entry["signing_certificate"]).startswith(b"-----BEGIN CERTIFICATE-----")
    protected, unprotected, payload, sig = cbor2.loads(bytes(entry["signature"]))
    assert cbor2.loads(protected) == {1: -35} and unprotected == {} and len(sig) == 96
    assert cbor2.loads(payload) == {"register_index": 0, "register_value": [0] * 48}


def test_byte_string_form_is_accepted_too(signer: Signer) -> None:
    pcr0 = bytes.fromhex(pcr(KERNEL_BYTES + CMD + BOOT))
    payload = cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})
    section = cbor2.dumps([{"signing_certificate": signer.certificate_pem,
                            "signature": cose_sign1(payload, signer.private_key)}])
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, section)])
    assert read_eif_bytes(data).signature_check is True


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP521R1()])
def test_other_curves(curve: ec.EllipticCurve) -> None:
    pem, key = self_signed(curve)
    d = read_eif_bytes(build_eif(KERNEL_BYTES, CMD, [BOOT], signer=Signer(pem, key)))
    assert d.signature_check is True
    assert d.measurements.pcr8 is not None and d.measurements.pcr8.hex() == pcr(der_of(pem))


def test_signature_over_another_image_fails_the_check(signer: Signer) -> None:
    other = signature_section(pcr0_of(b"other kernel", CMD, [BOOT]), signer)
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, other)])
    d = read_eif_bytes(data)
    assert d.signature_check is False
    assert d.describe()["SignatureCheck"] is False


def test_signature_by_another_key_is_invalid(signer: Signer) -> None:
    _, stranger = self_signed()
    forged = signature_section(pcr0_of(KERNEL_BYTES, CMD, [BOOT]), Signer(signer.certificate_pem, stranger))
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, forged)])
    with pytest.raises(EifSignatureInvalid, match="does not verify"):
        read_eif_bytes(data)


def test_key_curve_not_matching_the_algorithm(signer: Signer) -> None:
    pem256, _ = self_signed(ec.SECP256R1())
    section = signature_section(pcr0_of(KERNEL_BYTES, CMD, [BOOT]), signer)
    [entry] = cbor2.loads(section)
    entry["signing_certificate"] = list(pem256)
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, cbor2.dumps([entry]))])
    with pytest.raises(EifSignatureInvalid, match="algorithm"):
        read_eif_bytes(data)


@pytest.mark.parametrize(
    "section, message",
    [
        (b"\xff\x00", "not valid CBOR"),
        (cbor2.dumps([]), "non-empty CBOR array"),
        (cbor2.dumps({"signing_certificate": []}), "non-empty CBOR array"),
        (cbor2.dumps([1]), "not a map"),
        (cbor2.dumps([{"signature": []}]), "lacks"),
        (cbor2.dumps([{"signing_certificate": [256], "signature": []}]), "neither"),
        (cbor2.dumps([{"signing_certificate": list(b"not pem"), "signature": []}]), "PEM"),
        (cbor2.dumps([1]) + b"\x00", "trailing"),
    ],
)
def test_malformed_signature_sections(section: bytes, message: str) -> None:
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, section)])
    with pytest.raises(EifBadSignatureSection, match=message):
        read_eif_bytes(data)


@pytest.mark.parametrize(
    "cose, message",
    [
        (b"\x01", "4-element"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"", b""])), "tag 98"),
        (cbor2.dumps([cbor2.dumps({1: -8}), {}, b"p", bytes(64)]), "algorithm"),
        (cbor2.dumps([cbor2.dumps({1: -35}), {}, b"p", bytes(95)]), "95 bytes"),
        (cbor2.dumps([cbor2.dumps({1: -35}), {}, "text", bytes(96)]), "byte strings"),
    ],
)
def test_malformed_cose(signer: Signer, cose: bytes, message: str) -> None:
    section = cbor2.dumps([{"signing_certificate": list(signer.certificate_pem), "signature": list(cose)}])
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, section)])
    with pytest.raises(EifBadSignatureSection, match=message):
        read_eif_bytes(data)


def test_tagged_cose_is_accepted(signer: Signer) -> None:
    pcr0 = pcr0_of(KERNEL_BYTES, CMD, [BOOT])
    payload = cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(cose_sign1(payload, signer.private_key))))
    section = cbor2.dumps([{"signing_certificate": list(signer.certificate_pem), "signature": list(tagged)}])
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, section)])
    assert read_eif_bytes(data).signature_check is True


def test_two_signature_sections(signer: Signer) -> None:
    section = signature_section(pcr0_of(KERNEL_BYTES, CMD, [BOOT]), signer)
    data = hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT),
                           (SIGNATURE, section), (SIGNATURE, section)])
    with pytest.raises(EifDuplicateSection, match="signature"):
        read_eif_bytes(data)
