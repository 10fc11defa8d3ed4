"""The enclave's safetensors reader: known answers, the real writer's bytes, and every malformed file refused."""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import ConfigError
from enclave.training.modelfmt.errors import MalformedWeights, WeightsError, WeightsMismatch
from enclave.training.modelfmt.limits import MAX_WEIGHTS_HEADER_BYTES
from enclave.training.modelfmt.weights import check_weights, load_weights, open_weights, read_weights, shapes_of


def _file(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


# A known answer written byte by byte: every accepted dtype, a scalar, an empty tensor and metadata.
KNOWN = _file(
    {
        "__metadata__": {"format": "pt"},
        "w": _entry("F32", [2, 2], 0, 16),
        "b": _entry("F64", [2], 16, 32),
        "h": _entry("F16", [3], 32, 38),
        "z": _entry("BF16", [2], 38, 42),
        "s": _entry("F32", [], 42, 46),
        "e": _entry("F32", [0, 3], 46, 46),
    },
    struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    + struct.pack("<2d", 1e-3, -7.0)
    + struct.pack("<3e", 1.5, -0.25, 65504.0)
    # bfloat16: the top 16 bits of the float32 1.0 (0x3f800000) and -2.5 (0xc0200000).
    + struct.pack("<2H", 0x3F80, 0xC020)
    + struct.pack("<f", 42.0),
)


def test_a_hand_written_file_reads_to_its_known_tensors() -> None:
    weights = read_weights(KNOWN)
    expected = {
        "b": torch.tensor([1e-3, -7.0]), "e": torch.zeros(0, 3), "h": torch.tensor([1.5, -0.25, 65504.0]),
        "s": torch.tensor(42.0), "w": torch.tensor([[1.0, -2.0], [0.5, 3.25]]), "z": torch.tensor([1.0, -2.5]),
    }
    assert list(weights.tensors) == sorted(expected)
    for name, tensor in expected.items():
        got = weights.tensors[name]
        assert got.dtype == torch.float32 and got.shape == tensor.shape and torch.equal(got, tensor), name
    assert dict(weights.metadata) == {"format": "pt"}
    assert weights.sha256 == hashlib.sha256(KNOWN).hexdigest()
    assert weights.shapes() == {"b": (2,), "e": (0, 3), "h": (3,), "s": (), "w": (2, 2), "z": (2,)}


def test_bytes_of_the_real_safetensors_writer_read_to_the_same_tensors() -> None:
    from safetensors.torch import save

    generator = torch.Generator().manual_seed(3)
    tensors = {
        "layers.1.weight": torch.randn(16, 8, generator=generator),
        "layers.1.bias": torch.randn(16, generator=generator),
        "graph.nodes.0.weight": torch.randn(2, 3, 4, generator=generator).to(torch.float64),
        "half": torch.randn(5, generator=generator).to(torch.float16),
        "brain": torch.randn(3, 2, generator=generator).to(torch.bfloat16),
    }
    data = save(tensors, metadata={"note": "public"})
    weights = read_weights(data)
    assert set(weights.tensors) == set(tensors) and dict(weights.metadata) == {"note": "public"}
    for name, tensor in tensors.items():
        assert torch.equal(weights.tensors[name], tensor.to(torch.float32)), name


def test_weights_load_into_a_module_strictly() -> None:
    from safetensors.torch import save

    source, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    weights = read_weights(save({k: v.detach() for k, v in source.state_dict().items()}))
    load_weights(target, weights)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                 strict=True))
    with pytest.raises(WeightsMismatch, match=r"tensor 'weight' is \[3, 4\] in the weights file, the model's is "
                                              r"\[2, 4\]"):
        load_weights(torch.nn.Linear(4, 2), weights)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"weight": [3, 4]}, r"the weights file lacks tensor 'bias' \(the model's is \[3\]\)"),
        ({"weight": [3, 4], "bias": [3], "extra": [1]}, "holds tensor 'extra', which the model does not have"),
        ({"weight": [4, 3], "bias": [3]}, r"tensor 'weight' is \[4, 3\] in the weights file, the model's is \[3, 4\]"),
        ({"weight": [3, 4], "bias": [1, 3]}, r"tensor 'bias' is \[1, 3\]"),
        ({"w" * 200: [1]}, r"lacks tensor 'weight'"),
    ],
)
def test_weights_must_hold_exactly_the_models_tensors(given: dict[str, list[int]], match: str) -> None:
    from safetensors.torch import save

    weights = read_weights(save({name: torch.zeros(shape) for name, shape in given.items()}))
    with pytest.raises(WeightsMismatch, match=match) as info:
        check_weights({"weight": (3, 4), "bias": (3,)}, weights)
    assert "\n" not in str(info.value) and info.value.code == "config"


