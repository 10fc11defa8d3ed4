"""MockNsm: a stand-in Nitro Secure Module for local runs.

It behaves like the real module where callers can tell (aws-nitro-enclaves-nsm-api
and its nsm-test checks): 32 SHA-384 PCRs, PCRs 0..15 locked from boot and refusing
LockPCR/ExtendPCR with ReadOnlyIndex, PCRs 16..31 extendable (new = SHA384(old ||
data)) until locked, out-of-range indexes refused with InvalidIndex, attestation
inputs limited to 1024 bytes each and requests to 0x1000 encoded bytes.

Attestation documents have exactly the AWS shape: an untagged COSE_Sign1
``[protected, {}, payload, signature]`` with protected header ``{1: -35}`` (ES384),
a 96-byte raw r||s signature over ``["Signature1", protected, h'', payload]`` with
SHA-384, and a payload map whose keys come in AWS's order: module_id, digest
("SHA384"), timestamp (ms), pcrs (0..15 plus any locked user PCR, 48 bytes each),
certificate (a leaf issued for this document by the LocalCa), cabundle (root first),
public_key, user_data, nonce (CBOR null when absent). ``indefinite_payload=True``
writes the payload map with indefinite length, as newer real documents do.

PCR0/1/2 default to `measure_enclave_package()`; PCR3/PCR4 can be given; PCR8 is
zero (unsigned image). ``debug=True`` zeroes PCR0/1/2/8 as a debug-mode enclave does.
The signing keys come from the LocalCa's state folder; none is in the enclave package.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enclave.errors import ConfigError
from enclave.nsm.errors import (
    NsmBufferTooSmall,
    NsmClosed,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmReadOnlyIndex,
    NsmRequestError,
)
from enclave.nsm.interface import (
    Nsm,
    NsmDescription,
    PcrState,
    check_attestation_inputs,
    check_random_length,
)
from enclave.nsm.protocol import (
    NSM_RESPONSE_MAX_SIZE,
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
    encode_request,
)
from parent.local.local_ca import LocalCa
from parent.local.measure import PCR_LENGTH, measure_enclave_package
from parent.local.nsm_wire import decode_request, encode_response

__all__ = [
    "BOOT_LOCKED_PCRS",
    "DOCUMENT_PCRS",
    "MAX_PCRS",
    "MockNsm",
    "MockNsmConfigError",
    "PROTECTED_HEADER",
    "random_module_id",
]

log = logging.getLogger(__name__)

MAX_PCRS = 32
#: PCRs the Nitro hypervisor locks before the enclave starts.
BOOT_LOCKED_PCRS = range(16)
#: PCRs every attestation document lists.
DOCUMENT_PCRS = range(16)
DEBUG_ZEROED_PCRS = (0, 1, 2, 8)
VERSION = (1, 0, 0)
#: GetRandom hands out this many bytes per request, like nsm_get_random's buffer.
RANDOM_PER_REQUEST = 256
#: CBOR of {1: -35}: alg ES384.
PROTECTED_HEADER = cbor2.dumps({1: -35})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MockNsmConfigError(ConfigError):
    """MockNsm was given unusable settings (bad PCR index or length, naive clock)."""


def random_module_id() -> str:
    """A module id shaped like AWS's ``i-<17 hex>-enc<16 hex>``, marked as a mock."""
    return f"i-mock{os.urandom(7).hex()[:13]}-enc{os.urandom(8).hex()}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _encode_payload(items: list[tuple[str, object]], indefinite: bool) -> bytes:
    if not indefinite:
        return cbor2.dumps(dict(items))
    # Indefinite-length map: 0xbf, key/value pairs, break (0xff).
    return b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items) + b"\xff"


