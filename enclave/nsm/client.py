"""An `Nsm` over any transport that carries raw NSM request/response bytes.

The /dev/nsm backend is this client plus an ioctl transport; tests drive the same
client code through a stand-in that answers raw CBOR requests.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from enclave.nsm.errors import NsmClosed, NsmInvalidArgument, NsmInvalidResponse
from enclave.nsm.interface import (
    Nsm,
    NsmDescription,
    PcrState,
    check_attestation_inputs,
    check_random_length,
)
from enclave.nsm.protocol import (
    AttestationRequest,
    AttestationResponse,
    DescribeNsmRequest,
    DescribeNsmResponse,
    DescribePcrRequest,
    DescribePcrResponse,
    ExtendPcrRequest,
    ExtendPcrResponse,
    GetRandomRequest,
    GetRandomResponse,
    LockPcrRequest,
    LockPcrResponse,
    Request,
    decode_response,
    encode_request,
    expect_response,
)

__all__ = ["ProtocolNsm", "Roundtrip"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")

#: Sends one encoded request and returns the encoded response.
Roundtrip = Callable[[bytes], bytes]


class ProtocolNsm(Nsm):
    """Implements the Nsm interface by exchanging CBOR messages through `roundtrip`."""

    def __init__(self, roundtrip: Roundtrip, *, on_close: Callable[[], None] | None = None):
        self._roundtrip: Roundtrip | None = roundtrip
        self._on_close = on_close

    def _call(self, request: Request, kind: type[_R]) -> _R:
        roundtrip = self._roundtrip
        if roundtrip is None:
            raise NsmClosed("the NSM handle is closed")
        answer = roundtrip(encode_request(request))
        return expect_response(decode_response(answer), kind)

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        check_attestation_inputs(user_data, nonce, public_key)
        request = AttestationRequest(
            user_data=None if user_data is None else bytes(user_data),
            nonce=None if nonce is None else bytes(nonce),
            public_key=None if public_key is None else bytes(public_key),
        )
        response = self._call(request, AttestationResponse)
        if not response.document:
            raise NsmInvalidResponse("NSM returned an empty attestation document")
        return response.document

    def get_random(self, n: int) -> bytes:
        check_random_length(n)
        chunks: list[bytes] = []
        have = 0
        while have < n:
            response = self._call(GetRandomRequest(), GetRandomResponse)
            if not response.random:
                # An empty answer would otherwise loop forever.
                raise NsmInvalidResponse("NSM GetRandom returned no bytes")
            chunks.append(response.random)
            have += len(response.random)
        return b"".join(chunks)[:n]

    def describe_pcr(self, index: int) -> PcrState:
        response = self._call(DescribePcrRequest(index), DescribePcrResponse)
        return PcrState(value=response.data, locked=response.lock)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NsmInvalidArgument("PCR extend data must be bytes")
        response = self._call(ExtendPcrRequest(index, bytes(data)), ExtendPcrResponse)
        return response.data

    def lock_pcr(self, index: int) -> None:
        self._call(LockPcrRequest(index), LockPcrResponse)

    def describe(self) -> NsmDescription:
        response = self._call(DescribeNsmRequest(), DescribeNsmResponse)
        return NsmDescription(
            module_id=response.module_id,
            max_pcrs=response.max_pcrs,
            locked_pcrs=response.locked_pcrs,
            digest=response.digest.name,
            version=(response.version_major, response.version_minor, response.version_patch),
        )

    def close(self) -> None:
        if self._roundtrip is None:
            return
        self._roundtrip = None
        if self._on_close is not None:
            self._on_close()
