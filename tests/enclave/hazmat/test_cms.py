from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import CmsError
from enclave.hazmat.cms import open_recipient_ciphertext, parse_enveloped_data
from enclave.kms.errors import (
    BerEncodingError,
    CmsAlgorithmError,
    CmsContentTypeError,
    CmsDecryptionError,
    CmsRecipientError,
    CmsStructureError,
    CmsVersionError,
)
from parent.local.kms.cms_builder import (
    encode_integer,
    encode_oid,
    indefinite,
    oaep_sha256_identifier,
    sequence,
    subject_key_identifier,
    tlv,
)
from tests.support.vectors import OPENSSL_CMS

FIXTURES = OPENSSL_CMS
OPENSSL = shutil.which("openssl")
OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED = "1.2.840.113549.1.7.3"
OID_SIGNED = "1.2.840.113549.1.7.2"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_OAEP = "1.2.840.113549.1.1.7"
OID_RSA_PKCS1 = "1.2.840.113549.1.1.1"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
OID_AES128_CBC = "2.16.840.1.101.3.4.1.2"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.lru_cache(maxsize=1)
def _fixture_key() -> rsa.RSAPrivateKey:
    loaded = serialization.load_pem_private_key((FIXTURES / "recipient-key.pem").read_bytes(), None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def _oaep() -> asym_padding.OAEP:
    return asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def make_blob(
    public_key: rsa.RSAPublicKey,
    plaintext: bytes = b"sixteen byte key" * 2,
    *,
    content_oid: str = OID_ENVELOPED,
    env_version: int = 2,
    ktri_version: int = 2,
    rid: bytes | None = None,
    key_alg: bytes | None = None,
    cek: bytes | None = None,
    padded: bytes | None = None,
    eci_oid: str = OID_DATA,
    cipher_oid: str = OID_AES256_CBC,
    iv: bytes = b"\x11" * 16,
    recipients: int = 1,
    before_recipients: bytes = b"",
    after_eci: bytes = b"",
    content: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """A KMS-shaped blob with one knob per field, for testing each rejection."""
    cek = os.urandom(32) if cek is None else cek
    if padded is None:
        pad = 16 - len(plaintext) % 16
        padded = plaintext + bytes([pad]) * pad
    enc = Cipher(algorithms.AES(cek[:32].ljust(32, b"\0")), modes.CBC(iv if len(iv) == 16 else b"\0" * 16)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    if rid is None:
        rid = tlv(0x80, subject_key_identifier(public_key))
    ktri = sequence(
        encode_integer(ktri_version),
        rid,
        oaep_sha256_identifier() if key_alg is None else key_alg,
        tlv(0x04, public_key.encrypt(cek, _oaep())),
    )
    body = indefinite(0xA0, tlv(0x04, ciphertext[:16]), tlv(0x04, ciphertext[16:])) if content is None else content(ciphertext)
    eci = indefinite(0x30, encode_oid(eci_oid), sequence(encode_oid(cipher_oid), tlv(0x04, iv)), body)
    enveloped = indefinite(
        0x30,
        encode_integer(env_version),
        before_recipients,
        tlv(0x31, ktri * recipients),
        eci,
        after_eci,
    )
    return indefinite(0x30, encode_oid(content_oid), indefinite(0xA0, enveloped))


# --- known answers: OpenSSL-produced fixtures ------------------------------------------------
@pytest.mark.parametrize("name", ["openssl-definite.der", "openssl-stream.der", "openssl-keyid.der"])
def test_openssl_fixture_opens(name: str) -> None:
    blob = (FIXTURES / name).read_bytes()
    assert open_recipient_ciphertext(blob, _fixture_key()) == (FIXTURES / "plaintext.bin").read_bytes()


def test_fixture_recipient_forms() -> None:
    assert parse_enveloped_data((FIXTURES / "openssl-definite.der").read_bytes()).recipient.issuer_and_serial
    parts = parse_enveloped_data((FIXTURES / "openssl-keyid.der").read_bytes())
    assert parts.version == 2
    assert parts.recipient.subject_key_identifier == subject_key_identifier(_fixture_key().public_key())


def test_fixture_with_wrong_key_fails(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(CmsDecryptionError):
        open_recipient_ciphertext((FIXTURES / "openssl-stream.der").read_bytes(), key)


# --- live OpenSSL ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def openssl_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    if OPENSSL is None:
        pytest.skip("openssl CLI not installed")
    tmp = tmp_path_factory.mktemp("openssl")
    keyfile, cert, second = tmp / "key.pem", tmp / "cert.pem", tmp / "cert2.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyfile, "-out", cert,
         "-subj", "/CN=live", "-days", "2"],
        check=True, capture_output=True,
    )
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp / "key2.pem", "-out",
         second, "-subj", "/CN=other", "-days", "2"],
        check=True, capture_output=True,
    )
    return keyfile, cert, second


