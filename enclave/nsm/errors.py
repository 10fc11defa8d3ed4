"""Errors of the NSM layer: one type per NSM error code, plus local failures.

The NSM answers a failed request with an `ErrorCode` (aws-nitro-enclaves-nsm-api,
src/api/mod.rs); each code maps to its own exception type so callers can react to,
say, a read-only PCR without parsing messages.
"""
from __future__ import annotations

from enclave.errors import NsmError

__all__ = [
    "NsmBufferTooSmall",
    "NsmClosed",
    "NsmInputTooLarge",
    "NsmInternalError",
    "NsmInvalidArgument",
    "NsmInvalidIndex",
    "NsmInvalidOperation",
    "NsmInvalidResponse",
    "NsmMalformedResponse",
    "NsmReadOnlyIndex",
    "NsmRequestError",
    "NsmUnavailable",
]


class NsmUnavailable(NsmError):
    """No NSM can be reached: there is no /dev/nsm, or it failed to open."""


class NsmClosed(NsmError):
    """The NSM handle was used after close()."""


class NsmMalformedResponse(NsmError):
    """The NSM's answer is not a well-formed response (bad CBOR or bad shape)."""


class NsmRequestError(NsmError):
    """The NSM answered a request with an error code."""

    #: Name of the NSM ErrorCode variant this class stands for.
    code_name: str = "InternalError"


class NsmInvalidArgument(NsmRequestError):
    code_name = "InvalidArgument"


class NsmInvalidIndex(NsmRequestError):
    code_name = "InvalidIndex"


class NsmInvalidResponse(NsmRequestError):
    code_name = "InvalidResponse"


class NsmReadOnlyIndex(NsmRequestError):
    code_name = "ReadOnlyIndex"


class NsmInvalidOperation(NsmRequestError):
    code_name = "InvalidOperation"


class NsmBufferTooSmall(NsmRequestError):
    code_name = "BufferTooSmall"


class NsmInputTooLarge(NsmRequestError):
    code_name = "InputTooLarge"


class NsmInternalError(NsmRequestError):
    code_name = "InternalError"