class MockNsm(Nsm):
    """A local NSM with a LocalCa-signed attestation document in the AWS shape."""

    def __init__(
        self,
        ca: LocalCa,
        pcrs: Mapping[int, bytes] | None = None,
        *,
        module_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        debug: bool = False,
        indefinite_payload: bool = False,
    ) -> None:
        self._ca = ca
        self.module_id = random_module_id() if module_id is None else module_id
        self._clock = _utcnow if clock is None else clock
        self.debug = debug
        self._indefinite = indefinite_payload
        self._lock = threading.Lock()
        self._closed = False

        given = dict(pcrs or {})
        for index, value in given.items():
            if type(index) is not int or not 0 <= index < MAX_PCRS:
                raise MockNsmConfigError(f"PCR index {index!r} is outside 0..{MAX_PCRS - 1}")
            if not isinstance(value, (bytes, bytearray)) or len(value) != PCR_LENGTH:
                raise MockNsmConfigError(f"PCR{index} must be {PCR_LENGTH} bytes")
        values = [bytes(PCR_LENGTH)] * MAX_PCRS
        if not debug and not given.keys() >= {0, 1, 2}:
            for index, value in measure_enclave_package().items():
                values[index] = value
        for index, value in given.items():
            values[index] = bytes(value)
        if debug:
            for index in DEBUG_ZEROED_PCRS:
                values[index] = bytes(PCR_LENGTH)
        self._values = values
        self._locked = set(BOOT_LOCKED_PCRS)

    # ------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise NsmClosed("the mock NSM is closed")

    def _index(self, index: int) -> int:
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise NsmInvalidIndex(f"PCR index {index!r} is outside 0..{MAX_PCRS - 1}")
        return index

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise MockNsmConfigError("the MockNsm clock must return timezone-aware times")
        return now

    def document_pcrs(self) -> dict[int, bytes]:
        """The PCRs the next attestation document will list (index -> value)."""
        with self._lock:
            indexes = sorted(set(DOCUMENT_PCRS) | self._locked)
            return {i: self._values[i] for i in indexes}

    # ------------------------------------------------------------ Nsm interface

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        self._check_open()
        check_attestation_inputs(user_data, nonce, public_key)
        pcrs = self.document_pcrs()
        now = self._now()
        timestamp_ms = (now - _EPOCH) // timedelta(milliseconds=1)
        key, certificate = self._ca.issue_leaf(now, common_name=f"{self.module_id}.mock.aws")
        items: list[tuple[str, object]] = [
            ("module_id", self.module_id),
            ("digest", "SHA384"),
            ("timestamp", timestamp_ms),
            ("pcrs", pcrs),
            ("certificate", certificate),
            ("cabundle", list(self._ca.cabundle)),
            ("public_key", None if public_key is None else bytes(public_key)),
            ("user_data", None if user_data is None else bytes(user_data)),
            ("nonce", None if nonce is None else bytes(nonce)),
        ]
        payload = _encode_payload(items, self._indefinite)
        to_sign = cbor2.dumps(["Signature1", PROTECTED_HEADER, b"", payload])
        r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        document = cbor2.dumps([PROTECTED_HEADER, {}, payload, signature])
        if len(encode_response(AttestationResponse(document))) > NSM_RESPONSE_MAX_SIZE:
            # The real driver's response buffer could not hold it either.
            raise NsmBufferTooSmall("attestation document exceeds the NSM response buffer")
        return document

    def get_random(self, n: int) -> bytes:
        self._check_open()
        return os.urandom(check_random_length(n))

    def describe_pcr(self, index: int) -> PcrState:
        self._check_open()
        index = self._index(index)
        with self._lock:
            return PcrState(value=self._values[index], locked=index in self._locked)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        self._check_open()
        index = self._index(index)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NsmInvalidArgument("PCR extend data must be bytes")
        data = bytes(data)
        # The real request must fit the driver's 0x1000-byte limit.
        encode_request(ExtendPcrRequest(index, data))
        with self._lock:
            if index in self._locked:
                raise NsmReadOnlyIndex(f"PCR{index} is locked")
            value = hashlib.sha384(self._values[index] + data).digest()
            self._values[index] = value
            return value

    def lock_pcr(self, index: int) -> None:
        self._check_open()
        index = self._index(index)
        if index in BOOT_LOCKED_PCRS:
            raise NsmReadOnlyIndex(f"PCR{index} is reserved and cannot be locked by the enclave")
        with self._lock:
            self._locked.add(index)

    def lock_pcrs(self, range_end: int) -> None:
        """Lock PCRs [0, range_end) (LockPCRs); the boot-locked ones stay locked."""
        self._check_open()
        if type(range_end) is not int or not 0 <= range_end <= MAX_PCRS:
            raise NsmInvalidIndex(f"PCR range {range_end!r} is outside 0..{MAX_PCRS}")
        with self._lock:
            self._locked.update(range(range_end))

    def describe(self) -> NsmDescription:
        self._check_open()
        with self._lock:
            locked = tuple(sorted(self._locked))
        return NsmDescription(
            module_id=self.module_id,
            max_pcrs=MAX_PCRS,
            locked_pcrs=locked,
            digest="SHA384",
            version=VERSION,
        )

    def close(self) -> None:
        self._closed = True

    # ------------------------------------------------------------ raw protocol

    def handle_request(self, raw: bytes) -> bytes:
        """Answer one CBOR-encoded request as the device would (for protocol tests)."""
        self._check_open()
        try:
            response = self._dispatch(decode_request(raw))
        except NsmRequestError as exc:
            response = ErrorResponse(ErrorCode[exc.code_name])
        return encode_response(response)

    def _dispatch(self, request: Request) -> Response:
        if isinstance(request, AttestationRequest):
            return AttestationResponse(
                self.attest(
                    user_data=request.user_data,
                    nonce=request.nonce,
                    public_key=request.public_key,
                )
            )
        if isinstance(request, GetRandomRequest):
            return GetRandomResponse(self.get_random(RANDOM_PER_REQUEST))
        if isinstance(request, DescribePcrRequest):
            state = self.describe_pcr(request.index)
            return DescribePcrResponse(lock=state.locked, data=state.value)
        if isinstance(request, ExtendPcrRequest):
            return ExtendPcrResponse(self.extend_pcr(request.index, request.data))
        if isinstance(request, LockPcrRequest):
            self.lock_pcr(request.index)
            return LockPcrResponse()
        if isinstance(request, LockPcrsRequest):
            self.lock_pcrs(request.range)
            return LockPcrsResponse()
        if isinstance(request, DescribeNsmRequest):
            description = self.describe()
            return DescribeNsmResponse(
                version_major=description.version[0],
                version_minor=description.version[1],
                version_patch=description.version[2],
                module_id=description.module_id,
                max_pcrs=description.max_pcrs,
                locked_pcrs=description.locked_pcrs,
                digest=Digest[description.digest],
            )
        raise NsmInvalidArgument(f"unsupported request {type(request).__name__}")
