"""NSM request/response messages and their CBOR encoding.

The encoding is the one aws-nitro-enclaves-nsm-api (src/api/mod.rs) produces with
serde_cbor's defaults: Rust enums are externally tagged, so

* a unit variant is a bare text string: ``"GetRandom"``, ``"DescribeNSM"``, ``"LockPCR"``;
* a struct variant is a one-entry map from the variant name to a map of its fields,
  in declaration order: ``{"DescribePCR": {"index": 0}}``;
* a newtype variant maps the name to the inner value: ``{"Error": "InvalidIndex"}``;
* ``Option::None`` is CBOR null, byte vectors are byte strings, u16 are unsigned ints,
  ``BTreeSet<u16>`` is an array in ascending order.

Requests are limited to ``NSM_REQUEST_MAX_SIZE`` encoded bytes, as the driver does
(src/driver/mod.rs): anything larger is refused with InputTooLarge before it is sent.
Decoding is strict about the types of known fields and ignores unknown ones (serde's
default), and raises only `NsmError` subclasses, whatever the input.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2

from enclave.errors import NsmError
from enclave.hazmat.cbor import strict_loads
from enclave.nsm.errors import (
    NsmBufferTooSmall,
    NsmInputTooLarge,
    NsmInternalError,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmInvalidOperation,
    NsmInvalidResponse,
    NsmMalformedResponse,
    NsmReadOnlyIndex,
    NsmRequestError,
)

__all__ = [
    "NSM_REQUEST_MAX_SIZE",
    "NSM_RESPONSE_MAX_SIZE",
    "AttestationRequest",
    "AttestationResponse",
    "DescribeNsmRequest",
    "DescribeNsmResponse",
    "DescribePcrRequest",
    "DescribePcrResponse",
    "Digest",
    "ErrorCode",
    "ErrorResponse",
    "ExtendPcrRequest",
    "ExtendPcrResponse",
    "GetRandomRequest",
    "GetRandomResponse",
    "LockPcrRequest",
    "LockPcrResponse",
    "LockPcrsRequest",
    "LockPcrsResponse",
    "Request",
    "Response",
    "decode_response",
    "encode_request",
    "error_class",
    "expect_response",
]

# Limits of the driver (src/driver/mod.rs, linux include/uapi/linux/nsm.h).
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000

_U16_MAX = 0xFFFF
_R = TypeVar("_R")
# Real messages nest three levels at most; a small bound keeps garbage cheap to reject.
_MAX_DEPTH = 8


class ErrorCode(enum.IntEnum):
    """NSM error codes; the values are the nsm-api's C ABI (repr(C)) discriminants."""

    Success = 0
    InvalidArgument = 1
    InvalidIndex = 2
    InvalidResponse = 3
    ReadOnlyIndex = 4
    InvalidOperation = 5
    BufferTooSmall = 6
    InputTooLarge = 7
    InternalError = 8


class Digest(enum.IntEnum):
    """PCR bank digest; the values are the nsm-api's C ABI discriminants."""

    SHA256 = 0
    SHA384 = 1
    SHA512 = 2


_ERROR_CLASSES: dict[ErrorCode, type[NsmRequestError]] = {
    # A "Success" carried inside an Error response makes no sense: treat as a bad answer.
    ErrorCode.Success: NsmInvalidResponse,
    ErrorCode.InvalidArgument: NsmInvalidArgument,
    ErrorCode.InvalidIndex: NsmInvalidIndex,
    ErrorCode.InvalidResponse: NsmInvalidResponse,
    ErrorCode.ReadOnlyIndex: NsmReadOnlyIndex,
    ErrorCode.InvalidOperation: NsmInvalidOperation,
    ErrorCode.BufferTooSmall: NsmBufferTooSmall,
    ErrorCode.InputTooLarge: NsmInputTooLarge,
    ErrorCode.InternalError: NsmInternalError,
}


def error_class(code: ErrorCode) -> type[NsmRequestError]:
    """The exception type standing for an NSM error code."""
    return _ERROR_CLASSES[code]


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class DescribePcrRequest:
    index: int


@dataclass(frozen=True)
class ExtendPcrRequest:
    index: int
    data: bytes


@dataclass(frozen=True)
class LockPcrRequest:
    index: int


@dataclass(frozen=True)
class LockPcrsRequest:
    range: int


