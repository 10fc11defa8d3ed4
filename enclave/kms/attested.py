"""KMS calls made with a `Recipient` attestation document, from inside the enclave.

Each call generates a fresh RSA-2048 key, asks the NSM for an attestation document
carrying its public key, and sends the document as `Recipient`. KMS evaluates the
key policy against the document's PCRs and answers `CiphertextForRecipient` (CMS
to that key) instead of `Plaintext`; only this process can open it. A response
with plaintext in it is refused: it would mean the secret crossed the parent.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from enclave.errors import HermeticError, KmsError
from enclave.hazmat.cms import RecipientKey
from enclave.kms.errors import (
    KmsAccessDenied,
    KmsAuthenticationFailed,
    KmsIncorrectKey,
    KmsInvalidCiphertext,
    KmsKeyUnusable,
    KmsNotFound,
    KmsRequestFailed,
    KmsResponseError,
    KmsUnavailable,
    KmsValidationError,
)

log = logging.getLogger(__name__)

KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
MAX_RANDOM_BYTES = 1024

_ERROR_TYPES: dict[str, type[KmsError]] = {
    "AccessDeniedException": KmsAccessDenied,
    "InvalidCiphertextException": KmsInvalidCiphertext,
    "IncorrectKeyException": KmsIncorrectKey,
    "NotFoundException": KmsNotFound,
    "DisabledException": KmsKeyUnusable,
    "KeyUnavailableException": KmsKeyUnusable,
    "KMSInvalidStateException": KmsKeyUnusable,
    "InvalidKeyUsageException": KmsKeyUnusable,
    "UnrecognizedClientException": KmsAuthenticationFailed,
    "InvalidSignatureException": KmsAuthenticationFailed,
    "IncompleteSignature": KmsAuthenticationFailed,
    "MissingAuthenticationToken": KmsAuthenticationFailed,
    "ExpiredTokenException": KmsAuthenticationFailed,
    "InvalidClientTokenId": KmsAuthenticationFailed,
    "ValidationException": KmsValidationError,
    "InvalidGrantTokenException": KmsValidationError,
    "DependencyTimeoutException": KmsUnavailable,
    "KMSInternalException": KmsUnavailable,
    "ThrottlingException": KmsUnavailable,
}


class Observer(Protocol):
    def __call__(self, type_: str, /, **fields: str) -> None: ...


class AttestingNsm(Protocol):
    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes: ...


def kms_error_from_client_error(operation: str, err: ClientError) -> KmsError:
    """The typed, one-line KmsError for a botocore ClientError."""
    info = err.response.get("Error", {}) if isinstance(err.response, dict) else {}
    code = str(info.get("Code") or "UnknownError")
    # Some endpoints prefix the type with its namespace ("com.amazonaws.kms#...").
    code = code.rsplit("#", 1)[-1]
    message = str(info.get("Message") or "no message")
    error_type = _ERROR_TYPES.get(code, KmsRequestFailed)
    return error_type(f"KMS {operation} failed: {code}: {message}")


def _check_context(encryption_context: Mapping[str, str]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in encryption_context.items()):
        raise KmsValidationError("encryption context keys and values must be strings")
    return dict(encryption_context)


class AttestedKms:
    """KMS Decrypt / GenerateDataKey / GenerateRandom bound to this enclave's attestation.

    The client can be replaced while calls are made from other threads (the parent
    refreshes the credentials it is built from): each call uses the client current
    when it starts.
    """

    def __init__(self, client: Any, nsm: AttestingNsm) -> None:
        self._client = client
        self._client_lock = threading.Lock()
        self._nsm = nsm
        self._observer: Observer | None = None

    def observe(self, observer: Observer) -> None:
        """Report every attestation made and every request's outcome to `observer` (the audit chain).

        Only the operation, the key id asked for, the attestation document's SHA-256 and
        "ok" or the error's code are reported: never a plaintext, ciphertext or key.
        """
        self._observer = observer

    def _observe(self, type_: str, **fields: str) -> None:
        if self._observer is not None:
            self._observer(type_, **fields)

    def replace_client(self, client: Any) -> None:
        """Make every later call with `client`; a call already under way keeps its own."""
        with self._client_lock:
            self._client = client

    def _method(self, name: str) -> Callable[..., dict[str, Any]]:
        with self._client_lock:
            client = self._client
        method: Callable[..., dict[str, Any]] = getattr(client, name)
        return method

    def _recipient(self, operation: str) -> tuple[RecipientKey, dict[str, Any]]:
        private_key = RecipientKey()
        document = self._nsm.attest(public_key=private_key.public_der)
        self._observe("attestation", operation=operation, sha256=hashlib.sha256(document).hexdigest())
        return private_key, {
            "AttestationDocument": document,
            "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        }

    def _call(self, operation: str, method: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any]:
        key_id = str(params.get("KeyId", ""))  # "": a Decrypt whose ciphertext names its key
        try:
            response = self._call_unobserved(operation, method, **params)
        except KmsError as err:
            try:
                self._observe("kms_request", operation=operation, key_id=key_id, outcome=err.code)
            except HermeticError:
                # The KMS error is what the session reports; a failed session releases no log.
                log.warning("the audit chain could not record the failed KMS %s", operation)
            raise
        self._observe("kms_request", operation=operation, key_id=key_id, outcome="ok")
        return response

    @staticmethod
    def _call_unobserved(operation: str, method: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any]:
        try:
            response = method(**params)
        except ClientError as err:
            error = kms_error_from_client_error(operation, err)
            log.info("KMS %s refused: %s", operation, type(error).__name__)
            raise error from None
        except ParamValidationError as err:
            raise KmsValidationError(f"KMS {operation} parameters rejected: {err}") from None
        except BotoCoreError as err:
            raise KmsUnavailable(f"KMS {operation} could not be completed: {err}") from None
        if not isinstance(response, dict):
            raise KmsResponseError(f"KMS {operation} returned an unusable response")
        return response

    @staticmethod
    def _unwrap(operation: str, response: Mapping[str, Any], private_key: RecipientKey) -> bytes:
        if response.get("Plaintext"):
            raise KmsResponseError(
                f"KMS {operation} returned Plaintext to an attested request; refusing it"
            )
        blob = response.get("CiphertextForRecipient")
        if not isinstance(blob, (bytes, bytearray)) or not blob:
            raise KmsResponseError(f"KMS {operation} response has no CiphertextForRecipient")
        return private_key.open(bytes(blob))

    def decrypt(
        self,
        ciphertext_blob: bytes,
        encryption_context: Mapping[str, str],
        key_id: str | None = None,
    ) -> bytes:
        """Decrypt a KMS ciphertext blob; the plaintext only ever exists in this process."""
        private_key, recipient = self._recipient("Decrypt")
        params: dict[str, Any] = {
            "CiphertextBlob": bytes(ciphertext_blob),
            "EncryptionContext": _check_context(encryption_context),
            "Recipient": recipient,
        }
        if key_id is not None:
            params["KeyId"] = key_id
        response = self._call("Decrypt", self._method("decrypt"), **params)
        return self._unwrap("Decrypt", response, private_key)

    def generate_data_key(
        self,
        key_id: str,
        encryption_context: Mapping[str, str],
        *,
        number_of_bytes: int = 32,
    ) -> tuple[bytes, bytes]:
        """A fresh data key: (plaintext for this process, CiphertextBlob to store)."""
        private_key, recipient = self._recipient("GenerateDataKey")
        response = self._call(
            "GenerateDataKey",
            self._method("generate_data_key"),
            KeyId=key_id,
            EncryptionContext=_check_context(encryption_context),
            NumberOfBytes=number_of_bytes,
            Recipient=recipient,
        )
        data_key = self._unwrap("GenerateDataKey", response, private_key)
        if len(data_key) != number_of_bytes:
            raise KmsResponseError(
                f"KMS GenerateDataKey returned a {len(data_key)}-byte key, expected {number_of_bytes}"
            )
        blob = response.get("CiphertextBlob")
        if not isinstance(blob, (bytes, bytearray)) or not blob:
            raise KmsResponseError("KMS GenerateDataKey response has no CiphertextBlob")
        return data_key, bytes(blob)

    def generate_random(self, n: int) -> bytes:
        """`n` random bytes from KMS, delivered encrypted to this enclave."""
        if not 1 <= n <= MAX_RANDOM_BYTES:
            raise KmsValidationError(f"GenerateRandom size must be 1..{MAX_RANDOM_BYTES}, got {n}")
        private_key, recipient = self._recipient("GenerateRandom")
        response = self._call(
            "GenerateRandom", self._method("generate_random"), NumberOfBytes=n, Recipient=recipient
        )
        random_bytes = self._unwrap("GenerateRandom", response, private_key)
        if len(random_bytes) != n:
            raise KmsResponseError(f"KMS GenerateRandom returned {len(random_bytes)} bytes, expected {n}")
        return random_bytes