def test_a_long_extra_name_is_cut_short_in_the_message() -> None:
    from safetensors.torch import save

    weights = read_weights(save({"weight": torch.zeros(1), "x" * 256: torch.zeros(1)}))
    with pytest.raises(WeightsMismatch) as info:
        check_weights({"weight": (1,)}, weights)
    assert "x" * 64 + "...'" in str(info.value) and len(str(info.value)) < 160


def test_a_file_of_another_hash_is_refused_with_one_fixed_message() -> None:
    assert open_weights(KNOWN, hashlib.sha256(KNOWN).hexdigest()).sha256 == hashlib.sha256(KNOWN).hexdigest()
    with pytest.raises(WeightsMismatch) as info:
        open_weights(KNOWN + b" ", hashlib.sha256(KNOWN).hexdigest())
    assert str(info.value) == "the weights file does not hash to the spec's model.weights_sha256"


def test_shapes_of_a_module_name_its_state_dict() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    assert shapes_of(model) == {"0.weight": (2, 3), "0.bias": (2,), "2.weight": (1, 2)}


# -- refusals -------------------------------------------------------------------------------------

F32 = struct.pack("<f", 1.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than its 8-byte header length"),
        (b"\x02\x00\x00", "shorter than its 8-byte header length"),
        (struct.pack("<Q", MAX_WEIGHTS_HEADER_BYTES + 1) + b"{}", "exceeds"),
        (struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds"),
        (struct.pack("<Q", 10) + b"{}", "runs past the end of the file"),
        (_file(b"\xff\xfe"), "not UTF-8"),
        (_file(b"{"), "not a JSON object"),
        (_file(b"[]"), "not a JSON object"),
        (_file(b"[" * 100_000 + b"]" * 100_000), "not a JSON object"),
        (_file(b'{"a": NaN}'), "holds NaN, which is not JSON"),
        (_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', F32), "key 'a' twice"),
        (_file({"__metadata__": {"a": 1}}), "__metadata__ is not an object of strings"),
        (_file({"__metadata__": []}), "__metadata__ is not an object of strings"),
        (_file({"": _entry("F32", [1], 0, 4)}, F32), "names a tensor '': names are 1..256"),
        (_file({"n" * 257: _entry("F32", [1], 0, 4)}, F32), "names are 1..256"),
        (_file({"a": []}), "not an object of exactly dtype, shape and data_offsets"),
        (_file({"a": {**_entry("F32", [1], 0, 4), "more": 1}}, F32), "exactly dtype, shape and data_offsets"),
        (_file({"a": _entry("I64", [1], 0, 8)}, bytes(8)), "dtype 'I64'; only F32, F64, F16, BF16 are accepted"),
        (_file({"a": _entry("BOOL", [1], 0, 1)}, bytes(1)), "dtype 'BOOL'"),
        (_file({"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}, F32), "dtype int"),
        (_file({"a": _entry("F32", [-1], 0, 4)}, F32), "a shape that is not a list of at most 8 integers"),
        (_file({"a": _entry("F32", [1] * 9, 0, 4)}, F32), "at most 8 integers"),
        (_file({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, F32), "at most 8 integers"),
        (_file({"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, F32), "at most 8 integers"),
        (_file({"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}, F32), "at most 8 integers"),
        (_file({"a": _entry("F32", [10**8], 0, 4)}, F32), "at most 8 integers in [0, 50000000]"),
        (_file({"a": _entry("F32", [10_000, 10_000], 0, 4 * 10**8)}), "more than the limit of 50,000,000 values"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, F32), "not two non-negative integers"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, F32), "not two non-negative"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}}, F32), "not two non-negative"),
        (_file({"a": _entry("F32", [2], 0, 4)}, F32), "spans 4 bytes; [2] of F32 takes 8"),
        (_file({"a": _entry("F32", [1], 4, 0)}, F32), "spans -4 bytes"),
        (_file({"a": _entry("F32", [1], 4, 8)}, F32 * 2), "starts at byte 4 of the data, expected 0"),
        (_file({"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 2, 6)}, F32 * 2), "starts at byte 2"),
        (_file({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [], 4, 8)}, F32 * 2), "starts at byte 4"),
        (_file({"a": _entry("F32", [2], 0, 8), "e": _entry("F32", [0], 4, 4)}, F32 * 2), "'e' of the weights file starts"),
        (_file({"a": _entry("F32", [1], 0, 4)}, F32 * 2), "data holds 8 bytes, its tensors cover 4"),
        (_file({"a": _entry("F32", [1], 0, 4)}, b""), "data holds 0 bytes, its tensors cover 4"),
        (_file({}, b"x"), "data holds 1 bytes, its tensors cover 0"),
        (_file({f"t{i}": _entry("F32", [0], 0, 0) for i in range(16_385)}), "16385 tensors, more than 16384"),
        (_file({"a": _entry("F32", [1], 0, 4)}, struct.pack("<f", float("nan"))), "not finite"),
        (_file({"a": _entry("F64", [1], 0, 8)}, struct.pack("<d", 1e300)), "not finite as float32"),
        (_file({"a": _entry("BF16", [1], 0, 2)}, struct.pack("<H", 0x7F80)), "not finite"),
    ],
)
def test_malformed_files_are_refused_in_one_line(data: bytes, match: str) -> None:
    with pytest.raises(MalformedWeights) as info:
        read_weights(data)
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message and len(message) <= 240 and isinstance(info.value, ConfigError)


def test_an_empty_file_of_no_tensors_is_valid() -> None:
    weights = read_weights(_file({}))
    assert dict(weights.tensors) == {} and dict(weights.metadata) == {}


# -- properties: only the reader's typed error, whatever the bytes --------------------------------


def _read_or_refuse(data: bytes) -> None:
    try:
        weights = read_weights(data)
    except WeightsError as err:
        assert "\n" not in str(err) and len(str(err)) <= 400
        return
    assert all(t.dtype == torch.float32 for t in weights.tensors.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_read_or_raise_the_readers_error(data: bytes) -> None:
    _read_or_refuse(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_arbitrary_headers_read_or_raise_the_readers_error(header: bytes) -> None:
    _read_or_refuse(_file(header, bytes(64)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(KNOWN) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(KNOWN)))
def test_mutated_valid_files_read_or_raise_the_readers_error(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(KNOWN)
    for at, value in flips:
        data[at] = value
    _read_or_refuse(bytes(data))
    _read_or_refuse(bytes(data[:cut]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(json.loads(KNOWN[8:8 + struct.unpack("<Q", KNOWN[:8])[0]]))),
       st.sampled_from(["dtype", "shape", "data_offsets", None]), _json)
def test_valid_headers_with_one_value_replaced_read_or_raise_the_readers_error(
    name: str, key: str | None, value: Any
) -> None:
    length = struct.unpack("<Q", KNOWN[:8])[0]
    header, data = json.loads(KNOWN[8:8 + length]), KNOWN[8 + length:]
    if key is None or not isinstance(header[name], dict):
        header[name] = value
    else:
        header[name][key] = value
    _read_or_refuse(_file(json.dumps(header).encode(), data))
