"""Opening KMS `CiphertextForRecipient`: CMS EnvelopedData (RFC 5652) in BER.

KMS encrypts the plaintext to the RSA public key of the attestation document:
a random AES-256 content-encryption key wrapped with RSAES-OAEP (SHA-256,
MGF1-SHA-256), the content in AES-256-CBC with PKCS#7 padding, the whole thing
BER with indefinite lengths and the ciphertext split into OCTET STRING chunks
(aws-nitro-enclaves-sdk-c, source/cms.c). Only that shape is accepted; anything
else is a typed CmsError. Decryption failures of every kind (wrong key, bad OAEP,
bad padding) look the same from outside: one error type, one message, and the
same work done either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from enclave.hazmat.ber import (
    CLASS_CONTEXT,
    CLASS_UNIVERSAL,
    TAG_INTEGER,
    TAG_NULL,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    TAG_SET,
    Tlv,
    decode,
    integer_value,
    octet_string_bytes,
    oid_value,
)
from enclave.kms.errors import (
    CmsAlgorithmError,
    CmsContentTypeError,
    CmsDecryptionError,
    CmsRecipientError,
    CmsStructureError,
    CmsVersionError,
)

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_P_SPECIFIED = "1.2.840.113549.1.1.9"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

AES_BLOCK = 16
CEK_BYTES = 32
MIN_RSA_BITS = 2048
RECIPIENT_KEY_BITS = 2048


@dataclass(frozen=True)
class RecipientId:
    """How the KeyTransRecipientInfo names its recipient (KMS uses the SKI form)."""

    subject_key_identifier: bytes | None
    issuer_and_serial: bool


@dataclass(frozen=True)
class EnvelopedParts:
    """The pieces of an EnvelopedData needed to decrypt it."""

    version: int
    recipient: RecipientId
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


def _expect(tlv: Tlv, tag_class: int, number: int, constructed: bool, what: str) -> Tlv:
    if tlv.tag_class != tag_class or tlv.number != number or tlv.constructed != constructed:
        raise CmsStructureError(f"CMS {what}: expected a different element, found {tlv.describe()}")
    return tlv


def _sequence(tlv: Tlv, what: str) -> tuple[Tlv, ...]:
    return _expect(tlv, CLASS_UNIVERSAL, TAG_SEQUENCE, True, what).children


def _octets(tlv: Tlv, what: str) -> bytes:
    if not tlv.matches(CLASS_UNIVERSAL, TAG_OCTET_STRING):
        raise CmsStructureError(f"CMS {what}: expected OCTET STRING, found {tlv.describe()}")
    return octet_string_bytes(tlv)


def _oid(tlv: Tlv, what: str) -> str:
    if not tlv.matches(CLASS_UNIVERSAL, TAG_OID):
        raise CmsStructureError(f"CMS {what}: expected OBJECT IDENTIFIER, found {tlv.describe()}")
    return oid_value(tlv)


def _version(tlv: Tlv, what: str) -> int:
    if not tlv.matches(CLASS_UNIVERSAL, TAG_INTEGER):
        raise CmsStructureError(f"CMS {what}: expected INTEGER version, found {tlv.describe()}")
    return integer_value(tlv)


def _explicit(tlv: Tlv, number: int, what: str) -> Tlv:
    """The single element inside an EXPLICIT [number] tag."""
    _expect(tlv, CLASS_CONTEXT, number, True, what)
    if len(tlv.children) != 1:
        raise CmsStructureError(f"CMS {what}: explicit tag [{number}] must hold one element")
    return tlv.children[0]


def _sha256_identifier(tlv: Tlv, what: str) -> None:
    """AlgorithmIdentifier for SHA-256; parameters absent or NULL (both occur in practice)."""
    fields = _sequence(tlv, what)
    if not fields or len(fields) > 2:
        raise CmsAlgorithmError(f"CMS {what}: malformed hash AlgorithmIdentifier")
    if _oid(fields[0], what) != OID_SHA256:
        raise CmsAlgorithmError(f"CMS {what}: hash must be SHA-256")
    if len(fields) == 2 and not (
        fields[1].matches(CLASS_UNIVERSAL, TAG_NULL) and not fields[1].content
    ):
        raise CmsAlgorithmError(f"CMS {what}: SHA-256 parameters must be absent or NULL")


def _check_oaep(algorithm: Tlv) -> None:
    fields = _sequence(algorithm, "keyEncryptionAlgorithm")
    if not fields or _oid(fields[0], "keyEncryptionAlgorithm") != OID_RSAES_OAEP:
        raise CmsAlgorithmError("CMS key encryption algorithm must be RSAES-OAEP")
    if len(fields) != 2:
        # Absent parameters mean the SHA-1 defaults, which KMS never uses.
        raise CmsAlgorithmError("CMS RSAES-OAEP parameters must name SHA-256 and MGF1-SHA-256")
    params = _sequence(fields[1], "RSAES-OAEP-params")
    seen: dict[int, Tlv] = {}
    last = -1
    for item in params:
        if item.tag_class != CLASS_CONTEXT or item.number not in (0, 1, 2) or item.number <= last:
            raise CmsStructureError("CMS RSAES-OAEP-params has an unexpected or misordered field")
        last = item.number
        seen[item.number] = _explicit(item, item.number, "RSAES-OAEP-params")
    if 0 not in seen or 1 not in seen:
        raise CmsAlgorithmError("CMS RSAES-OAEP parameters must name SHA-256 and MGF1-SHA-256")
    _sha256_identifier(seen[0], "OAEP hashAlgorithm")
    mgf = _sequence(seen[1], "OAEP maskGenAlgorithm")
    if len(mgf) != 2 or _oid(mgf[0], "OAEP maskGenAlgorithm") != OID_MGF1:
        raise CmsAlgorithmError("CMS OAEP mask generation must be MGF1")
    _sha256_identifier(mgf[1], "MGF1 hash")
    if 2 in seen:
        source = _sequence(seen[2], "OAEP pSourceAlgorithm")
        if (
            len(source) != 2
            or _oid(source[0], "OAEP pSourceAlgorithm") != OID_P_SPECIFIED
            or _octets(source[1], "OAEP label") != b""
        ):
            raise CmsAlgorithmError("CMS OAEP label must be empty")


def _recipient(infos: Tlv) -> tuple[int, RecipientId, bytes]:
    _expect(infos, CLASS_UNIVERSAL, TAG_SET, True, "recipientInfos")
    if len(infos.children) != 1:
        raise CmsRecipientError(
            f"CMS must have exactly one recipient, found {len(infos.children)}"
        )
    info = infos.children[0]
    if not info.matches(CLASS_UNIVERSAL, TAG_SEQUENCE) or not info.constructed:
        # kari [1], kekri [2], pwri [3], ori [4] are tagged: only ktri is a bare SEQUENCE.
        raise CmsRecipientError("CMS recipient is not a KeyTransRecipientInfo")
    fields = info.children
    if len(fields) != 4:
        raise CmsRecipientError("CMS KeyTransRecipientInfo must have four fields")
    version = _version(fields[0], "KeyTransRecipientInfo version")
    rid = fields[1]
    if version == 2:
        if not rid.matches(CLASS_CONTEXT, 0):
            raise CmsRecipientError("CMS recipient version 2 requires a subjectKeyIdentifier")
        recipient = RecipientId(subject_key_identifier=octet_string_bytes(rid), issuer_and_serial=False)
    elif version == 0:
        parts = _sequence(rid, "IssuerAndSerialNumber")
        if (
            len(parts) != 2
            or not parts[0].matches(CLASS_UNIVERSAL, TAG_SEQUENCE)
            or not parts[1].matches(CLASS_UNIVERSAL, TAG_INTEGER)
        ):
            raise CmsRecipientError("CMS IssuerAndSerialNumber is malformed")
        integer_value(parts[1])
        recipient = RecipientId(subject_key_identifier=None, issuer_and_serial=True)
    else:
        raise CmsVersionError(f"CMS KeyTransRecipientInfo version {version} is not 0 or 2")
    _check_oaep(fields[2])
    encrypted_key = _octets(fields[3], "encryptedKey")
    if not encrypted_key:
        raise CmsRecipientError("CMS encryptedKey is empty")
    return version, recipient, encrypted_key


def _encrypted_content(eci: Tlv) -> tuple[bytes, bytes]:
    fields = _sequence(eci, "EncryptedContentInfo")
    if len(fields) != 3:
        raise CmsStructureError("CMS EncryptedContentInfo must carry type, algorithm and content")
    if _oid(fields[0], "EncryptedContentInfo contentType") != OID_DATA:
        raise CmsContentTypeError("CMS encrypted content type is not id-data")
    algorithm = _sequence(fields[1], "contentEncryptionAlgorithm")
    if len(algorithm) != 2 or _oid(algorithm[0], "contentEncryptionAlgorithm") != OID_AES256_CBC:
        raise CmsAlgorithmError("CMS content encryption must be AES-256-CBC")
    iv = _octets(algorithm[1], "AES-CBC IV")
    if len(iv) != AES_BLOCK:
        raise CmsAlgorithmError("CMS AES-256-CBC IV must be 16 bytes")
    content = fields[2]
    if not content.matches(CLASS_CONTEXT, 0):
        raise CmsStructureError(f"CMS encryptedContent must be [0], found {content.describe()}")
    ciphertext = octet_string_bytes(content)
    if not ciphertext or len(ciphertext) % AES_BLOCK:
        raise CmsStructureError("CMS encrypted content is not a positive multiple of 16 bytes")
    return iv, ciphertext


def parse_enveloped_data(blob: bytes) -> EnvelopedParts:
    """Parse a ContentInfo(EnvelopedData) in the KMS shape, without decrypting."""
    root = decode(blob)
    outer = _sequence(root, "ContentInfo")
    if len(outer) != 2:
        raise CmsStructureError("CMS ContentInfo must have a content type and content")
    if _oid(outer[0], "ContentInfo contentType") != OID_ENVELOPED_DATA:
        raise CmsContentTypeError("CMS content type is not id-envelopedData")
    enveloped = _sequence(_explicit(outer[1], 0, "ContentInfo content"), "EnvelopedData")
    if len(enveloped) < 3:
        raise CmsStructureError("CMS EnvelopedData is missing fields")
    version = _version(enveloped[0], "EnvelopedData version")
    if version not in (0, 2):
        raise CmsVersionError(f"CMS EnvelopedData version {version} is not 0 or 2")
    rest = list(enveloped[1:])
    if rest[0].matches(CLASS_CONTEXT, 0):
        raise CmsStructureError("CMS originatorInfo is not expected from KMS")
    if len(rest) != 2:
        # A trailing [1] would be unprotectedAttrs, which KMS never sends.
        raise CmsStructureError("CMS EnvelopedData has unexpected extra fields")
    ktri_version, recipient, encrypted_key = _recipient(rest[0])
    if ktri_version == 2 and version != 2:
        raise CmsVersionError("CMS EnvelopedData version must be 2 with a version-2 recipient")
    iv, ciphertext = _encrypted_content(rest[1])
    return EnvelopedParts(version, recipient, encrypted_key, iv, ciphertext)


def _oaep() -> asym_padding.OAEP:
    return asym_padding.OAEP(
        mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def open_recipient_ciphertext(blob: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt a KMS `CiphertextForRecipient` with the enclave's ephemeral RSA key."""
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise TypeError("private_key must be an RSA private key")
    if private_key.key_size < MIN_RSA_BITS:
        raise CmsAlgorithmError(f"recipient RSA key must have at least {MIN_RSA_BITS} bits")
    parts = parse_enveloped_data(blob)
    unwrapped_ok = True
    try:
        cek = private_key.decrypt(parts.encrypted_key, _oaep())
    except ValueError:
        cek = b""
    if len(cek) != CEK_BYTES:
        # Carry on with a random key so a bad unwrap costs the same as bad padding
        # (RFC 3218 section 2.3): failures must not be told apart by timing.
        unwrapped_ok = False
        cek = os.urandom(CEK_BYTES)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(parts.iv)).decryptor()
    padded = decryptor.update(parts.ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(AES_BLOCK * 8).unpadder()
    padding_ok = True
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        padding_ok = False
        plaintext = b""
    if not (unwrapped_ok and padding_ok):
        raise CmsDecryptionError("CiphertextForRecipient could not be decrypted with this key")
    return plaintext


class RecipientKey:
    """A fresh RSA-2048 key pair for one KMS `Recipient` request.

    The public half goes into the attestation document; the private half opens the
    answer and is never serialised.
    """

    __slots__ = ("_private",)

    def __init__(self) -> None:
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=RECIPIENT_KEY_BITS)

    @property
    def public_der(self) -> bytes:
        """SubjectPublicKeyInfo DER, as KMS expects in the document's public_key."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def open(self, blob: bytes) -> bytes:
        """The plaintext of a CiphertextForRecipient addressed to this key."""
        return open_recipient_ciphertext(blob, self._private)
