"""The NSM's side of the request protocol, for the mock NSM: requests in, responses out."""
from __future__ import annotations

import cbor2

from enclave.nsm.errors import NsmInputTooLarge, NsmInvalidArgument
from enclave.nsm.protocol import (
    NSM_REQUEST_MAX_SIZE,
    AttestationRequest,
    AttestationResponse,
    DescribeNsmRequest,
    DescribeNsmResponse,
    DescribePcrRequest,
    DescribePcrResponse,
    Digest,
    ErrorCode,
    ErrorResponse,
    ExtendPcrRequest,
    ExtendPcrResponse,
    GetRandomRequest,
    GetRandomResponse,
    LockPcrRequest,
    LockPcrResponse,
    LockPcrsRequest,
    LockPcrsResponse,
    Request,
    Response,
    ShapeError,
    fields_of,
    get_bytes,
    get_opt_bytes,
    get_u16,
    loads_message,
    u16,
    unit,
    variant,
)

__all__ = ["decode_request", "encode_response"]


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
                "version_major": u16(response.version_major, "version"),
                "version_minor": u16(response.version_minor, "version"),
                "version_patch": u16(response.version_patch, "version"),
                "module_id": str(response.module_id),
                "max_pcrs": u16(response.max_pcrs, "max_pcrs"),
                "locked_pcrs": sorted({u16(i, "PCR index") for i in response.locked_pcrs}),
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


def _decode_request_value(value: object) -> Request:
    name, content = variant(value)
    if name == "DescribePCR":
        return DescribePcrRequest(get_u16(fields_of(content, name), "index"))
    if name == "ExtendPCR":
        fields = fields_of(content, name)
        return ExtendPcrRequest(get_u16(fields, "index"), get_bytes(fields, "data"))
    if name == "LockPCR":
        return LockPcrRequest(get_u16(fields_of(content, name), "index"))
    if name == "LockPCRs":
        return LockPcrsRequest(get_u16(fields_of(content, name), "range"))
    if name == "DescribeNSM":
        unit(content, name)
        return DescribeNsmRequest()
    if name == "Attestation":
        fields = fields_of(content, name)
        return AttestationRequest(
            user_data=get_opt_bytes(fields, "user_data"),
            nonce=get_opt_bytes(fields, "nonce"),
            public_key=get_opt_bytes(fields, "public_key"),
        )
    if name == "GetRandom":
        unit(content, name)
        return GetRandomRequest()
    raise ShapeError(f"unknown request variant {name[:40]!r}")


def decode_request(data: bytes) -> Request:
    """Parse a request (the NSM side of the exchange, used by stand-ins)."""
    if len(data) > NSM_REQUEST_MAX_SIZE:
        raise NsmInputTooLarge(
            f"NSM request is {len(data)} bytes, the limit is {NSM_REQUEST_MAX_SIZE}"
        )
    try:
        return _decode_request_value(loads_message(data))
    except ShapeError as exc:
        raise NsmInvalidArgument(f"malformed NSM request: {exc}") from None
