"""boto3, unchanged, against the KMS emulator: policies, contexts, attestation, CMS."""
from __future__ import annotations

import base64
import datetime
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from enclave.errors import ConfigError
from enclave.hazmat.cms import open_recipient_ciphertext
from enclave.kms.attested import AttestedKms
from enclave.kms.errors import KmsAccessDenied, KmsInvalidCiphertext, KmsValidationError
from parent.local.kms import KmsEmulator
from parent.local.mock_nsm import MockNsm
from parent.policy_render import render_policy

from .conftest import (
    BAD_PCRS,
    CREDENTIALS,
    GOOD_PCRS,
    MODEL_OWNER_ARN,
    OWNER_ARN,
    PARENT_ROLE_ARN,
    make_client,
    pcr,
    policy_templates,
    principals,
)

CONTEXT = {"dataset": "fmnist-v1", "owner": "hospital-a", "max_epsilon": "3.0", "delta": "1e-5"}


def _measurements(pcrs: dict[int, bytes] = GOOD_PCRS, pcr8: bytes | None = None) -> dict[str, str]:
    out = {f"PCR{i}": v.hex() for i, v in pcrs.items()}
    if pcr8 is not None:
        out["PCR8"] = pcr8.hex()
    return out


def _data_owner_key(clients: dict[str, Any], pcr8: bytes | None = None) -> str:
    policy = render_policy(
        policy_templates() / "data-owner.template.json",
        _measurements(pcr8=pcr8),
        {"OWNER_ARN": OWNER_ARN, "PARENT_ROLE_ARN": PARENT_ROLE_ARN},
    )
    meta = clients["owner"].create_key(Policy=json.dumps(policy), Description="dataset key")["KeyMetadata"]
    return str(meta["KeyId"])


def _code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def _recipient(nsm: MockNsm) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, {"AttestationDocument": nsm.attest(public_key=spki), "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}


# --- keys, policies, aliases ------------------------------------------------------------
def test_create_key_with_rendered_policy(clients: dict[str, Any]) -> None:
    key_id = _data_owner_key(clients)
    meta = clients["owner"].describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    assert meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert isinstance(meta["CreationDate"], datetime.datetime)
    stored = json.loads(clients["owner"].get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert stored["Id"] == "hermetic-data-owner"
    with pytest.raises(ClientError) as info:
        clients["parent"].describe_key(KeyId=key_id)
    assert _code(info) == "AccessDeniedException"


def test_unknown_key(clients: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as info:
        clients["owner"].describe_key(KeyId="1234abcd-12ab-34cd-56ef-1234567890ab")
    assert _code(info) == "NotFoundException"


def test_aliases(clients: dict[str, Any]) -> None:
    key_id = _data_owner_key(clients)
    clients["owner"].create_alias(AliasName="alias/hospital-a", TargetKeyId=key_id)
    assert clients["owner"].describe_key(KeyId="alias/hospital-a")["KeyMetadata"]["KeyId"] == key_id
    alias_arn = "arn:aws:kms:us-east-1:111122223333:alias/hospital-a"
    assert clients["owner"].describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == key_id
    listed = clients["owner"].list_aliases(KeyId=key_id)["Aliases"]
    assert [(a["AliasName"], a["TargetKeyId"], a["AliasArn"]) for a in listed] == [("alias/hospital-a", key_id, alias_arn)]
    with pytest.raises(ClientError) as info:
        clients["owner"].create_alias(AliasName="alias/hospital-a", TargetKeyId=key_id)
    assert _code(info) == "AlreadyExistsException"
    with pytest.raises(ClientError) as info:
        clients["owner"].create_alias(AliasName="alias/aws/reserved", TargetKeyId=key_id)
    assert _code(info) == "InvalidAliasNameException"
    with pytest.raises(ClientError) as info:
        clients["parent"].create_alias(AliasName="alias/parent-made", TargetKeyId=key_id)
    assert _code(info) == "AccessDeniedException"


def test_policy_updates_and_lockout_check(clients: dict[str, Any]) -> None:
    key_id = _data_owner_key(clients)
    lockout = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": PARENT_ROLE_ARN}, "Action": "kms:*", "Resource": "*"}]}
    with pytest.raises(ClientError) as info:
        clients["owner"].put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(lockout))
    assert _code(info) == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as info:
        clients["parent"].put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(lockout))
    assert _code(info) == "AccessDeniedException"
    with pytest.raises(ClientError) as info:
        clients["owner"].create_key(Policy='{"Statement": "nope"}')
    assert _code(info) == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as info:
        clients["outsider"].create_key()
    assert _code(info) == "AccessDeniedException"


# --- seal side: GenerateDataKey / Encrypt with encryption context --------------------------
def test_generate_data_key_and_context_binding(clients: dict[str, Any]) -> None:
    key_id = clients["owner"].create_key()["KeyMetadata"]["KeyId"]  # default policy: account root
    made = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, KeySpec="AES_256")
    assert len(made["Plaintext"]) == 32 and made["KeyId"].endswith(key_id)
    back = clients["owner"].decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=dict(reversed(CONTEXT.items())))
    assert back["Plaintext"] == made["Plaintext"]
    for wrong in ({}, {**CONTEXT, "max_epsilon": "30.0"}, {**CONTEXT, "extra": "x"}):
        with pytest.raises(ClientError) as info:
            clients["owner"].decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=wrong)
        assert _code(info) == "InvalidCiphertextException"
    encrypted = clients["owner"].encrypt(KeyId=key_id, Plaintext=b"hello", EncryptionContext={"a": "b"})
    assert clients["owner"].decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"a": "b"})["Plaintext"] == b"hello"
    assert len(clients["owner"].generate_data_key(KeyId=key_id, KeySpec="AES_128")["Plaintext"]) == 16
    assert len(clients["owner"].generate_data_key(KeyId=key_id, NumberOfBytes=64)["Plaintext"]) == 64
    with pytest.raises(ClientError) as info:
        clients["owner"].generate_data_key(KeyId=key_id, NumberOfBytes=32, KeySpec="AES_256")
    assert _code(info) == "ValidationException"