def _openssl_encrypt(plaintext: bytes, certs: list[Path], *extra: str, md: str = "sha256", cipher: str = "-aes-256-cbc") -> bytes:
    assert OPENSSL is not None
    args = [OPENSSL, "cms", "-encrypt", "-binary", cipher, *extra, "-outform", "DER"]
    for cert in certs:
        args += ["-recip", str(cert), "-keyopt", "rsa_padding_mode:oaep", "-keyopt", f"rsa_oaep_md:{md}",
                 "-keyopt", f"rsa_mgf1_md:{md}"]
    return subprocess.run(args, input=plaintext, check=True, capture_output=True).stdout


@pytest.mark.parametrize("extra", [(), ("-stream",), ("-keyid", "-stream")])
@pytest.mark.parametrize("size", [0, 1, 32, 5000])
def test_live_openssl_blob_opens(openssl_pair: tuple[Path, Path, Path], extra: tuple[str, ...], size: int) -> None:
    keyfile, cert, _ = openssl_pair
    plaintext = os.urandom(size)
    blob = _openssl_encrypt(plaintext, [cert], *extra)
    private = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert open_recipient_ciphertext(blob, private) == plaintext


def test_live_openssl_rejections(openssl_pair: tuple[Path, Path, Path]) -> None:
    keyfile, cert, second = openssl_pair
    private = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    with pytest.raises(CmsAlgorithmError, match="SHA-256"):
        open_recipient_ciphertext(_openssl_encrypt(b"x", [cert], md="sha1"), private)
    with pytest.raises(CmsAlgorithmError, match="AES-256-CBC"):
        open_recipient_ciphertext(_openssl_encrypt(b"x", [cert], cipher="-aes-128-cbc"), private)
    with pytest.raises(CmsRecipientError, match="exactly one recipient"):
        open_recipient_ciphertext(_openssl_encrypt(b"x", [cert, second]), private)


# --- structural rejections -----------------------------------------------------------------
def test_builder_shape_opens(key: rsa.RSAPrivateKey) -> None:
    assert open_recipient_ciphertext(make_blob(key.public_key()), key) == b"sixteen byte key" * 2


def test_primitive_content_and_null_hash_params_accepted(key: rsa.RSAPrivateKey) -> None:
    sha256_null = sequence(encode_oid(OID_SHA256), b"\x05\x00")
    alg = sequence(
        encode_oid(OID_OAEP),
        sequence(tlv(0xA0, sha256_null), tlv(0xA1, sequence(encode_oid(OID_MGF1), sha256_null))),
    )
    blob = make_blob(key.public_key(), key_alg=alg, content=lambda ct: tlv(0x80, ct))
    assert open_recipient_ciphertext(blob, key) == b"sixteen byte key" * 2


def _oaep_alg(hash_oid: str = OID_SHA256, mgf_hash: str = OID_SHA256, label: bytes | None = None) -> bytes:
    fields = [
        tlv(0xA0, sequence(encode_oid(hash_oid))),
        tlv(0xA1, sequence(encode_oid(OID_MGF1), sequence(encode_oid(mgf_hash)))),
    ]
    if label is not None:
        fields.append(tlv(0xA2, sequence(encode_oid("1.2.840.113549.1.1.9"), tlv(0x04, label))))
    return sequence(encode_oid(OID_OAEP), sequence(*fields))


