"""KMS API errors raised by the local emulator; each maps to one wire `__type`.

The emulator answers them as `{"__type": code, "message": ...}` with the HTTP
status below, exactly the shape botocore turns into a ClientError.
"""
from __future__ import annotations

from enclave.errors import KmsError


class KmsApiError(KmsError):
    """Base: an error the emulator reports to the caller over the KMS protocol."""

    code = "KMSInternalException"
    status = 500


class _ClientFault(KmsApiError):
    status = 400


class AccessDeniedException(_ClientFault):
    code = "AccessDeniedException"


class NotFoundException(_ClientFault):
    code = "NotFoundException"


class InvalidCiphertextException(_ClientFault):
    code = "InvalidCiphertextException"


class IncorrectKeyException(_ClientFault):
    code = "IncorrectKeyException"


class ValidationException(_ClientFault):
    code = "ValidationException"


class SerializationException(_ClientFault):
    code = "SerializationException"


class UnknownOperationException(_ClientFault):
    code = "UnknownOperationException"


class MalformedPolicyDocumentException(_ClientFault):
    code = "MalformedPolicyDocumentException"


class AlreadyExistsException(_ClientFault):
    code = "AlreadyExistsException"


class InvalidAliasNameException(_ClientFault):
    code = "InvalidAliasNameException"


class InvalidArnException(_ClientFault):
    code = "InvalidArnException"


class UnsupportedOperationException(_ClientFault):
    code = "UnsupportedOperationException"


class UnrecognizedClientException(_ClientFault):
    code = "UnrecognizedClientException"


class InvalidSignatureException(_ClientFault):
    code = "InvalidSignatureException"


class IncompleteSignatureException(_ClientFault):
    code = "IncompleteSignatureException"


class MissingAuthenticationTokenException(_ClientFault):
    code = "MissingAuthenticationTokenException"
