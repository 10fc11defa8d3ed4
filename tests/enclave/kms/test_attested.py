"""AttestedKms against a stand-in KMS client (the emulator tests cover real HTTP)."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from enclave.errors import KmsError
from enclave.kms.attested import AttestedKms
from enclave.kms.errors import (
    KmsAccessDenied,
    KmsAuthenticationFailed,
    KmsIncorrectKey,
    KmsInvalidCiphertext,
    KmsNotFound,
    KmsRequestFailed,
    KmsResponseError,
    KmsUnavailable,
    KmsValidationError,
)
from parent.local.kms.cms_builder import build_recipient_ciphertext


class RecordingNsm:
    """Hands out a marker document and remembers the public key it was asked to bind."""

    def __init__(self) -> None:
        self.public_keys: list[bytes] = []

    def attest(self, *, user_data: bytes | None = None, nonce: bytes | None = None,
               public_key: bytes | None = None) -> bytes:
        assert public_key is not None and user_data is None and nonce is None
        self.public_keys.append(public_key)
        return b"DOC:" + public_key


class FakeKms:
    """Answers like KMS with Recipient: CMS to the key inside the 'document'."""

    def __init__(self, secret: bytes = b"k" * 32, **overrides: Any) -> None:
        self.secret = secret
        self.overrides = overrides
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self, op: str, params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((op, params))
        if "error" in self.overrides:
            raise self.overrides["error"]
        recipient = params["Recipient"]
        assert recipient["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
        public_key = load_der_public_key(recipient["AttestationDocument"][len(b"DOC:"):])
        assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
        response = {"CiphertextForRecipient": build_recipient_ciphertext(self.secret, public_key), **extra}
        response.update(self.overrides.get("response", {}))
        return {k: v for k, v in response.items() if v is not None}

    def decrypt(self, **params: Any) -> dict[str, Any]:
        return self._answer("Decrypt", params, {"KeyId": "arn:aws:kms:us-east-1:111122223333:key/x"})

    def generate_data_key(self, **params: Any) -> dict[str, Any]:
        return self._answer("GenerateDataKey", params, {"CiphertextBlob": b"blob"})

    def generate_random(self, **params: Any) -> dict[str, Any]:
        return self._answer("GenerateRandom", params, {})


def test_decrypt_sends_recipient_and_unwraps() -> None:
    nsm, kms = RecordingNsm(), FakeKms(secret=b"D" * 32)
    attested = AttestedKms(kms, nsm)
    assert attested.decrypt(b"ciphertext", {"dataset": "d1"}, key_id="alias/x") == b"D" * 32
    op, params = kms.calls[0]
    assert op == "Decrypt"
    assert params["CiphertextBlob"] == b"ciphertext"
    assert params["EncryptionContext"] == {"dataset": "d1"}
    assert params["KeyId"] == "alias/x"
    assert params["Recipient"]["AttestationDocument"] == b"DOC:" + nsm.public_keys[0]


def test_decrypt_without_key_id_omits_it() -> None:
    kms = FakeKms()
    AttestedKms(kms, RecordingNsm()).decrypt(b"c", {})
    assert "KeyId" not in kms.calls[0][1]


def test_every_call_uses_a_fresh_key() -> None:
    nsm = RecordingNsm()
    attested = AttestedKms(FakeKms(), nsm)
    attested.decrypt(b"c", {})
    attested.decrypt(b"c", {})
    assert len(set(nsm.public_keys)) == 2


def test_generate_data_key_and_random() -> None:
    attested = AttestedKms(FakeKms(secret=b"x" * 32), RecordingNsm())
    assert attested.generate_data_key("key", {"a": "b"}) == (b"x" * 32, b"blob")
    attested = AttestedKms(FakeKms(secret=b"r" * 7), RecordingNsm())
    assert attested.generate_random(7) == b"r" * 7


@pytest.mark.parametrize("n", [0, 1025])
def test_generate_random_bounds(n: int) -> None:
    with pytest.raises(KmsValidationError):
        AttestedKms(FakeKms(), RecordingNsm()).generate_random(n)


def test_plaintext_in_response_is_refused() -> None:
    kms = FakeKms(response={"Plaintext": b"leaked"})
    with pytest.raises(KmsResponseError, match="Plaintext"):
        AttestedKms(kms, RecordingNsm()).decrypt(b"c", {})


def test_empty_plaintext_is_tolerated() -> None:
    kms = FakeKms(response={"Plaintext": b""})
    assert AttestedKms(kms, RecordingNsm()).decrypt(b"c", {}) == b"k" * 32


def test_missing_ciphertext_for_recipient() -> None:
    kms = FakeKms(response={"CiphertextForRecipient": None})
    with pytest.raises(KmsResponseError, match="CiphertextForRecipient"):
        AttestedKms(kms, RecordingNsm()).decrypt(b"c", {})


def test_data_key_length_and_blob_checked() -> None:
    with pytest.raises(KmsResponseError, match="16-byte"):
        AttestedKms(FakeKms(secret=b"s" * 16), RecordingNsm()).generate_data_key("k", {})
    with pytest.raises(KmsResponseError, match="CiphertextBlob"):
        AttestedKms(FakeKms(response={"CiphertextBlob": None}), RecordingNsm()).generate_data_key("k", {})


def test_context_must_be_strings() -> None:
    with pytest.raises(KmsValidationError):
        AttestedKms(FakeKms(), RecordingNsm()).decrypt(b"c", {"epsilon": 3.0})  # type: ignore[dict-item]


def test_a_replaced_client_serves_every_later_call() -> None:
    first, second = FakeKms(), FakeKms()
    attested = AttestedKms(first, RecordingNsm())
    attested.decrypt(b"c", {})
    attested.replace_client(second)
    attested.generate_data_key("key", {})
    attested.generate_random(32)
    assert [op for op, _ in first.calls] == ["Decrypt"]
    assert [op for op, _ in second.calls] == ["GenerateDataKey", "GenerateRandom"]


def _client_error(code: str, message: str = "nope") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Decrypt")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("AccessDeniedException", KmsAccessDenied),
        ("InvalidCiphertextException", KmsInvalidCiphertext),
        ("IncorrectKeyException", KmsIncorrectKey),
        ("NotFoundException", KmsNotFound),
        ("UnrecognizedClientException", KmsAuthenticationFailed),
        ("InvalidSignatureException", KmsAuthenticationFailed),
        ("ExpiredTokenException", KmsAuthenticationFailed),
        ("ValidationException", KmsValidationError),
        ("KMSInternalException", KmsUnavailable),
        ("com.amazonaws.kms#AccessDeniedException", KmsAccessDenied),
        ("SomethingNew", KmsRequestFailed),
    ],
)
def test_client_errors_are_typed(code: str, error: type[KmsError]) -> None:
    kms = FakeKms(error=_client_error(code, "User: x is not\nauthorized"))
    with pytest.raises(error) as info:
        AttestedKms(kms, RecordingNsm()).decrypt(b"c", {})
    assert "\n" not in str(info.value) and "Decrypt" in str(info.value)


def test_connection_failure_is_unavailable() -> None:
    kms = FakeKms(error=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(KmsUnavailable):
        AttestedKms(kms, RecordingNsm()).generate_random(4)