def test_decrypt_with_other_key_id_is_incorrect_key(clients: dict[str, Any]) -> None:
    first = clients["owner"].create_key()["KeyMetadata"]["KeyId"]
    second = clients["owner"].create_key()["KeyMetadata"]["KeyId"]
    blob = clients["owner"].encrypt(KeyId=first, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as info:
        clients["owner"].decrypt(CiphertextBlob=blob, KeyId=second)
    assert _code(info) == "IncorrectKeyException"
    with pytest.raises(ClientError) as info:
        clients["owner"].decrypt(CiphertextBlob=b"HKC1" + b"0" * 80)
    assert _code(info) == "InvalidCiphertextException"


def test_owner_seals_but_never_decrypts(clients: dict[str, Any]) -> None:
    key_id = _data_owner_key(clients)
    made = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)
    with pytest.raises(ClientError) as info:
        clients["owner"].decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert _code(info) == "AccessDeniedException"


def test_encrypt_rejects_recipient(clients: dict[str, Any], emulator: KmsEmulator, make_nsm: Callable[..., MockNsm]) -> None:
    key_id = clients["owner"].create_key()["KeyMetadata"]["KeyId"]
    _, recipient = _recipient(make_nsm())
    # botocore's model has no Recipient on Encrypt, so boto3 refuses before sending...
    with pytest.raises(ParamValidationError):
        clients["owner"].encrypt(KeyId=key_id, Plaintext=b"x", Recipient=recipient)
    # ...and the emulator refuses a hand-made, correctly signed request too.
    body = {"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode(), "Recipient": {
        "AttestationDocument": base64.b64encode(recipient["AttestationDocument"]).decode(),
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}
    status, answer = _raw_call(emulator.url, "Encrypt", body)
    assert status == 400 and answer["__type"] == "ValidationException"


