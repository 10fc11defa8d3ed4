from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.certificate.body import (
    MAX_BODY_SIZE,
    CertificateBody,
    DatasetRecord,
    ReleasedMetric,
    ResumedFrom,
    encode_body,
)
from enclave.certificate.errors import MalformedCertificate
from enclave.errors import HermeticError
from enclave.hazmat.cbor import dumps_f64
from parent.verify.body import body_to_json, decode_body
from tests.support.certificates import make_body


def _kat_body() -> CertificateBody:
    # Deliberately tiny values: this pins the encoding, not the semantics.
    return CertificateBody(
        job_id="j", spec_sha256="s", model_spec_sha256="a", pcrs={2: "22", 0: "00"},
        datasets=(DatasetRecord("d", "h", "k", {"dataset_id": "d"}, 7, 2.25, 2.75),),
        public_datasets=(), sampling_rate=0.5, noise_multiplier=1.0, max_grad_norm=1,
        steps=3, delta=1e-5, epsilon={"prv": 2.5}, accountant="prv",
        ledger=[{"q": 0.5, "sigma": 1.0, "steps": 3}], model_sha256="m", checkpoint_sha256="c",
        metrics=(ReleasedMetric("acc", 0.75, "public_eval", 3, 0.0),),
        started_at="2025-01-01T00:00:00.000Z", finished_at="2025-01-01T01:00:00.000Z",
        budget={"max_epsilon": 3.0, "delta": 1e-5},
        resumed_from=ResumedFrom(sealed_sha256="r", step=2),
    )


KAT_HEX = (
    "b8186470637273a200623030026232326564656c7461fb3ee4f8b588e368f165"
    "73746570730366627564676574a26564656c7461fb3ee4f8b588e368f16b6d61"
    "785f657073696c6f6efb4008000000000000666a6f625f6964616a666c656467"
    "657281a36171fb3fe0000000000000657369676d61fb3ff00000000000006573"
    "746570730367657073696c6f6ea163707276fb4004000000000000676d657472"
    "69637381a5646b696e646b7075626c69635f6576616c646e616d656361636364"
    "73746570036576616c7565fb3fe80000000000006c657073696c6f6e5f636f73"
    "74fb00000000000000006776657273696f6e0568646174617365747381a7666b"
    "65795f6964616b67657073696c6f6efb4002000000000000677265636f726473"
    "076a646174617365745f696461646d7365616c65645f73686132353661686f64"
    "6174617365745f657073696c6f6efb400600000000000072656e637279707469"
    "6f6e5f636f6e74657874a16a646174617365745f696461646a6163636f756e74"
    "616e74637072766a737461727465645f61747818323032352d30312d30315430"
    "303a30303a30302e3030305a6b66696e69736865645f61747818323032352d30"
    "312d30315430313a30303a30302e3030305a6b737065635f7368613235366173"
    "6c6d6f64656c5f736861323536616d6c6e65696768626f7572696e67687a6572"
    "6f2d6f75746c707269766163795f756e6974667265636f72646c726573756d65"
    "645f66726f6da26473746570026d7365616c65645f73686132353661726d6d61"
    "785f677261645f6e6f726dfb3ff00000000000006d73616d706c696e675f7261"
    "7465fb3fe00000000000006f7075626c69635f646174617365747380706e6f69"
    "73655f6d756c7469706c696572fb3ff000000000000071636865636b706f696e"
    "745f7368613235366163716d6f64656c5f737065635f7368613235366161"
)


def test_known_answer_bytes() -> None:
    assert encode_body(_kat_body()).hex() == KAT_HEX


def test_known_answer_dataset_record_by_hand() -> None:
    # Written out from RFC 8949 by hand, not by the encoder: a 24-entry body map (v4 dropped the
    # body-level dataset_epsilon, v5 added model_spec_sha256), version 5, and the one dataset record as a 7-entry map whose
    # keys sort by length then bytes, with this job's epsilon 2.25 and the dataset's 2.75.
    record = (
        "81a7"                                   # array(1), map(7)
        "666b65795f6964" "616b"                  # "key_id": "k"
        "67657073696c6f6e" "fb4002000000000000"  # "epsilon": 2.25 (float64)
        "677265636f726473" "07"                  # "records": 7
        "6a646174617365745f6964" "6164"          # "dataset_id": "d"
        "6d7365616c65645f736861323536" "6168"    # "sealed_sha256": "h"
        "6f646174617365745f657073696c6f6e" "fb4006000000000000"  # "dataset_epsilon": 2.75
        "72656e6372797074696f6e5f636f6e74657874" "a1"  # "encryption_context": map(1)
    )
    assert KAT_HEX.startswith("b818")
    assert "6776657273696f6e05" + "68646174617365747" + "3" + record in KAT_HEX
    assert "6f646174617365745f657073696c6f6e" not in KAT_HEX.replace(record, "")


