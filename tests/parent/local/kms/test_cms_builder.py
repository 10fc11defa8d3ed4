from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave.hazmat.ber import decode
from enclave.hazmat.cms import open_recipient_ciphertext, parse_enveloped_data
from parent.local.kms.cms_builder import (
    build_recipient_ciphertext,
    encode_integer,
    encode_oid,
    subject_key_identifier,
)

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_encoders_known_answers() -> None:
    assert encode_oid("1.2.840.113549.1.7.3").hex() == "06092a864886f70d010703"
    assert encode_oid("2.16.840.1.101.3.4.1.42").hex() == "060960864801650304012a"
    assert [encode_integer(v).hex() for v in (0, 2, 127, 128, 256, -1)] == [
        "020100", "020102", "02017f", "02020080", "02020100", "0201ff",
    ]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 1000, 5000])
@pytest.mark.parametrize("chunk", [16, 1024])
def test_round_trip(key: rsa.RSAPrivateKey, size: int, chunk: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    blob = build_recipient_ciphertext(plaintext, key.public_key(), chunk_size=chunk)
    assert open_recipient_ciphertext(blob, key) == plaintext


def test_shape_matches_kms(key: rsa.RSAPrivateKey) -> None:
    blob = build_recipient_ciphertext(b"d" * 100, key.public_key(), chunk_size=32)
    # BER with indefinite lengths at the outer levels, as KMS sends.
    assert blob[:2] == b"\x30\x80" and blob.endswith(b"\x00\x00")
    root = decode(blob)
    enveloped = root.children[1].children[0]
    assert root.indefinite and root.children[1].indefinite and enveloped.indefinite
    content = enveloped.children[2].children[2]
    assert content.indefinite and content.constructed
    assert [len(c.content) for c in content.children] == [32, 32, 32, 16]
    parts = parse_enveloped_data(blob)
    assert parts.version == 2
    assert parts.recipient.subject_key_identifier == subject_key_identifier(key.public_key())
    assert len(parts.encrypted_key) == 256 and len(parts.iv) == 16


def test_fresh_key_and_iv_each_time(key: rsa.RSAPrivateKey) -> None:
    a = parse_enveloped_data(build_recipient_ciphertext(b"same", key.public_key()))
    b = parse_enveloped_data(build_recipient_ciphertext(b"same", key.public_key()))
    assert a.iv != b.iv and a.ciphertext != b.ciphertext


def test_bad_arguments(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError):
        build_recipient_ciphertext(b"x", key.public_key(), chunk_size=0)
    with pytest.raises(TypeError):
        build_recipient_ciphertext(b"x", b"not a key")  # type: ignore[arg-type]


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("size", [0, 33, 4000])
def test_openssl_decrypts_builder_output(tmp_path: Path, size: int) -> None:
    assert OPENSSL is not None
    keyfile, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyfile, "-out", cert,
         "-subj", "/CN=builder", "-days", "2"],
        check=True, capture_output=True,
    )
    private = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob_path = tmp_path / "blob.der"
    blob_path.write_bytes(build_recipient_ciphertext(plaintext, private.public_key(), chunk_size=1000))
    # -recip makes OpenSSL match our subjectKeyIdentifier against the certificate's.
    result = subprocess.run(
        [OPENSSL, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", blob_path, "-inkey", keyfile,
         "-recip", cert],
        check=True, capture_output=True,
    )
    assert result.stdout == plaintext