def _raw_call(url: str, operation: str, body: dict[str, Any], who: str = "owner") -> tuple[int, dict[str, Any]]:
    akid, secret, token = CREDENTIALS[who]
    request = AWSRequest(method="POST", url=url + "/", data=json.dumps(body).encode(), headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{operation}"})
    SigV4Auth(Credentials(akid, secret, token), "kms", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(url + "/", data=request.body, headers=dict(request.headers), method="POST")
    try:
        with urllib.request.urlopen(prepared, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_protocol_errors(emulator: KmsEmulator) -> None:
    status, answer = _raw_call(emulator.url, "Sign", {"KeyId": "x"})
    assert status == 400 and answer["__type"] == "UnknownOperationException"
    status, answer = _raw_call(emulator.url, "GenerateRandom", {"NumberOfBytes": 0})
    assert answer["__type"] == "ValidationException"
    status, answer = _raw_call(emulator.url, "Decrypt", {"CiphertextBlob": "***"})
    assert answer["__type"] == "SerializationException"


# --- authentication ------------------------------------------------------------------------
def test_unknown_access_key_and_bad_secret(emulator: KmsEmulator) -> None:
    import boto3

    for akid, secret, code in (("AKIDNOBODY", "x", "UnrecognizedClientException"),
                               ("AKIDDATAOWNER", "wrong", "InvalidSignatureException")):
        client = boto3.session.Session().client(
            "kms", endpoint_url=emulator.url, region_name="us-east-1",
            aws_access_key_id=akid, aws_secret_access_key=secret)
        with pytest.raises(ClientError) as info:
            client.generate_random(NumberOfBytes=8)
        assert _code(info) == code


def test_assumed_role_credentials_expire_as_aws_reports_it(tmp_path: Path, local_ca: Any) -> None:
    import boto3

    # The emulator's clock runs ahead of the client's by `ahead`, within the 5 minutes
    # of skew SigV4 tolerates, so credentials can expire without anyone waiting.
    ahead = [datetime.timedelta(0)]

    def clock() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + ahead[0]

    with KmsEmulator(tmp_path, principals(), local_ca.root_der, clock=clock) as running:
        creds = running.assume_role(PARENT_ROLE_ARN, "i-0abc123", lifetime=datetime.timedelta(minutes=2))
        assert creds.access_key_id.startswith("ASIA")
        assert creds.arn == "arn:aws:sts::111122223333:assumed-role/hermetic-parent/i-0abc123"
        assert creds.secret_access_key not in repr(creds) and creds.session_token not in repr(creds)
        client = boto3.session.Session().client(
            "kms", endpoint_url=running.url, region_name="us-east-1", aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key, aws_session_token=creds.session_token)
        assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        ahead[0] = datetime.timedelta(minutes=2, seconds=1)
        with pytest.raises(ClientError) as info:
            client.generate_random(NumberOfBytes=8)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert info.value.response["Error"] == {
            "Code": "ExpiredTokenException", "Message": "The security token included in the request is expired",
        }
        fresh = running.assume_role(PARENT_ROLE_ARN, "i-0abc123")
        assert fresh.access_key_id != creds.access_key_id and fresh.expiration > clock()
        renewed = boto3.session.Session().client(
            "kms", endpoint_url=running.url, region_name="us-east-1", aws_access_key_id=fresh.access_key_id,
            aws_secret_access_key=fresh.secret_access_key, aws_session_token=fresh.session_token)
        assert len(renewed.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    with pytest.raises(ConfigError, match="not an IAM role ARN"):
        running.assume_role(OWNER_ARN)


# --- the enclave side: Recipient --------------------------------------------------------------
def test_parent_plain_decrypt_is_denied(clients: dict[str, Any]) -> None:
    key_id = _data_owner_key(clients)
    blob = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)["CiphertextBlob"]
    with pytest.raises(ClientError) as info:
        clients["parent"].decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert _code(info) == "AccessDeniedException"
    assert "explicit deny" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        clients["parent"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)
    assert _code(info) == "AccessDeniedException"


def test_recipient_decrypt_returns_cms_for_the_enclave(
    clients: dict[str, Any], make_nsm: Callable[..., MockNsm], caplog: pytest.LogCaptureFixture
) -> None:
    key_id = _data_owner_key(clients)
    made = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)
    private_key, recipient = _recipient(make_nsm())
    with caplog.at_level(logging.DEBUG):
        answer = clients["parent"].decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=CONTEXT,
                                           Recipient=recipient)
    assert "Plaintext" not in answer or not answer["Plaintext"]
    assert open_recipient_ciphertext(answer["CiphertextForRecipient"], private_key) == made["Plaintext"]
    # Neither the data key nor its base64 form is ever logged.
    assert made["Plaintext"].hex() not in caplog.text
    assert base64.b64encode(made["Plaintext"]).decode() not in caplog.text
    assert "Decrypt" in caplog.text and "allow" in caplog.text


def test_attested_kms_end_to_end(clients: dict[str, Any], make_nsm: Callable[..., MockNsm]) -> None:
    key_id = _data_owner_key(clients)
    made = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)
    enclave = AttestedKms(clients["parent"], make_nsm())
    assert enclave.decrypt(made["CiphertextBlob"], CONTEXT, key_id=key_id) == made["Plaintext"]
    with pytest.raises(KmsInvalidCiphertext):
        enclave.decrypt(made["CiphertextBlob"], {**CONTEXT, "max_epsilon": "100"})
    data_key, blob = enclave.generate_data_key(key_id, CONTEXT)
    assert enclave.decrypt(blob, CONTEXT) == data_key
    assert len(enclave.generate_random(48)) == 48


def test_wrong_image_is_denied(clients: dict[str, Any], make_nsm: Callable[..., MockNsm]) -> None:
    key_id = _data_owner_key(clients)
    blob = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)["CiphertextBlob"]
    with pytest.raises(KmsAccessDenied, match="no resource-based policy allows"):
        AttestedKms(clients["parent"], make_nsm(BAD_PCRS)).decrypt(blob, CONTEXT)