def test_known_answer_structure_by_hand() -> None:
    data = encode_body(_kat_body())
    # 24 keys: past 23 the count takes a byte of its own (0xb8 0x18); the shortest key first
    # (length-first canonical ordering).
    assert data[:7] == b"\xb8\x18\x64pcrs"
    # Version 5 names the model format's hash; version 4 states each dataset's epsilons in its
    # record (below); version 3 the resume lineage; version 2 the unit of privacy and the
    # neighbouring relation.
    assert b"\x67version\x05" in data
    # model_spec_sha256 (17 characters, 0x71) sorts after checkpoint_sha256, the other 17-character
    # key ("c" < "m"), so it is the last entry: text(17) then the one-character text "a".
    assert data.endswith(b"\x71checkpoint_sha256\x61c" + b"\x71model_spec_sha256\x61a")
    # resumed_from by hand: a map of 2, "step" (4 characters) before "sealed_sha256" (13).
    assert b"\x6cresumed_from\xa2\x64step\x02\x6dsealed_sha256\x61r" in data
    # A run from step 0 says so with null, never by leaving the key out.
    fresh = encode_body(dataclasses.replace(_kat_body(), resumed_from=None))
    assert b"\x6cresumed_from\xf6" in fresh and len(fresh) == len(data) - len(b"\xa2\x64step\x02\x6dsealed_sha256\x61r") + 1
    assert b"\x6cprivacy_unit\x66record" in data
    assert b"\x6cneighbouring\x68zero-out" in data
    assert b"\x67epsilon\xfb" + struct.pack(">d", 2.25) + b"\x67records\x07" in data
    assert b"\x6fdataset_epsilon\xfb" + struct.pack(">d", 2.75) + b"\x72encryption_context" in data
    # A ledger segment written by hand: keys q, sigma, steps; floats as float64 even
    # when float16 could hold them exactly (0.5, 1.0).
    segment = (b"\xa3" + b"\x61q" + b"\xfb" + struct.pack(">d", 0.5)
               + b"\x65sigma" + b"\xfb" + struct.pack(">d", 1.0) + b"\x65steps" + b"\x03")
    assert segment in data
    # epsilon_cost 0.0 is nine bytes of float64, not the 3-byte float16 cbor2 would pick.
    assert b"\x6cepsilon_cost\xfb" + bytes(8) in data
    # An int given for max_grad_norm is written as a float.
    assert b"\x6dmax_grad_norm\xfb" + struct.pack(">d", 1.0) in data


def test_decode_round_trip_and_reencode() -> None:
    body = make_body()
    data = encode_body(body)
    decoded = decode_body(data)
    assert decoded == body
    assert encode_body(decoded) == data
    assert decode_body(bytes.fromhex(KAT_HEX)) == _kat_body()


def test_heterogeneous_ledger_round_trip() -> None:
    ledger = [{"q": 0.01, "sigma": 1.1, "steps": 60}, {"q": 0.02, "sigma": 1.5, "steps": 40}]
    body = make_body(ledger=ledger)
    assert decode_body(encode_body(body)).ledger == tuple(ledger)


def test_segment_objects_are_accepted() -> None:
    @dataclasses.dataclass
    class Segment:
        q: float
        sigma: float
        steps: int

    body = dataclasses.replace(make_body(), ledger=[Segment(0.01, 1.1, 100)])
    assert body.ledger == ({"q": 0.01, "sigma": 1.1, "steps": 100},)


def test_body_to_json_is_json() -> None:
    shown = body_to_json(make_body())
    text = json.dumps(shown)
    assert json.loads(text)["pcrs"]["0"] == shown["pcrs"]["0"]
    assert shown["ledger"] == [{"q": 0.01, "sigma": 1.1, "steps": 100}]
    assert shown["datasets"][0]["encryption_context"]["dataset_id"] == "patients-2024"


def _wire() -> dict[str, Any]:
    return cbor2.loads(encode_body(make_body()))


def _mutated(change: Any) -> bytes:
    wire = _wire()
    change(wire)
    return dumps_f64(wire)


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.pop("model_sha256"),
        lambda w: w.update(extra=1),
        lambda w: w.update(version=1),
        lambda w: w.update(version=2),
        lambda w: w.pop("resumed_from"),
        lambda w: w.update(resumed_from={"step": 1}),
        lambda w: w.update(resumed_from={"sealed_sha256": "r", "step": -1}),
        lambda w: w.update(resumed_from={"sealed_sha256": "", "step": 1}),
        lambda w: w.update(resumed_from=[]),
        lambda w: w.update(version=3),
        lambda w: w.update(version=4),
        lambda w: w.update(version=6),
        lambda w: w.pop("model_spec_sha256"),
        lambda w: w.update(model_spec_sha256=""),
        lambda w: w.update(model_spec_sha256=b"\x00" * 32),
        lambda w: w.update(dataset_epsilon=2.5),
        lambda w: w.update(steps=True),
        lambda w: w.update(steps=-1),
        lambda w: w.update(steps=100.0),
        lambda w: w.update(sampling_rate=1),
        lambda w: w.update(delta="1e-5"),
        lambda w: w.update(job_id=""),
        lambda w: w.update(job_id=b"job"),
        lambda w: w.update(pcrs={0: bytes(48)}),
        lambda w: w.update(pcrs={"0": "00"}),
        lambda w: w.update(pcrs={}),
        lambda w: w.update(epsilon={}),
        lambda w: w.update(epsilon={"prv": 1}),
        lambda w: w.update(budget={"max_epsilon": 8.0}),
        lambda w: w.update(datasets={}),
        lambda w: w["datasets"][0].pop("records"),
        lambda w: w["datasets"][0].pop("dataset_epsilon"),
        lambda w: w["datasets"][0].update(epsilon=1),
        lambda w: w["datasets"][0].update(dataset_epsilon="2.5"),
        lambda w: w["datasets"][0].update(encryption_context={"a": 1}),
        lambda w: w["ledger"][0].update(q=1),
        lambda w: w["ledger"][0].update(extra=0.0),
        lambda w: w["ledger"].append([0.1, 1.0, 3]),
        lambda w: w["metrics"][0].update(value=1),
        lambda w: w["metrics"][0].update(step=None),
        lambda w: w["public_datasets"][0].update(records=-5),
    ],
)
def test_decode_rejects_wrong_keys_and_types(change: Any) -> None:
    with pytest.raises(MalformedCertificate):
        decode_body(_mutated(change))


