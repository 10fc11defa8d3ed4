"""Known-answer and property tests of the NSM CBOR request/response encoding.

Expected bytes are spelled out from the CBOR major types (RFC 8949) and the serde
enum shapes in aws-nitro-enclaves-nsm-api src/api/mod.rs, not produced by cbor2.
"""
from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import NsmError
from enclave.nsm.errors import (
    NsmInputTooLarge,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmInvalidResponse,
    NsmMalformedResponse,
    NsmReadOnlyIndex,
)
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
    decode_response,
    encode_request,
    expect_response,
)
from parent.local.nsm_wire import decode_request, encode_response


def text(s: str) -> str:
    """CBOR text string header (short form, < 24 bytes) + UTF-8 bytes, as hex."""
    raw = s.encode()
    assert len(raw) < 24
    return f"{0x60 + len(raw):02x}" + raw.hex()


REQUEST_VECTORS = [
    (GetRandomRequest(), text("GetRandom")),
    (DescribeNsmRequest(), text("DescribeNSM")),
    (DescribePcrRequest(3), "a1" + text("DescribePCR") + "a1" + text("index") + "03"),
    # u16 index 300 takes the two-byte unsigned form 0x19.
    (DescribePcrRequest(300), "a1" + text("DescribePCR") + "a1" + text("index") + "19012c"),
    (
        ExtendPcrRequest(16, b"\x01\x02\x03"),
        "a1" + text("ExtendPCR") + "a2" + text("index") + "10" + text("data") + "43010203",
    ),
    (LockPcrRequest(16), "a1" + text("LockPCR") + "a1" + text("index") + "10"),
    (LockPcrsRequest(32), "a1" + text("LockPCRs") + "a1" + text("range") + "1820"),
    (
        AttestationRequest(),
        "a1" + text("Attestation") + "a3"
        + text("user_data") + "f6" + text("nonce") + "f6" + text("public_key") + "f6",
    ),
    (
        AttestationRequest(user_data=b"", nonce=b"\x00", public_key=b"\xab\xcd"),
        "a1" + text("Attestation") + "a3"
        + text("user_data") + "40" + text("nonce") + "4100" + text("public_key") + "42abcd",
    ),
]

RESPONSE_VECTORS = [
    (LockPcrResponse(), text("LockPCR")),
    (LockPcrsResponse(), text("LockPCRs")),
    (ErrorResponse(ErrorCode.InvalidIndex), "a1" + text("Error") + text("InvalidIndex")),
    (ErrorResponse(ErrorCode.ReadOnlyIndex), "a1" + text("Error") + text("ReadOnlyIndex")),
    (
        DescribePcrResponse(lock=True, data=bytes(48)),
        "a1" + text("DescribePCR") + "a2" + text("lock") + "f5" + text("data") + "5830" + "00" * 48,
    ),
    (ExtendPcrResponse(b"\xff" * 2), "a1" + text("ExtendPCR") + "a1" + text("data") + "42ffff"),
    (
        GetRandomResponse(b"\xab\xcd"),
        "a1" + text("GetRandom") + "a1" + text("random") + "42abcd",
    ),
    (
        AttestationResponse(b"\x84\x40"),
        "a1" + text("Attestation") + "a1" + text("document") + "428440",
    ),
    (
        DescribeNsmResponse(
            version_major=1,
            version_minor=2,
            version_patch=3,
            module_id="abc",
            max_pcrs=32,
            locked_pcrs=(0, 1),
            digest=Digest.SHA384,
        ),
        "a1" + text("DescribeNSM") + "a7"
        + text("version_major") + "01" + text("version_minor") + "02"
        + text("version_patch") + "03" + text("module_id") + text("abc")
        + text("max_pcrs") + "1820" + text("locked_pcrs") + "820001"
        + text("digest") + text("SHA384"),
    ),
]


@pytest.mark.parametrize(("request_", "expected_hex"), REQUEST_VECTORS)
def test_request_known_answers(request_: object, expected_hex: str) -> None:
    assert encode_request(request_).hex() == expected_hex  # type: ignore[arg-type]
    assert decode_request(bytes.fromhex(expected_hex)) == request_


@pytest.mark.parametrize(("response", "expected_hex"), RESPONSE_VECTORS)
def test_response_known_answers(response: object, expected_hex: str) -> None:
    assert encode_response(response).hex() == expected_hex  # type: ignore[arg-type]
    assert decode_response(bytes.fromhex(expected_hex)) == response


def test_error_code_discriminants_match_the_c_abi() -> None:
    # repr(C) enum order in src/api/mod.rs; libnsm returns these integers.
    assert [c.name for c in sorted(ErrorCode)] == [
        "Success", "InvalidArgument", "InvalidIndex", "InvalidResponse", "ReadOnlyIndex",
        "InvalidOperation", "BufferTooSmall", "InputTooLarge", "InternalError",
    ]
    assert [int(c) for c in sorted(ErrorCode)] == list(range(9))
    assert (Digest.SHA256, Digest.SHA384, Digest.SHA512) == (0, 1, 2)


def test_missing_option_fields_decode_as_none() -> None:
    # serde fills absent Option fields with None.
    raw = bytes.fromhex("a1" + text("Attestation") + "a1" + text("nonce") + "4101")
    assert decode_request(raw) == AttestationRequest(nonce=b"\x01")


