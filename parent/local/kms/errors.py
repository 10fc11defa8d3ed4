"""KMS API errors raised by the local emulator; each maps to one wire `__type`.

The emulator answers them as `{"__type": aws_type, "message": ...}` with the HTTP
status below, exactly the shape botocore turns into a ClientError. `aws_type` is
KMS's error name; `code` stays Hermetic's family code ("kms").
"""
from __future__ import annotations

from enclave.errors import KmsError


class KmsApiError(KmsError):
    """Base: an error the emulator reports to the caller over the KMS protocol."""

    aws_type = "KMSInternalException"
    status = 500


class _ClientFault(KmsApiError):
    status = 400


class AccessDeniedException(_ClientFault):
    aws_type = "AccessDeniedException"


class NotFoundException(_ClientFault):
    aws_type = "NotFoundException"


class InvalidCiphertextException(_ClientFault):
    aws_type = "InvalidCiphertextException"


class IncorrectKeyException(_ClientFault):
    aws_type = "IncorrectKeyException"


class ValidationException(_ClientFault):
    aws_type = "ValidationException"


class SerializationException(_ClientFault):
    aws_type = "SerializationException"


class UnknownOperationException(_ClientFault):
    aws_type = "UnknownOperationException"


class MalformedPolicyDocumentException(_ClientFault):
    aws_type = "MalformedPolicyDocumentException"


class AlreadyExistsException(_ClientFault):
    aws_type = "AlreadyExistsException"


class InvalidAliasNameException(_ClientFault):
    aws_type = "InvalidAliasNameException"


class InvalidArnException(_ClientFault):
    aws_type = "InvalidArnException"


class UnsupportedOperationException(_ClientFault):
    aws_type = "UnsupportedOperationException"


class UnrecognizedClientException(_ClientFault):
    aws_type = "UnrecognizedClientException"


class InvalidSignatureException(_ClientFault):
    aws_type = "InvalidSignatureException"


class IncompleteSignatureException(_ClientFault):
    aws_type = "IncompleteSignatureException"


class MissingAuthenticationTokenException(_ClientFault):
    aws_type = "MissingAuthenticationTokenException"


class ExpiredTokenException(_ClientFault):
    """A session token past its expiration; KMS answers exactly this (HTTP 400)."""

    aws_type = "ExpiredTokenException"