def test_decode_rejects_non_canonical_encodings() -> None:
    wire = _wire()
    # Same data, cbor2's own canonical form: floats shrink to float16/32.
    with pytest.raises(MalformedCertificate, match="canonical"):
        decode_body(cbor2.dumps(wire, canonical=True))
    # Same data, keys in insertion (non-canonical) order.
    with pytest.raises(MalformedCertificate, match="canonical"):
        decode_body(cbor2.dumps(dict(reversed(list(wire.items())))))
    data = encode_body(make_body())
    # Indefinite-length outer map.
    items = b"".join(dumps_f64(k) + dumps_f64(v) for k, v in cbor2.loads(data).items())
    with pytest.raises(MalformedCertificate):
        decode_body(b"\xbf" + items + b"\xff")
    with pytest.raises(MalformedCertificate, match="trailing"):
        decode_body(data + b"\x00")
    with pytest.raises(MalformedCertificate):
        decode_body(b"\xd8\x18" + dumps_f64(data))  # tag 24 around the body
    with pytest.raises(MalformedCertificate):
        decode_body(data[:-1])


def test_decode_rejects_duplicate_keys() -> None:
    data = encode_body(make_body())
    # Bump the map length by one and repeat the first entry ("pcrs").
    head, first_key = data[:2], cbor2.dumps("pcrs")
    assert head == b"\xb8\x18"  # 24 entries
    start = len(first_key) + 2
    value = dumps_f64(cbor2.loads(data)["pcrs"])
    forged = b"\xb8\x19" + first_key + value + data[2:]
    assert forged[start:start + len(value)] == value
    with pytest.raises(MalformedCertificate):
        decode_body(forged)


def test_oversized_body_is_refused_unread() -> None:
    with pytest.raises(MalformedCertificate, match="more than"):
        decode_body(b"\xa0" * (MAX_BODY_SIZE + 1))


def test_constructor_refuses_non_finite_and_bool() -> None:
    with pytest.raises(MalformedCertificate, match="finite"):
        make_body(noise_multiplier=float("nan"))
    with pytest.raises(MalformedCertificate, match="finite"):
        make_body(epsilon={"prv": float("inf")})
    with pytest.raises(MalformedCertificate):
        make_body(steps=True)
    with pytest.raises(MalformedCertificate):
        make_body(metrics=({"name": "x"},))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_hermetic_errors(data: bytes) -> None:
    try:
        decode_body(data)
    except HermeticError:
        pass


_VALID = encode_body(make_body(epsilon={"prv": 1.0, "rdp": 1.25}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1,
                max_size=4),
       st.integers(len(_VALID) - 8, len(_VALID)))
def test_mutated_bodies_raise_only_hermetic_errors(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for position, value in flips:
        data[position] = value
    candidate = bytes(data[:cut])
    try:
        body = decode_body(candidate)
    except HermeticError:
        return
    # Whatever still decodes must re-encode to exactly the bytes it came from.
    assert encode_body(body) == candidate


def test_sets_are_refused_for_ordered_lists() -> None:
    body = make_body()
    with pytest.raises(MalformedCertificate, match="not a list"):
        dataclasses.replace(body, metrics=set(body.metrics))


def test_a_privacy_ledger_feeds_the_body_directly() -> None:
    from enclave.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(1e-5)
    ledger.record(0.01, 1.1, steps=60)
    ledger.record(0.02, 1.5, steps=40)
    from_segments = dataclasses.replace(make_body(), ledger=ledger.segments)
    from_dict = dataclasses.replace(make_body(), ledger=ledger.to_dict()["segments"])
    assert from_segments.ledger == from_dict.ledger == (
        {"q": 0.01, "sigma": 1.1, "steps": 60}, {"q": 0.02, "sigma": 1.5, "steps": 40})
