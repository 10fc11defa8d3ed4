"""Builds `CiphertextForRecipient` the way AWS KMS does, for the local KMS emulator.

Shape (RFC 5652, and what aws-nitro-enclaves-sdk-c source/cms.c walks):
ContentInfo(id-envelopedData) -> EnvelopedData v2 -> one KeyTransRecipientInfo v2
(rid = subjectKeyIdentifier, RSAES-OAEP with SHA-256 / MGF1-SHA-256) and an
EncryptedContentInfo(id-data, AES-256-CBC with a random IV, PKCS#7 padding).
The outer containers use BER indefinite lengths; RecipientInfos and the algorithm
identifiers are definite; the ciphertext is a constructed [0] of definite OCTET
STRING chunks -- the same layout `openssl cms -stream` produces.
"""
from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

DEFAULT_CHUNK = 1024
_EOC = b"\x00\x00"


def encode_length(length: int) -> bytes:
    """DER length octets."""
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """A definite-length element with a single-octet tag."""
    return bytes([tag]) + encode_length(len(content)) + content


def indefinite(tag: int, *parts: bytes) -> bytes:
    """A constructed element with BER indefinite length (tag must have bit 0x20)."""
    if not tag & 0x20:
        raise ValueError("indefinite length needs a constructed tag")
    return bytes([tag, 0x80]) + b"".join(parts) + _EOC


def encode_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element from dotted text."""
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"invalid OID {dotted!r}")
    values = [arcs[0] * 40 + arcs[1], *arcs[2:]]
    body = bytearray()
    for value in values:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def encode_integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, raw)


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def subject_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING value."""
    pkcs1 = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.sha1(pkcs1, usedforsecurity=False).digest()


def oaep_sha256_identifier() -> bytes:
    sha256 = sequence(encode_oid(OID_SHA256))
    params = sequence(
        tlv(0xA0, sha256),
        tlv(0xA1, sequence(encode_oid(OID_MGF1), sha256)),
    )
    return sequence(encode_oid(OID_RSAES_OAEP), params)


def build_recipient_ciphertext(
    plaintext: bytes,
    public_key: rsa.RSAPublicKey,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> bytes:
    """Encrypt `plaintext` to `public_key` as KMS's BER CMS EnvelopedData."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("public_key must be an RSA public key")
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    cek = os.urandom(32)
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = public_key.encrypt(
        cek,
        asym_padding.OAEP(
            mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    recipient = sequence(
        encode_integer(2),
        tlv(0x80, subject_key_identifier(public_key)),
        oaep_sha256_identifier(),
        tlv(0x04, encrypted_key),
    )
    chunks = [
        tlv(0x04, ciphertext[offset : offset + chunk_size])
        for offset in range(0, len(ciphertext), chunk_size)
    ]
    encrypted_content_info = indefinite(
        0x30,
        encode_oid(OID_DATA),
        sequence(encode_oid(OID_AES256_CBC), tlv(0x04, iv)),
        indefinite(0xA0, *chunks),
    )
    enveloped = indefinite(0x30, encode_integer(2), tlv(0x31, recipient), encrypted_content_info)
    return indefinite(0x30, encode_oid(OID_ENVELOPED_DATA), indefinite(0xA0, enveloped))
