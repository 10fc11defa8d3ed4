"""Typed failures of the KMS client side and of CMS (CiphertextForRecipient) parsing.

Every structural problem in a CMS blob has its own CmsError subclass so callers and
tests can tell them apart; all decryption failures (key unwrap, content, padding)
share one type and one message so the error never becomes a padding oracle.
"""
from __future__ import annotations

from enclave.errors import CmsError, KmsError


# --- CMS / BER ---------------------------------------------------------------------
class BerEncodingError(CmsError):
    """The bytes are not valid BER (bad tag, length, truncation, trailing data)."""


class BerLimitError(CmsError):
    """The BER input exceeds a size, depth or element-count limit."""


class CmsStructureError(CmsError):
    """The ASN.1 structure is not the CMS EnvelopedData shape KMS produces."""


class CmsContentTypeError(CmsStructureError):
    """The ContentInfo or EncryptedContentInfo has an unexpected content type."""


class CmsVersionError(CmsStructureError):
    """A CMS version number is not one KMS (or RFC 5652 for this shape) uses."""


class CmsRecipientError(CmsStructureError):
    """RecipientInfos is not exactly one well-formed KeyTransRecipientInfo."""


class CmsAlgorithmError(CmsError):
    """An algorithm or its parameters is not RSAES-OAEP(SHA-256, MGF1-SHA-256) / AES-256-CBC."""


class CmsDecryptionError(CmsError):
    """Key unwrap or content decryption failed (deliberately without detail)."""


# --- KMS API ---------------------------------------------------------------------
class KmsAccessDenied(KmsError):
    """KMS refused the request under the key policy (AccessDeniedException)."""


class KmsInvalidCiphertext(KmsError):
    """KMS could not decrypt the blob: tampered, wrong encryption context, wrong key."""


class KmsIncorrectKey(KmsError):
    """The ciphertext was not produced under the KeyId given (IncorrectKeyException)."""


class KmsNotFound(KmsError):
    """The key or alias does not exist (NotFoundException)."""


class KmsKeyUnusable(KmsError):
    """The key is disabled, pending deletion or otherwise unusable."""


class KmsAuthenticationFailed(KmsError):
    """The request signature or credentials were rejected."""


class KmsValidationError(KmsError):
    """KMS rejected a parameter (ValidationException and friends)."""


class KmsUnavailable(KmsError):
    """KMS could not be reached or timed out."""


class KmsRequestFailed(KmsError):
    """KMS returned an error this client has no narrower type for."""


class KmsResponseError(KmsError):
    """KMS answered, but the response is unusable (e.g. plaintext where none may be)."""