@dataclass(frozen=True)
class DescribeNsmRequest:
    pass


@dataclass(frozen=True)
class AttestationRequest:
    user_data: bytes | None = None
    nonce: bytes | None = None
    public_key: bytes | None = None


@dataclass(frozen=True)
class GetRandomRequest:
    pass


Request = (
    DescribePcrRequest
    | ExtendPcrRequest
    | LockPcrRequest
    | LockPcrsRequest
    | DescribeNsmRequest
    | AttestationRequest
    | GetRandomRequest
)

# ---------------------------------------------------------------- responses


@dataclass(frozen=True)
class DescribePcrResponse:
    lock: bool
    data: bytes


@dataclass(frozen=True)
class ExtendPcrResponse:
    data: bytes


@dataclass(frozen=True)
class LockPcrResponse:
    pass


@dataclass(frozen=True)
class LockPcrsResponse:
    pass


@dataclass(frozen=True)
class DescribeNsmResponse:
    version_major: int
    version_minor: int
    version_patch: int
    module_id: str
    max_pcrs: int
    locked_pcrs: tuple[int, ...]
    digest: Digest


@dataclass(frozen=True)
class AttestationResponse:
    document: bytes


@dataclass(frozen=True)
class GetRandomResponse:
    random: bytes


@dataclass(frozen=True)
class ErrorResponse:
    code: ErrorCode


Response = (
    DescribePcrResponse
    | ExtendPcrResponse
    | LockPcrResponse
    | LockPcrsResponse
    | DescribeNsmResponse
    | AttestationResponse
    | GetRandomResponse
    | ErrorResponse
)

# ---------------------------------------------------------------- encoding


