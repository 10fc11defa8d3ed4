"""The CBOR client the /dev/nsm backend uses, driven through the mock NSM's raw
request handler instead of the ioctl (which needs Nitro hardware)."""
from __future__ import annotations

import hashlib

import cbor2
import pytest

from enclave.nsm.client import ProtocolNsm
from enclave.nsm.errors import (
    NsmClosed,
    NsmInputTooLarge,
    NsmInvalidIndex,
    NsmInvalidResponse,
    NsmMalformedResponse,
    NsmReadOnlyIndex,
)
from enclave.nsm.interface import Nsm
from enclave.nsm.protocol import GetRandomResponse, LockPcrResponse
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.local.nsm_wire import decode_request, encode_response

PCRS = {0: b"\x01" * 48, 1: b"\x02" * 48, 2: b"\x03" * 48}


@pytest.fixture()
def pair(ca: LocalCa) -> tuple[MockNsm, ProtocolNsm]:
    mock = MockNsm(ca, PCRS, module_id="i-mock0000000000000-enc0000000000000000")
    return mock, ProtocolNsm(mock.handle_request)


def test_is_an_nsm(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    assert isinstance(pair[1], Nsm)


def test_describe(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    mock, client = pair
    assert client.describe() == mock.describe()
    assert client.describe().max_pcrs == 32
    assert client.describe().locked_pcrs == tuple(range(16))


def test_pcr_operations(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    _, client = pair
    assert client.describe_pcr(0).value == PCRS[0]
    assert client.describe_pcr(0).locked
    expected = hashlib.sha384(bytes(48) + b"abc").digest()
    assert client.extend_pcr(16, b"abc") == expected
    assert client.describe_pcr(16).value == expected
    client.lock_pcr(16)
    assert client.describe_pcr(16).locked
    with pytest.raises(NsmReadOnlyIndex):
        client.extend_pcr(16, b"x")
    with pytest.raises(NsmReadOnlyIndex):
        client.extend_pcr(0, b"x")
    with pytest.raises(NsmInvalidIndex):
        client.describe_pcr(32)


def test_get_random_spans_several_requests(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    _, client = pair
    data = client.get_random(1000)  # four 256-byte NSM answers
    assert len(data) == 1000
    assert client.get_random(0) == b""
    assert client.get_random(1000) != data


def test_attest_through_the_wire(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    _, client = pair
    doc = client.attest(user_data=b"u" * 1024, nonce=b"n" * 1024, public_key=b"p" * 1024)
    payload = cbor2.loads(cbor2.loads(doc)[2])
    assert (payload["user_data"], payload["nonce"], payload["public_key"]) == (
        b"u" * 1024, b"n" * 1024, b"p" * 1024,
    )
    with pytest.raises(NsmInputTooLarge):
        client.attest(user_data=bytes(1025))


def test_close_is_final(pair: tuple[MockNsm, ProtocolNsm]) -> None:
    closed: list[bool] = []
    _, client = pair
    client = ProtocolNsm(client._roundtrip, on_close=lambda: closed.append(True))
    with client as entered:
        assert entered is client
    assert closed == [True]
    client.close()
    assert closed == [True]
    with pytest.raises(NsmClosed):
        client.get_random(1)


def test_garbage_answer_is_malformed() -> None:
    client = ProtocolNsm(lambda raw: b"\xff\x00garbage")
    with pytest.raises(NsmMalformedResponse):
        client.get_random(8)


def test_answer_to_another_request_is_invalid_response() -> None:
    client = ProtocolNsm(lambda raw: encode_response(LockPcrResponse()))
    with pytest.raises(NsmInvalidResponse):
        client.describe_pcr(0)


def test_empty_random_answer_does_not_loop_forever() -> None:
    seen: list[object] = []

    def roundtrip(raw: bytes) -> bytes:
        seen.append(decode_request(raw))
        return encode_response(GetRandomResponse(b""))

    with pytest.raises(NsmInvalidResponse):
        ProtocolNsm(roundtrip).get_random(8)
    assert len(seen) == 1