REJECTIONS: list[tuple[str, dict[str, object], type[CmsError], str]] = [
    ("signed-data", {"content_oid": OID_SIGNED}, CmsContentTypeError, "id-envelopedData"),
    ("env-version-1", {"env_version": 1}, CmsVersionError, "version 1"),
    ("ktri-version-3", {"ktri_version": 3}, CmsVersionError, "version 3"),
    ("env-v0-with-ski", {"env_version": 0}, CmsVersionError, "must be 2"),
    ("two-recipients", {"recipients": 2}, CmsRecipientError, "exactly one"),
    ("no-recipient", {"recipients": 0}, CmsRecipientError, "found 0"),
    ("ski-missing", {"rid": tlv(0x04, b"x")}, CmsRecipientError, "subjectKeyIdentifier"),
    ("pkcs1v15", {"key_alg": sequence(encode_oid(OID_RSA_PKCS1), b"\x05\x00")}, CmsAlgorithmError, "RSAES-OAEP"),
    ("oaep-defaults", {"key_alg": sequence(encode_oid(OID_OAEP))}, CmsAlgorithmError, "SHA-256"),
    ("oaep-sha1", {"key_alg": _oaep_alg(hash_oid=OID_SHA1)}, CmsAlgorithmError, "SHA-256"),
    ("mgf1-sha1", {"key_alg": _oaep_alg(mgf_hash=OID_SHA1)}, CmsAlgorithmError, "SHA-256"),
    ("oaep-label", {"key_alg": _oaep_alg(label=b"L")}, CmsAlgorithmError, "label"),
    ("aes128", {"cipher_oid": OID_AES128_CBC}, CmsAlgorithmError, "AES-256-CBC"),
    ("short-iv", {"iv": b"\x00" * 8}, CmsAlgorithmError, "16 bytes"),
    ("eci-not-data", {"eci_oid": OID_SIGNED}, CmsContentTypeError, "id-data"),
    ("originator-info", {"before_recipients": tlv(0xA0, b"")}, CmsStructureError, "originatorInfo"),
    ("unprotected-attrs", {"after_eci": tlv(0xA1, b"")}, CmsStructureError, "extra fields"),
    ("ragged-content", {"content": lambda ct: tlv(0x80, ct[:-1])}, CmsStructureError, "multiple of 16"),
    ("content-wrong-tag", {"content": lambda ct: tlv(0x81, ct)}, CmsStructureError, r"\[0\]"),
    ("content-bad-segment", {"content": lambda ct: indefinite(0xA0, tlv(0x02, ct))}, BerEncodingError, "segment"),
]


@pytest.mark.parametrize(("case", "knobs", "error", "message"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_structural_rejections(
    key: rsa.RSAPrivateKey, case: str, knobs: dict[str, object], error: type[CmsError], message: str
) -> None:
    blob = make_blob(key.public_key(), **knobs)  # type: ignore[arg-type]
    with pytest.raises(error, match=message) as info:
        open_recipient_ciphertext(blob, key)
    assert "\n" not in str(info.value)


def test_missing_encrypted_content(key: rsa.RSAPrivateKey) -> None:
    blob = make_blob(key.public_key(), content=lambda ct: b"")
    with pytest.raises(CmsStructureError, match="type, algorithm and content"):
        open_recipient_ciphertext(blob, key)


def test_truncated_blob(key: rsa.RSAPrivateKey) -> None:
    blob = make_blob(key.public_key())
    for cut in (1, 2, 10, len(blob) // 2):
        with pytest.raises(BerEncodingError):
            open_recipient_ciphertext(blob[:-cut], key)


# --- decryption failures all look alike ---------------------------------------------------
def _message(blob: bytes, key: rsa.RSAPrivateKey) -> str:
    with pytest.raises(CmsDecryptionError) as info:
        open_recipient_ciphertext(blob, key)
    return str(info.value)


def test_decryption_failures_are_indistinguishable(key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_key = _message(make_blob(key.public_key()), other)
    bad_padding = _message(make_blob(key.public_key(), padded=b"A" * 31 + b"\x00"), key)
    long_pad = _message(make_blob(key.public_key(), padded=b"A" * 31 + b"\x11"), key)
    short_cek = _message(make_blob(key.public_key(), cek=b"k" * 16), key)
    assert wrong_key == bad_padding == long_pad == short_cek


def test_small_recipient_key_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CmsAlgorithmError, match="2048"):
        open_recipient_ciphertext(b"", small)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_blobs_only_raise_cms_errors(key: rsa.RSAPrivateKey, data: st.DataObject) -> None:
    blob = bytearray((FIXTURES / "openssl-stream.der").read_bytes())
    position = data.draw(st.integers(0, len(blob) - 1))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if action == "flip":
        blob[position] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del blob[position:]
    else:
        blob[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        result = open_recipient_ciphertext(bytes(blob), _fixture_key())
    except CmsError:
        return
    # CBC is malleable: a flipped IV or ciphertext byte may still decrypt, to other bytes.
    assert isinstance(result, bytes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_cms_errors(blob: bytes) -> None:
    with pytest.raises(CmsError):
        parse_enveloped_data(blob)