def test_unknown_fields_are_ignored_like_serde() -> None:
    raw = bytes.fromhex(
        "a1" + text("GetRandom") + "a2" + text("random") + "4101" + text("extra") + "00"
    )
    assert decode_response(raw) == GetRandomResponse(b"\x01")


def test_oversized_request_is_refused_before_sending() -> None:
    with pytest.raises(NsmInputTooLarge):
        encode_request(ExtendPcrRequest(16, bytes(NSM_REQUEST_MAX_SIZE)))
    with pytest.raises(NsmInputTooLarge):
        decode_request(bytes(NSM_REQUEST_MAX_SIZE + 1))


@pytest.mark.parametrize("index", [-1, 65536, True, 1.0])
def test_index_must_be_u16(index: object) -> None:
    with pytest.raises(NsmInvalidIndex):
        encode_request(DescribePcrRequest(index))  # type: ignore[arg-type]


def test_expect_response_maps_errors_and_mismatches() -> None:
    with pytest.raises(NsmReadOnlyIndex):
        expect_response(ErrorResponse(ErrorCode.ReadOnlyIndex), ExtendPcrResponse)
    with pytest.raises(NsmInvalidResponse):
        expect_response(ErrorResponse(ErrorCode.Success), ExtendPcrResponse)
    with pytest.raises(NsmInvalidResponse):
        expect_response(LockPcrResponse(), ExtendPcrResponse)
    ok = ExtendPcrResponse(b"x")
    assert expect_response(ok, ExtendPcrResponse) is ok


@pytest.mark.parametrize(
    "raw_hex",
    [
        "",  # empty
        "ff",  # lone break
        text("Nope"),  # unknown unit variant
        "a1" + text("Error") + text("Bogus"),  # unknown error code
        "a1" + text("DescribePCR") + "a2" + text("lock") + "01" + text("data") + "40",  # int lock
        "a1" + text("GetRandom") + "a1" + text("random") + text("ab"),  # text, not bytes
        "a2" + text("GetRandom") + "f6" + text("LockPCR") + "f6",  # two variants
        "a1" + text("LockPCR") + "a0",  # unit variant with content
        "c1" + "1a00000000",  # tagged value
        "a1" + text("GetRandom") + "a1" + text("random") + "5a" + "ffffffff",  # huge length
        "9f" * 50,  # deep nesting
    ],
)
def test_malformed_responses_raise_malformed(raw_hex: str) -> None:
    with pytest.raises(NsmMalformedResponse):
        decode_response(bytes.fromhex(raw_hex))


def test_malformed_request_is_invalid_argument() -> None:
    with pytest.raises(NsmInvalidArgument):
        decode_request(b"\xa1\x00\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_response_garbage_raises_only_nsm_errors(data: bytes) -> None:
    try:
        decode_response(data)
    except NsmError:
        pass


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=20)
    | st.text(max_size=12)
    | st.sampled_from(["GetRandom", "LockPCR", "DescribePCR", "Error", "InvalidIndex", "lock",
                       "data", "random", "document", "DescribeNSM", "locked_pcrs", "digest"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["GetRandom", "DescribePCR", "ExtendPCR", "Attestation", "Error",
                         "DescribeNSM", "lock", "data", "random", "document", "module_id",
                         "max_pcrs", "locked_pcrs", "digest", "version_major",
                         "version_minor", "version_patch"]),
        children,
        max_size=7,
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_decode_response_structured_garbage_raises_only_nsm_errors(value: object) -> None:
    try:
        decode_response(cbor2.dumps(value))
    except NsmError:
        pass


u16 = st.integers(min_value=0, max_value=0xFFFF)
opt_bytes = st.none() | st.binary(max_size=64)
requests = st.one_of(
    st.builds(DescribePcrRequest, u16),
    st.builds(ExtendPcrRequest, u16, st.binary(max_size=64)),
    st.builds(LockPcrRequest, u16),
    st.builds(LockPcrsRequest, u16),
    st.just(DescribeNsmRequest()),
    st.just(GetRandomRequest()),
    st.builds(AttestationRequest, opt_bytes, opt_bytes, opt_bytes),
)
responses = st.one_of(
    st.builds(DescribePcrResponse, st.booleans(), st.binary(max_size=64)),
    st.builds(ExtendPcrResponse, st.binary(max_size=64)),
    st.just(LockPcrResponse()),
    st.just(LockPcrsResponse()),
    st.builds(AttestationResponse, st.binary(max_size=64)),
    st.builds(GetRandomResponse, st.binary(max_size=64)),
    st.builds(ErrorResponse, st.sampled_from(list(ErrorCode))),
    st.builds(
        DescribeNsmResponse,
        u16,
        u16,
        u16,
        st.text(max_size=20),
        u16,
        st.lists(u16, unique=True, max_size=8).map(lambda xs: tuple(sorted(xs))),
        st.sampled_from(list(Digest)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(requests)
def test_requests_round_trip(request_: object) -> None:
    assert decode_request(encode_request(request_)) == request_  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(responses)
def test_responses_round_trip(response: object) -> None:
    assert decode_response(encode_response(response)) == response  # type: ignore[arg-type]
