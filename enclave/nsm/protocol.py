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
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar, Union

import cbor2

from enclave.errors import NsmError
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
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
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
    """NSM error codes; the values are the C ABI (repr(C)) discriminants of libnsm."""

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
    """PCR bank digest; values are the libnsm C ABI discriminants."""

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


Request = Union[
    DescribePcrRequest,
    ExtendPcrRequest,
    LockPcrRequest,
    LockPcrsRequest,
    DescribeNsmRequest,
    AttestationRequest,
    GetRandomRequest,
]

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


Response = Union[
    DescribePcrResponse,
    ExtendPcrResponse,
    LockPcrResponse,
    LockPcrsResponse,
    DescribeNsmResponse,
    AttestationResponse,
    GetRandomResponse,
    ErrorResponse,
]

# ---------------------------------------------------------------- encoding


def _u16(value: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise NsmInvalidIndex(f"NSM {what} must be an integer in 0..65535, got {value!r}")
    return value


def _opt_bytes(value: bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise NsmInvalidArgument(f"NSM {what} must be bytes or None")
    return bytes(value)


def _request_value(request: Request) -> object:
    if isinstance(request, DescribePcrRequest):
        return {"DescribePCR": {"index": _u16(request.index, "PCR index")}}
    if isinstance(request, ExtendPcrRequest):
        data = _opt_bytes(request.data, "extend data")
        if data is None:
            raise NsmInvalidArgument("NSM extend data must be bytes")
        return {"ExtendPCR": {"index": _u16(request.index, "PCR index"), "data": data}}
    if isinstance(request, LockPcrRequest):
        return {"LockPCR": {"index": _u16(request.index, "PCR index")}}
    if isinstance(request, LockPcrsRequest):
        return {"LockPCRs": {"range": _u16(request.range, "PCR range")}}
    if isinstance(request, DescribeNsmRequest):
        return "DescribeNSM"
    if isinstance(request, AttestationRequest):
        return {
            "Attestation": {
                "user_data": _opt_bytes(request.user_data, "user_data"),
                "nonce": _opt_bytes(request.nonce, "nonce"),
                "public_key": _opt_bytes(request.public_key, "public_key"),
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


def _response_value(response: Response) -> object:
    if isinstance(response, DescribePcrResponse):
        return {"DescribePCR": {"lock": bool(response.lock), "data": bytes(response.data)}}
    if isinstance(response, ExtendPcrResponse):
        return {"ExtendPCR": {"data": bytes(response.data)}}
    if isinstance(response, LockPcrResponse):
        return "LockPCR"
    if isinstance(response, LockPcrsResponse):
        return "LockPCRs"
    if isinstance(response, DescribeNsmResponse):
        return {
            "DescribeNSM": {
                "version_major": _u16(response.version_major, "version"),
                "version_minor": _u16(response.version_minor, "version"),
                "version_patch": _u16(response.version_patch, "version"),
                "module_id": str(response.module_id),
                "max_pcrs": _u16(response.max_pcrs, "max_pcrs"),
                "locked_pcrs": sorted({_u16(i, "PCR index") for i in response.locked_pcrs}),
                "digest": Digest(response.digest).name,
            }
        }
    if isinstance(response, AttestationResponse):
        return {"Attestation": {"document": bytes(response.document)}}
    if isinstance(response, GetRandomResponse):
        return {"GetRandom": {"random": bytes(response.random)}}
    if isinstance(response, ErrorResponse):
        return {"Error": ErrorCode(response.code).name}
    raise NsmInvalidArgument(f"not an NSM response: {type(response).__name__}")


def encode_response(response: Response) -> bytes:
    """CBOR bytes of a response, as the NSM sends it (used by stand-ins)."""
    return cbor2.dumps(_response_value(response))


# ---------------------------------------------------------------- decoding


class _Shape(Exception):
    """Internal: the decoded CBOR does not have the expected shape."""


def _loads(data: bytes) -> object:
    try:
        return cbor2.loads(
            bytes(data),
            max_depth=_MAX_DEPTH,
            allow_duplicate_keys=False,
            # Real messages carry no tags; refusing them keeps decoding free of side effects.
            tag_hook=_refuse_tag,
        )
    except _Shape:
        raise
    except NsmError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not CBOR we accept"
        raise _Shape(f"not valid CBOR ({type(exc).__name__})") from None


def _refuse_tag(decoder: object, tag: object) -> object:
    raise _Shape("CBOR tags are not allowed")


def _variant(value: object) -> tuple[str, object]:
    """Split an externally tagged enum value into (variant name, content or None)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, content),) = value.items()
        if isinstance(name, str):
            return name, content
    raise _Shape("not an externally tagged enum value")


def _fields(content: object, variant: str) -> Mapping[Any, Any]:
    if not isinstance(content, Mapping):
        raise _Shape(f"{variant} must carry a map of fields")
    return content


def _get_u16(fields: Mapping[Any, Any], name: str) -> int:
    value = fields.get(name, _MISSING)
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise _Shape(f"field {name} must be a u16")
    return value


def _get_bytes(fields: Mapping[Any, Any], name: str) -> bytes:
    value = fields.get(name, _MISSING)
    if not isinstance(value, bytes):
        raise _Shape(f"field {name} must be a byte string")
    return value


def _get_opt_bytes(fields: Mapping[Any, Any], name: str) -> bytes | None:
    # serde treats a missing Option field as None.
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise _Shape(f"field {name} must be a byte string or null")
    return value


def _get_bool(fields: Mapping[Any, Any], name: str) -> bool:
    value = fields.get(name, _MISSING)
    if type(value) is not bool:
        raise _Shape(f"field {name} must be a boolean")
    return value


def _get_text(fields: Mapping[Any, Any], name: str) -> str:
    value = fields.get(name, _MISSING)
    if not isinstance(value, str):
        raise _Shape(f"field {name} must be a text string")
    return value


_MISSING = object()


def _unit(content: object, variant: str) -> None:
    if content is not None:
        raise _Shape(f"{variant} is a unit variant")


def _decode_request_value(value: object) -> Request:
    name, content = _variant(value)
    if name == "DescribePCR":
        return DescribePcrRequest(_get_u16(_fields(content, name), "index"))
    if name == "ExtendPCR":
        fields = _fields(content, name)
        return ExtendPcrRequest(_get_u16(fields, "index"), _get_bytes(fields, "data"))
    if name == "LockPCR":
        return LockPcrRequest(_get_u16(_fields(content, name), "index"))
    if name == "LockPCRs":
        return LockPcrsRequest(_get_u16(_fields(content, name), "range"))
    if name == "DescribeNSM":
        _unit(content, name)
        return DescribeNsmRequest()
    if name == "Attestation":
        fields = _fields(content, name)
        return AttestationRequest(
            user_data=_get_opt_bytes(fields, "user_data"),
            nonce=_get_opt_bytes(fields, "nonce"),
            public_key=_get_opt_bytes(fields, "public_key"),
        )
    if name == "GetRandom":
        _unit(content, name)
        return GetRandomRequest()
    raise _Shape(f"unknown request variant {name[:40]!r}")


def decode_request(data: bytes) -> Request:
    """Parse a request (the NSM side of the exchange, used by stand-ins)."""
    if len(data) > NSM_REQUEST_MAX_SIZE:
        raise NsmInputTooLarge(
            f"NSM request is {len(data)} bytes, the limit is {NSM_REQUEST_MAX_SIZE}"
        )
    try:
        return _decode_request_value(_loads(data))
    except _Shape as exc:
        raise NsmInvalidArgument(f"malformed NSM request: {exc}") from None


def _decode_response_value(value: object) -> Response:
    name, content = _variant(value)
    if name == "DescribePCR":
        fields = _fields(content, name)
        return DescribePcrResponse(_get_bool(fields, "lock"), _get_bytes(fields, "data"))
    if name == "ExtendPCR":
        return ExtendPcrResponse(_get_bytes(_fields(content, name), "data"))
    if name == "LockPCR":
        _unit(content, name)
        return LockPcrResponse()
    if name == "LockPCRs":
        _unit(content, name)
        return LockPcrsResponse()
    if name == "DescribeNSM":
        fields = _fields(content, name)
        locked = fields.get("locked_pcrs", _MISSING)
        if not isinstance(locked, list) or any(
            type(i) is not int or not 0 <= i <= _U16_MAX for i in locked
        ):
            raise _Shape("field locked_pcrs must be an array of u16")
        digest_name = _get_text(fields, "digest")
        if digest_name not in Digest.__members__:
            raise _Shape("field digest is not a known digest")
        return DescribeNsmResponse(
            version_major=_get_u16(fields, "version_major"),
            version_minor=_get_u16(fields, "version_minor"),
            version_patch=_get_u16(fields, "version_patch"),
            module_id=_get_text(fields, "module_id"),
            max_pcrs=_get_u16(fields, "max_pcrs"),
            locked_pcrs=tuple(sorted(set(locked))),
            digest=Digest[digest_name],
        )
    if name == "Attestation":
        return AttestationResponse(_get_bytes(_fields(content, name), "document"))
    if name == "GetRandom":
        return GetRandomResponse(_get_bytes(_fields(content, name), "random"))
    if name == "Error":
        if not isinstance(content, str) or content not in ErrorCode.__members__:
            raise _Shape("Error must carry a known error code name")
        return ErrorResponse(ErrorCode[content])
    raise _Shape(f"unknown response variant {name[:40]!r}")


def decode_response(data: bytes) -> Response:
    """Parse the NSM's answer; garbage raises NsmMalformedResponse, never anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NsmMalformedResponse("NSM response must be bytes")
    if len(data) > NSM_RESPONSE_MAX_SIZE:
        raise NsmMalformedResponse(
            f"NSM response is {len(data)} bytes, more than the {NSM_RESPONSE_MAX_SIZE} possible"
        )
    try:
        return _decode_response_value(_loads(bytes(data)))
    except _Shape as exc:
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
