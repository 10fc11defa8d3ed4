"""The KMS operations of the local emulator, independent of HTTP.

Each operation takes the authenticated caller's ARN and the decoded JSON request,
authorises it against the key policy (parsed by parent.kms_policy, decided by
parent.local.kms.policy_eval) and returns the JSON response with bytes values
(the HTTP layer base64-encodes them).
`Recipient` requests are verified against the attestation root given at start-up;
the document's PCRs become `kms:RecipientAttestation:*` condition keys and the
secret is returned only as CMS EnvelopedData to the document's public key.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from enclave.errors import AttestationError
from parent.kms_policy import KeyPolicy, MalformedPolicy, parse_policy
from parent.local.kms import ciphertext
from parent.local.kms.cms_builder import build_recipient_ciphertext
from parent.local.kms.errors import (
    AccessDeniedException,
    AlreadyExistsException,
    IncorrectKeyException,
    InvalidAliasNameException,
    InvalidCiphertextException,
    MalformedPolicyDocumentException,
    NotFoundException,
    SerializationException,
    UnknownOperationException,
    UnsupportedOperationException,
    ValidationException,
)
from parent.local.kms.policy_eval import Decision, RequestContext, evaluate
from parent.local.kms.store import KeyStore, StoredKey

log = logging.getLogger(__name__)

KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
MAX_PLAINTEXT = 4096
MAX_DATA_KEY_BYTES = 1024
MIN_RECIPIENT_RSA_BITS = 2048
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ALIAS_RE = re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$")
_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")
_ASSUMED_ROLE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
_KEY_SPEC_BYTES = {"AES_256": 32, "AES_128": 16}

AttestationVerifier = Callable[[bytes, bytes, datetime], Any]


def _verify_with_enclave_code(document: bytes, root_der: bytes, at: datetime) -> Any:
    # Imported lazily: the emulator only needs attestation code for Recipient requests.
    from parent.verify.attestation import verify_attestation

    return verify_attestation(document, root_der=root_der, at=at)


@dataclass(frozen=True)
class _Recipient:
    public_key: rsa.RSAPublicKey
    condition_keys: dict[str, str]
    module_id: str


def _account_of(arn: str) -> str | None:
    match = _ACCOUNT_IN_ARN.match(arn)
    return match.group(1) if match else None


def _principal_arn_key(arn: str) -> str:
    """aws:PrincipalArn names an assumed role by its role ARN, as IAM does."""
    match = _ASSUMED_ROLE.match(arn)
    if match:
        partition, account, role = match.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return arn


# --- request field helpers ---------------------------------------------------------
def _string(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise ValidationException(f"1 validation error detected: {name} must not be null")
        return None
    if not isinstance(value, str) or not value:
        raise ValidationException(f"{name} must be a non-empty string")
    return value


def _blob(params: Mapping[str, Any], name: str, *, required: bool = False) -> bytes | None:
    value = params.get(name)
    if value is None:
        if required:
            raise ValidationException(f"1 validation error detected: {name} must not be null")
        return None
    if not isinstance(value, str):
        raise SerializationException(f"{name} must be base64 text")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(f"{name} is not valid base64") from None
    if not decoded:
        raise ValidationException(f"{name} must not be empty")
    return decoded


def _int(params: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationException(f"{name} must be an integer in {low}..{high}")
    return value


def _context(params: Mapping[str, Any]) -> dict[str, str]:
    value = params.get("EncryptionContext")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise ValidationException("EncryptionContext must map non-empty strings to strings")
    return dict(value)


class KmsService:
    """KMS semantics over a KeyStore, with key-policy enforcement and attestation."""

    def __init__(
        self,
        store: KeyStore,
        *,
        attestation_root_der: bytes,
        account_id: str,
        region: str,
        clock: Callable[[], datetime] | None = None,
        verify_document: AttestationVerifier | None = None,
        secure_transport: bool = False,
    ) -> None:
        self._store = store
        self._root = attestation_root_der
        self.account_id = account_id
        self.region = region
        self._clock = clock or (lambda: datetime.now(UTC))
        self._verify_document = verify_document or _verify_with_enclave_code
        self._secure = secure_transport
        self._operations: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
            "CreateKey": self.create_key,
            "DescribeKey": self.describe_key,
            "PutKeyPolicy": self.put_key_policy,
            "GetKeyPolicy": self.get_key_policy,
            "CreateAlias": self.create_alias,
            "ListAliases": self.list_aliases,
            "Encrypt": self.encrypt,
            "Decrypt": self.decrypt,
            "GenerateDataKey": self.generate_data_key,
            "GenerateRandom": self.generate_random,
        }

    # --- dispatch ------------------------------------------------------------------
    def handle(self, operation: str, caller_arn: str, params: Mapping[str, Any]) -> dict[str, Any]:
        handler = self._operations.get(operation)
        if handler is None:
            raise UnknownOperationException(f"Operation {operation} is not supported by this emulator")
        if not isinstance(params, Mapping):
            raise SerializationException("request body must be a JSON object")
        return handler(caller_arn, params)

    # --- helpers -------------------------------------------------------------------
    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    def _alias_arn(self, alias: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{alias}"

    def _resolve(self, key_ref: str) -> StoredKey:
        key_id: str | None = None
        prefix = f"arn:aws:kms:{self.region}:{self.account_id}:"
        from_arn = key_ref.startswith(prefix)
        ref = key_ref[len(prefix) :] if from_arn else key_ref
        if ref.startswith("alias/"):
            key_id = self._store.alias_target(ref)
        elif from_arn and ref.startswith("key/"):
            key_id = ref[len("key/") :]
        elif not from_arn and _UUID_RE.match(ref):
            key_id = ref
        key = self._store.get(key_id) if key_id else None
        if key is None:
            raise NotFoundException(f"Key '{key_ref}' does not exist")
        return key

    def _require_own_account(self, caller_arn: str, action: str) -> None:
        if _account_of(caller_arn) != self.account_id:
            raise AccessDeniedException(
                f"User: {caller_arn} is not authorized to perform: {action} in account {self.account_id}"
            )

    def _base_keys(self, caller_arn: str) -> dict[str, str]:
        keys = {
            "aws:PrincipalArn": _principal_arn_key(caller_arn),
            "aws:SecureTransport": "true" if self._secure else "false",
        }
        account = _account_of(caller_arn)
        if account:
            keys["kms:CallerAccount"] = account
            keys["aws:PrincipalAccount"] = account
        return keys

    def _authorize(
        self,
        operation: str,
        caller_arn: str,
        key: StoredKey,
        extra_keys: Mapping[str, str] | None = None,
        policy: KeyPolicy | None = None,
    ) -> None:
        action = f"kms:{operation}"
        keys = self._base_keys(caller_arn)
        keys.update(extra_keys or {})
        resource = self.key_arn(key.key_id)
        decision = evaluate(
            policy or parse_policy(key.policy),
            RequestContext(principal_arn=caller_arn, action=action, resource=resource, keys=keys),
        )
        log.info("KMS %s by %s on key %s: %s", operation, caller_arn, key.key_id, decision.value)
        if decision is Decision.EXPLICIT_DENY:
            raise AccessDeniedException(
                f"User: {caller_arn} is not authorized to perform: {action} on resource: "
                f"{resource} with an explicit deny in a resource-based policy"
            )
        if decision is not Decision.ALLOW:
            raise AccessDeniedException(
                f"User: {caller_arn} is not authorized to perform: {action} on resource: "
                f"{resource} because no resource-based policy allows the {action} action"
            )

    def _parse_new_policy(self, text: str | None, caller_arn: str, bypass: Any) -> str:
        if text is None:
            text = self._default_policy()
        try:
            policy = parse_policy(text)
        except MalformedPolicy as exc:
            raise MalformedPolicyDocumentException(str(exc)) from None
        if bypass is not True:
            # KMS's lockout safety check: the caller must still be able to change the policy.
            probe = RequestContext(
                principal_arn=caller_arn,
                action="kms:PutKeyPolicy",
                resource=self.key_arn("00000000-0000-0000-0000-000000000000"),
                keys=self._base_keys(caller_arn),
            )
            probe_any = RequestContext(
                principal_arn=caller_arn,
                action="kms:PutKeyPolicy",
                resource="*",
                keys=self._base_keys(caller_arn),
            )
            if evaluate(policy, probe) is not Decision.ALLOW and evaluate(policy, probe_any) is not Decision.ALLOW:
                raise MalformedPolicyDocumentException(
                    "The new key policy will not allow you to update the key policy in the future."
                )
        return text

    def _default_policy(self) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Id": "key-default-1",
                "Statement": [
                    {
                        "Sid": "Enable IAM User Permissions",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{self.account_id}:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            },
            indent=2,
        )

    def _recipient(self, params: Mapping[str, Any]) -> _Recipient | None:
        raw = params.get("Recipient")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ValidationException("Recipient must be an object")
        algorithm = raw.get("KeyEncryptionAlgorithm", KEY_ENCRYPTION_ALGORITHM)
        if algorithm != KEY_ENCRYPTION_ALGORITHM:
            raise ValidationException(f"KeyEncryptionAlgorithm must be {KEY_ENCRYPTION_ALGORITHM}")
        document = _blob(raw, "AttestationDocument", required=True) or b""
        try:
            verified = self._verify_document(document, self._root, self._clock())
        except AttestationError as exc:
            log.info("KMS Recipient attestation rejected: %s", type(exc).__name__)
            raise ValidationException(f"The attestation document is not valid: {exc}") from None
        if not verified.public_key:
            raise ValidationException("The attestation document has no public key")
        try:
            public_key = load_der_public_key(verified.public_key)
        except ValueError:
            raise ValidationException("The attestation document public key is not DER SubjectPublicKeyInfo") from None
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RECIPIENT_RSA_BITS:
            raise ValidationException("The attestation document public key must be RSA-2048 or larger")
        keys: dict[str, str] = {}
        pcrs: Mapping[int, bytes] = verified.pcrs
        for index, value in pcrs.items():
            keys[f"kms:RecipientAttestation:PCR{index}"] = value.hex()
        if 0 in pcrs:
            keys["kms:RecipientAttestation:ImageSha384"] = pcrs[0].hex()
        return _Recipient(public_key=public_key, condition_keys=keys, module_id=verified.module_id)

    @staticmethod
    def _context_keys(context: Mapping[str, str]) -> dict[str, str]:
        return {f"kms:EncryptionContext:{k}": v for k, v in context.items()}

    def _metadata(self, key: StoredKey) -> dict[str, Any]:
        return {
            "AWSAccountId": self.account_id,
            "KeyId": key.key_id,
            "Arn": self.key_arn(key.key_id),
            "CreationDate": key.created,
            "Enabled": key.enabled,
            "Description": key.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "Enabled" if key.enabled else "Disabled",
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": SYMMETRIC_DEFAULT,
            "KeySpec": SYMMETRIC_DEFAULT,
            "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
            "MultiRegion": False,
        }

    @staticmethod
    def _check_algorithm(params: Mapping[str, Any]) -> None:
        algorithm = params.get("EncryptionAlgorithm")
        if algorithm not in (None, SYMMETRIC_DEFAULT):
            raise ValidationException("EncryptionAlgorithm must be SYMMETRIC_DEFAULT for this key")

    # --- operations ----------------------------------------------------------------
    def create_key(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._require_own_account(caller, "kms:CreateKey")
        for name in ("KeySpec", "CustomerMasterKeySpec"):
            if params.get(name) not in (None, SYMMETRIC_DEFAULT):
                raise UnsupportedOperationException(f"{name} {params.get(name)} is not supported by this emulator")
        if params.get("KeyUsage") not in (None, "ENCRYPT_DECRYPT"):
            raise UnsupportedOperationException("only ENCRYPT_DECRYPT keys are supported by this emulator")
        if params.get("Origin") not in (None, "AWS_KMS"):
            raise UnsupportedOperationException("only AWS_KMS key origin is supported by this emulator")
        policy = self._parse_new_policy(
            _string(params, "Policy"), caller, params.get("BypassPolicyLockoutSafetyCheck")
        )
        description = params.get("Description") or ""
        if not isinstance(description, str):
            raise ValidationException("Description must be a string")
        key = self._store.create(description, policy)
        log.info("KMS CreateKey by %s: created %s", caller, key.key_id)
        return {"KeyMetadata": self._metadata(key)}

    def describe_key(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        key = self._resolve(_string(params, "KeyId", required=True) or "")
        self._authorize("DescribeKey", caller, key)
        return {"KeyMetadata": self._metadata(key)}

    def put_key_policy(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        key = self._resolve(_string(params, "KeyId", required=True) or "")
        if params.get("PolicyName", "default") != "default":
            raise ValidationException("PolicyName must be 'default'")
        self._authorize("PutKeyPolicy", caller, key)
        text = self._parse_new_policy(
            _string(params, "Policy", required=True), caller, params.get("BypassPolicyLockoutSafetyCheck")
        )
        self._store.set_policy(key.key_id, text)
        return {}

    def get_key_policy(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        key = self._resolve(_string(params, "KeyId", required=True) or "")
        if params.get("PolicyName", "default") != "default":
            raise NotFoundException("No such policy exists")
        self._authorize("GetKeyPolicy", caller, key)
        return {"Policy": key.policy, "PolicyName": "default"}

    def create_alias(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._require_own_account(caller, "kms:CreateAlias")
        alias = _string(params, "AliasName", required=True) or ""
        if not _ALIAS_RE.match(alias) or alias.startswith("alias/aws/"):
            raise InvalidAliasNameException(f"Alias {alias} must match alias/[a-zA-Z0-9/_-]+ and not use alias/aws/")
        target = _string(params, "TargetKeyId", required=True) or ""
        if "alias/" in target:
            raise ValidationException("TargetKeyId must be a key id or key ARN, not an alias")
        key = self._resolve(target)
        self._authorize("CreateAlias", caller, key)
        if not self._store.add_alias(alias, key.key_id):
            raise AlreadyExistsException(f"An alias with the name {self._alias_arn(alias)} already exists")
        return {}

    def list_aliases(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._require_own_account(caller, "kms:ListAliases")
        only = params.get("KeyId")
        only_id = self._resolve(only).key_id if isinstance(only, str) and only else None
        entries = [
            {
                "AliasName": alias,
                "AliasArn": self._alias_arn(alias),
                "TargetKeyId": key_id,
                "CreationDate": created,
                "LastUpdatedDate": created,
            }
            for alias, key_id, created in self._store.aliases()
            if only_id is None or key_id == only_id
        ]
        return {"Aliases": entries, "Truncated": False}

    def encrypt(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if "Recipient" in params:
            raise ValidationException("Recipient is not supported for Encrypt")
        key = self._resolve(_string(params, "KeyId", required=True) or "")
        plaintext = _blob(params, "Plaintext", required=True) or b""
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValidationException(f"Plaintext must be at most {MAX_PLAINTEXT} bytes")
        self._check_algorithm(params)
        context = _context(params)
        self._authorize("Encrypt", caller, key, self._context_keys(context))
        return {
            "CiphertextBlob": ciphertext.seal(key.material, key.key_id, plaintext, context),
            "KeyId": self.key_arn(key.key_id),
            "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
        }

    def decrypt(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        blob = _blob(params, "CiphertextBlob", required=True) or b""
        self._check_algorithm(params)
        context = _context(params)
        blob_key_id = ciphertext.key_id_of(blob)
        key = self._store.get(blob_key_id)
        if key is None:
            raise InvalidCiphertextException("The ciphertext refers to a key that does not exist.")
        requested = _string(params, "KeyId")
        if requested is not None and self._resolve(requested).key_id != key.key_id:
            raise IncorrectKeyException(
                "The key ID in the request does not identify the key that encrypted the ciphertext."
            )
        recipient = self._recipient(params)
        extra = self._context_keys(context)
        if recipient is not None:
            extra.update(recipient.condition_keys)
        self._authorize("Decrypt", caller, key, extra)
        plaintext = ciphertext.unseal(key.material, blob, context)
        response: dict[str, Any] = {"KeyId": self.key_arn(key.key_id), "EncryptionAlgorithm": SYMMETRIC_DEFAULT}
        return self._deliver(response, plaintext, recipient)

    def generate_data_key(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        key = self._resolve(_string(params, "KeyId", required=True) or "")
        size = _int(params, "NumberOfBytes", 1, MAX_DATA_KEY_BYTES)
        spec = params.get("KeySpec")
        if (size is None) == (spec is None):
            raise ValidationException("Specify exactly one of NumberOfBytes and KeySpec")
        if spec is not None:
            if spec not in _KEY_SPEC_BYTES:
                raise ValidationException("KeySpec must be AES_256 or AES_128")
            size = _KEY_SPEC_BYTES[spec]
        assert size is not None
        context = _context(params)
        recipient = self._recipient(params)
        extra = self._context_keys(context)
        if recipient is not None:
            extra.update(recipient.condition_keys)
        self._authorize("GenerateDataKey", caller, key, extra)
        data_key = os.urandom(size)
        response: dict[str, Any] = {
            "CiphertextBlob": ciphertext.seal(key.material, key.key_id, data_key, context),
            "KeyId": self.key_arn(key.key_id),
        }
        return self._deliver(response, data_key, recipient)

    def generate_random(self, caller: str, params: Mapping[str, Any]) -> dict[str, Any]:
        size = _int(params, "NumberOfBytes", 1, MAX_DATA_KEY_BYTES)
        if size is None:
            raise ValidationException("NumberOfBytes is required")
        if params.get("CustomKeyStoreId") is not None:
            raise UnsupportedOperationException("custom key stores are not supported by this emulator")
        recipient = self._recipient(params)
        log.info("KMS GenerateRandom by %s: allow", caller)
        return self._deliver({}, os.urandom(size), recipient)

    @staticmethod
    def _deliver(response: dict[str, Any], secret: bytes, recipient: _Recipient | None) -> dict[str, Any]:
        if recipient is None:
            response["Plaintext"] = secret
        else:
            response["CiphertextForRecipient"] = build_recipient_ciphertext(secret, recipient.public_key)
        return response


def new_request_id() -> str:
    return str(uuid.uuid4())