def u16(value: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise NsmInvalidIndex(f"NSM {what} must be an integer in 0..65535, got {value!r}")
    return value


def opt_bytes(value: bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise NsmInvalidArgument(f"NSM {what} must be bytes or None")
    return bytes(value)


def _request_value(request: Request) -> object:
    if isinstance(request, DescribePcrRequest):
        return {"DescribePCR": {"index": u16(request.index, "PCR index")}}
    if isinstance(request, ExtendPcrRequest):
        data = opt_bytes(request.data, "extend data")
        if data is None:
            raise NsmInvalidArgument("NSM extend data must be bytes")
        return {"ExtendPCR": {"index": u16(request.index, "PCR index"), "data": data}}
    if isinstance(request, LockPcrRequest):
        return {"LockPCR": {"index": u16(request.index, "PCR index")}}
    if isinstance(request, LockPcrsRequest):
        return {"LockPCRs": {"range": u16(request.range, "PCR range")}}
    if isinstance(request, DescribeNsmRequest):
        return "DescribeNSM"
    if isinstance(request, AttestationRequest):
        return {
            "Attestation": {
                "user_data": opt_bytes(request.user_data, "user_data"),
                "nonce": opt_bytes(request.nonce, "nonce"),
                "public_key": opt_bytes(request.public_key, "public_key"),
            }
        }
    if isinstance(request, GetRandomRequest):
        return "GetRandom"
    raise NsmInvalidArgument(f"not an NSM request: {type(request).__name__}")


def encode_request(request: Request) -> bytes:
    """CBOR bytes of a request, refused with InputTooLarge above the driver's limit."""
    encoded = cbor2.dumps(_request_value(request))
    if len(encoded) > NSM_REQUEST_MAX_SIZE:
        raise NsmInputTooLarge(
            f"NSM request is {len(encoded)} bytes, the limit is {NSM_REQUEST_MAX_SIZE}"
        )
    return encoded


# ---------------------------------------------------------------- decoding


class ShapeError(NsmError):
    """The decoded CBOR does not have the shape of an NSM message."""


def loads_message(data: bytes) -> object:
    """The one CBOR item of an NSM message (tags refused: real messages carry none)."""
    return strict_loads(data, what="NSM message", error=ShapeError, max_depth=_MAX_DEPTH)


def variant(value: object) -> tuple[str, object]:
    """Split an externally tagged enum value into (variant name, content or None)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, content),) = value.items()
        if isinstance(name, str):
            return name, content
    raise ShapeError("not an externally tagged enum value")


def fields_of(content: object, variant: str) -> Mapping[Any, Any]:
    if not isinstance(content, Mapping):
        raise ShapeError(f"{variant} must carry a map of fields")
    return content


def get_u16(fields: Mapping[Any, Any], name: str) -> int:
    value = fields.get(name, MISSING)
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise ShapeError(f"field {name} must be a u16")
    return value


def get_bytes(fields: Mapping[Any, Any], name: str) -> bytes:
    value = fields.get(name, MISSING)
    if not isinstance(value, bytes):
        raise ShapeError(f"field {name} must be a byte string")
    return value


def get_opt_bytes(fields: Mapping[Any, Any], name: str) -> bytes | None:
    # serde treats a missing Option field as None.
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise ShapeError(f"field {name} must be a byte string or null")
    return value


def get_bool(fields: Mapping[Any, Any], name: str) -> bool:
    value = fields.get(name, MISSING)
    if type(value) is not bool:
        raise ShapeError(f"field {name} must be a boolean")
    return value


def get_text(fields: Mapping[Any, Any], name: str) -> str:
    value = fields.get(name, MISSING)
    if not isinstance(value, str):
        raise ShapeError(f"field {name} must be a text string")
    return value


MISSING = object()


def unit(content: object, variant: str) -> None:
    if content is not None:
        raise ShapeError(f"{variant} is a unit variant")


def _decode_response_value(value: object) -> Response:
    name, content = variant(value)
    if name == "DescribePCR":
        fields = fields_of(content, name)
        return DescribePcrResponse(get_bool(fields, "lock"), get_bytes(fields, "data"))
    if name == "ExtendPCR":
        return ExtendPcrResponse(get_bytes(fields_of(content, name), "data"))
    if name == "LockPCR":
        unit(content, name)
        return LockPcrResponse()
    if name == "LockPCRs":
        unit(content, name)
        return LockPcrsResponse()
    if name == "DescribeNSM":
        fields = fields_of(content, name)
        locked = fields.get("locked_pcrs", MISSING)
        if not isinstance(locked, list) or any(
            type(i) is not int or not 0 <= i <= _U16_MAX for i in locked
        ):
            raise ShapeError("field locked_pcrs must be an array of u16")
        digest_name = get_text(fields, "digest")
        if digest_name not in Digest.__members__:
            raise ShapeError("field digest is not a known digest")
        return DescribeNsmResponse(
            version_major=get_u16(fields, "version_major"),
            version_minor=get_u16(fields, "version_minor"),
            version_patch=get_u16(fields, "version_patch"),
            module_id=get_text(fields, "module_id"),
            max_pcrs=get_u16(fields, "max_pcrs"),
            locked_pcrs=tuple(sorted(set(locked))),
            digest=Digest[digest_name],
        )
    if name == "Attestation":
        return AttestationResponse(get_bytes(fields_of(content, name), "document"))
    if name == "GetRandom":
        return GetRandomResponse(get_bytes(fields_of(content, name), "random"))
    if name == "Error":
        if not isinstance(content, str) or content not in ErrorCode.__members__:
            raise ShapeError("Error must carry a known error code name")
        return ErrorResponse(ErrorCode[content])
    raise ShapeError(f"unknown response variant {name[:40]!r}")


def decode_response(data: bytes) -> Response:
    """Parse the NSM's answer; garbage raises NsmMalformedResponse, never anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NsmMalformedResponse("NSM response must be bytes")
    if len(data) > NSM_RESPONSE_MAX_SIZE:
        raise NsmMalformedResponse(
            f"NSM response is {len(data)} bytes, more than the {NSM_RESPONSE_MAX_SIZE} possible"
        )
    try:
        return _decode_response_value(loads_message(bytes(data)))
    except ShapeError as exc:
        raise NsmMalformedResponse(f"malformed NSM response: {exc}") from None


def expect_response(response: Response, kind: type[_R]) -> _R:
    """Return `response` if it is a `kind`; raise the mapped error for an Error response,
    NsmInvalidResponse for an answer to some other request."""
    if isinstance(response, ErrorResponse):
        cls = error_class(response.code)
        raise cls(f"NSM refused the request: {response.code.name}")
    if not isinstance(response, kind):
        raise NsmInvalidResponse(
            f"NSM answered with {type(response).__name__}, expected {kind.__name__}"
        )
    return response