def test_pcr8_pinning(clients: dict[str, Any], make_nsm: Callable[..., MockNsm]) -> None:
    signer = pcr("signing certificate")
    key_id = _data_owner_key(clients, pcr8=signer)
    blob = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)["CiphertextBlob"]
    with pytest.raises(KmsAccessDenied, match="explicit deny"):
        AttestedKms(clients["parent"], make_nsm()).decrypt(blob, CONTEXT)  # unsigned: PCR8 zero
    signed = AttestedKms(clients["parent"], make_nsm({**GOOD_PCRS, 8: signer}))
    assert len(signed.decrypt(blob, CONTEXT)) == 32


def test_tampered_or_foreign_document_rejected(
    clients: dict[str, Any], make_nsm: Callable[..., MockNsm], other_ca: Any
) -> None:
    key_id = _data_owner_key(clients)
    blob = clients["owner"].generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, NumberOfBytes=32)["CiphertextBlob"]
    _, recipient = _recipient(make_nsm())
    document = bytearray(recipient["AttestationDocument"])
    document[-1] ^= 0x01  # last byte of the ES384 signature
    with pytest.raises(ClientError) as info:
        clients["parent"].decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT,
                                  Recipient={**recipient, "AttestationDocument": bytes(document)})
    assert _code(info) == "ValidationException" and "attestation" in info.value.response["Error"]["Message"]
    with pytest.raises(KmsValidationError, match="attestation"):
        AttestedKms(clients["parent"], make_nsm(ca=other_ca)).decrypt(blob, CONTEXT)


def test_generate_random_plain_and_for_recipient(clients: dict[str, Any], make_nsm: Callable[..., MockNsm]) -> None:
    assert len(clients["parent"].generate_random(NumberOfBytes=20)["Plaintext"]) == 20
    private_key, recipient = _recipient(make_nsm())
    answer = clients["parent"].generate_random(NumberOfBytes=20, Recipient=recipient)
    assert not answer.get("Plaintext")
    assert len(open_recipient_ciphertext(answer["CiphertextForRecipient"], private_key)) == 20


def test_model_owner_policy(clients: dict[str, Any], make_nsm: Callable[..., MockNsm]) -> None:
    policy = render_policy(
        policy_templates() / "model-owner.template.json",
        _measurements(),
        {"MODEL_OWNER_ARN": MODEL_OWNER_ARN, "PARENT_ROLE_ARN": PARENT_ROLE_ARN},
    )
    key_id = clients["model_owner"].create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    enclave = AttestedKms(clients["parent"], make_nsm())
    checkpoint_key, blob = enclave.generate_data_key(key_id, {"job": "j1"})
    assert clients["model_owner"].decrypt(CiphertextBlob=blob, EncryptionContext={"job": "j1"})["Plaintext"] == checkpoint_key
    # The attested enclave reopens its own checkpoints to resume; only as CiphertextForRecipient.
    assert enclave.decrypt(blob, {"job": "j1"}) == checkpoint_key
    with pytest.raises(ClientError) as plain:
        clients["parent"].decrypt(CiphertextBlob=blob, EncryptionContext={"job": "j1"})
    assert _code(plain) == "AccessDeniedException"
    with pytest.raises(KmsAccessDenied):
        AttestedKms(clients["parent"], make_nsm(BAD_PCRS)).decrypt(blob, {"job": "j1"})
    with pytest.raises(KmsAccessDenied):
        AttestedKms(clients["parent"], make_nsm(BAD_PCRS)).generate_data_key(key_id, {"job": "j1"})


# --- lifecycle ----------------------------------------------------------------------------
def test_restarted_emulator_still_decrypts(tmp_path: Path, local_ca: Any) -> None:
    with KmsEmulator(tmp_path, principals(), local_ca.root_der) as first:
        client = make_client(first.url, "owner")
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=key_id, Plaintext=b"persisted", EncryptionContext={"a": "b"})["CiphertextBlob"]
    with KmsEmulator(tmp_path, principals(), local_ca.root_der) as second:
        client = make_client(second.url, "owner")
        assert client.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["Plaintext"] == b"persisted"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls(tmp_path: Path, local_ca: Any) -> None:
    cert, key = _self_signed(tmp_path)
    with KmsEmulator(tmp_path / "state", principals(), local_ca.root_der, tls=(cert, key)) as running:
        assert running.url.startswith("https://127.0.0.1:")
        client = make_client(running.url, "owner", verify=str(cert))
        assert len(client.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
