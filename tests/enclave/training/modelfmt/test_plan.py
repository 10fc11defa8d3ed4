"""Whole-model shape inference and size limits, before any tensor is built."""
from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import torch

from enclave.training.modelfmt import build
from enclave.training.modelfmt.errors import LimitExceeded, ModelFormatError, ShapeMismatch
from enclave.training.modelfmt.limits import (
    MAX_ACTIVATION_ELEMENTS,
    MAX_PARAMETERS,
    MAX_SEQUENCE_LENGTH,
)
from enclave.training.modelfmt.ops import TensorInfo
from enclave.training.modelfmt.plan import plan_model
from enclave.training.modelfmt.presets import PRESETS
from enclave.training.modelfmt.spec import parse_model
from tests.enclave.training.modelfmt.cases import CASES, CLASSES, Case, case


def _plan(model: dict[str, Any], input_shape: tuple[int, ...], num_outputs: int = CLASSES) -> Any:
    return plan_model(parse_model(model), input_shape=input_shape, num_outputs=num_outputs)


def _layers(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "layers": list(layers)}


def _refused(model: dict[str, Any], input_shape: tuple[int, ...], match: str,
             error: type[ModelFormatError] = ShapeMismatch, num_outputs: int = CLASSES) -> str:
    with pytest.raises(error) as info:
        _plan(model, input_shape, num_outputs)
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message
    return message


def test_the_tanh_cnn_preset_infers_the_registered_shapes() -> None:
    plan = _plan(dict(PRESETS["tanh_cnn"]), (1, 28, 28), 10)
    assert [n.out.shape for n in plan.nodes] == [
        (16, 14, 14), (16, 14, 14), (16, 13, 13), (32, 5, 5), (32, 5, 5), (32, 4, 4), (512,), (32,), (32,), (10,),
    ]
    assert [n.label for n in plan.nodes][:2] == ["model.layers[0] (conv2d)", "model.layers[1] (tanh)"]
    assert plan.parameters == (16 * 64 + 16) + (32 * 16 * 16 + 32) + (512 * 32 + 32) + (32 * 10 + 10)
    assert plan.input == TensorInfo((1, 28, 28)) and plan.num_outputs == 10


def test_the_text_case_infers_ids_masks_and_sequences() -> None:
    c = case("text_transformer")
    plan = _plan(c.model, c.input_shape)
    assert plan.input == TensorInfo((6,), "ids")
    assert {n.name: n.out for n in plan.nodes} == {
        "mask": TensorInfo((6,), "mask"),
        "emb": TensorInfo((6, 8)),
        "enc": TensorInfo((6, 8)),
        "pool": TensorInfo((8,)),
        "cls": TensorInfo((8,)),
        "joined": TensorInfo((16,)),
        "logits": TensorInfo((CLASSES,)),
    }
    # Attention scores count towards the per-example activations.
    assert plan.activation_elements > 2 * 2 * 6 * 6


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_every_case_plans(c: Case) -> None:
    plan = _plan(c.model, c.input_shape)
    assert plan.nodes[-1].out == TensorInfo((CLASSES,))
    assert plan.parameters == sum(n.parameters for n in plan.nodes)


@pytest.mark.parametrize(
    ("model", "input_shape", "match"),
    [
        (_layers({"type": "linear", "out": 4}, {"type": "linear", "out": 26}), (5,),
         "model.layers[1] (linear): out is 26 but the model must give one logit per class, 3"),
        (_layers({"type": "linear", "out": 4}, {"type": "relu"}), (5,),
         "model.layers[1] (relu): the model output is [4] but must be [3], one logit per class"),
        (_layers({"type": "linear"}), (2, 5), "model.layers[0] (linear): the model output is [2, 3] but must be [3]"),
        (_layers({"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "flatten"}, {"type": "linear"}), (784,),
         "model.layers[0] (conv2d): takes [channels, height, width], got [784]"),
        (_layers({"type": "conv2d", "out_channels": 4, "kernel": 9}, {"type": "flatten"}, {"type": "linear"}), (1, 8, 8),
         "model.layers[0] (conv2d): kernel [9, 9] does not fit input [1, 8, 8] padded by [0, 0]"),
        (_layers({"type": "conv1d", "out_channels": 4, "kernel": 3, "groups": 2}, {"type": "flatten"}, {"type": "linear"}),
         (3, 8), "input channels 3 (input [3, 8]) are not divisible by groups 2"),
        (_layers({"type": "group_norm", "groups": 4}, {"type": "flatten"}, {"type": "linear"}), (6, 2),
         "model.layers[0] (group_norm): input channels 6 (input [6, 2]) are not divisible by groups 4"),
        (_layers({"type": "reshape", "shape": [5, 5]}, {"type": "flatten"}, {"type": "linear"}), (24,),
         "model.layers[0] (reshape): cannot reshape [24] (24 elements) to [5, 5] (25 elements)"),
        (_layers({"type": "max_pool2d", "kernel": 2}, {"type": "flatten"}, {"type": "linear"}), (8, 8),
         "takes [channels, height, width], got [8, 8]"),
        (_layers({"type": "scatter"}, {"type": "flatten"}, {"type": "linear"}), (1, 6, 6),
         "model.layers[0] (scatter): image sides of [1, 6, 6] must be multiples of 2^J = 4"),
        (_layers({"type": "scatter"}, {"type": "flatten"}, {"type": "linear"}), (2, 8, 8),
         "takes one-channel images [1, height, width] or [height, width], got [2, 8, 8]"),
        (_layers({"type": "scatter", "J": 2}, {"type": "flatten"}, {"type": "linear"}), (1, 4, 4),
         "image [1, 4, 4] is too small for J = 2"),
        (_layers({"type": "transformer_encoder", "dim": 8, "heads": 2, "ff_dim": 8}, {"type": "mean_pool"}, {"type": "linear"}),
         (5, 6), "model.layers[0] (transformer_encoder): dim is 8 but the input is [5, 6]"),
        (_layers({"type": "mean_pool"}, {"type": "linear"}), (5,), "model.layers[0] (mean_pool): takes [positions, features], got [5]"),
        (_layers({"type": "embedding", "vocab": 5, "dim": 2}, {"type": "linear", "out": 2}, {"type": "relu"},
                 {"type": "embedding", "vocab": 5, "dim": 2}, {"type": "flatten"}, {"type": "linear"}), (4,),
         "model.layers[3] (embedding): takes integer token ids, got float features [4, 2]"),
        (_layers({"type": "padding_mask"}, {"type": "linear"}), (4,), "model.layers[1] (linear): takes float features [..., features], got a padding mask [4]"),
        (_layers({"type": "padding_mask"}, {"type": "padding_mask"}, {"type": "linear"}), (4,),
         "model.layers[1] (padding_mask): takes integer token ids, got a padding mask [4]"),
    ],
)
def test_shape_mismatches_name_the_layer_and_the_shapes(model: dict[str, Any], input_shape: tuple[int, ...], match: str) -> None:
    _refused(model, input_shape, match)


def _graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "graph": list(nodes), "output": nodes[-1]["name"]}


@pytest.mark.parametrize(
    ("model", "input_shape", "match"),
    [
        (_graph({"name": "a", "type": "linear", "out": 4, "inputs": ["input"]},
                {"name": "b", "type": "add", "inputs": ["a", "input"]},
                {"name": "c", "type": "linear", "inputs": ["b"]}), (5,),
         "model.graph[1] 'b' (add): inputs have different shapes [4] and [5]"),
        (_graph({"name": "a", "type": "reshape", "shape": [2, 3], "inputs": ["input"]},
                {"name": "b", "type": "concat", "dim": 1, "inputs": ["a", "input"]},
                {"name": "c", "type": "linear", "inputs": ["b"]}), (6,),
         "model.graph[1] 'b' (concat): cannot concatenate [2, 3] and [6] along dim 1"),
        (_graph({"name": "b", "type": "concat", "dim": 1, "inputs": ["input", "input"]},
                {"name": "c", "type": "linear", "inputs": ["b"]}), (6,),
         "model.graph[0] 'b' (concat): dim 1 is out of range for inputs of 1 dimensions ([6])"),
        (_graph({"name": "e", "type": "embedding", "vocab": 5, "dim": 4, "inputs": ["input"]},
                {"name": "m", "type": "padding_mask", "inputs": ["input"]},
                {"name": "t", "type": "transformer_encoder", "dim": 4, "heads": 2, "ff_dim": 4, "inputs": ["e", "e"]},
                {"name": "p", "type": "mean_pool", "inputs": ["t", "m"]},
                {"name": "c", "type": "linear", "inputs": ["p"]}), (6,),
         "model.graph[2] 't' (transformer_encoder): takes a padding mask [6] as its second input, got [6, 4]"),
        (_graph({"name": "e", "type": "embedding", "vocab": 5, "dim": 4, "inputs": ["input"]},
                {"name": "l", "type": "linear", "out": 4, "inputs": ["input"]},
                {"name": "a", "type": "add", "inputs": ["e", "l"]},
                {"name": "p", "type": "mean_pool", "inputs": ["a"]},
                {"name": "c", "type": "linear", "inputs": ["p"]}), (6,),
         "model.graph[1] 'l' (linear): takes float features [..., features], got token ids [6]"),
    ],
)
def test_graph_shape_mismatches_name_the_node(model: dict[str, Any], input_shape: tuple[int, ...], match: str) -> None:
    _refused(model, input_shape, match)


@pytest.mark.parametrize(
    ("input_shape", "num_outputs", "match"),
    [
        ((), 3, "the input shape must be 1..4 positive integers, got ()"),
        ((1, 1, 1, 1, 1), 3, "the input shape must be 1..4 positive integers"),
        ((0,), 3, "the input shape must be 1..4 positive integers"),
        ((True,), 3, "the input shape must be 1..4 positive integers"),
        ("784", 3, "the input shape must be 1..4 positive integers, got '784'"),
        ((5,), 0, "the number of classes must be an integer in [1, 65536], got 0"),
        ((5,), True, "the number of classes must be an integer"),
    ],
)
def test_bad_input_shapes_and_class_counts_are_refused(input_shape: Any, num_outputs: Any, match: str) -> None:
    _refused(_layers({"type": "linear"}), input_shape, match, ModelFormatError, num_outputs)


def test_too_many_parameters_are_refused_at_the_layer_that_crosses_the_limit() -> None:
    wide = {"type": "linear", "out": 4096}
    message = _refused(_layers(wide, wide, wide, wide, {"type": "linear"}), (4096,), "", LimitExceeded)
    assert message.startswith("model.layers[2] (linear): the model reaches 50,343,936 parameters here")
    assert f"{MAX_PARAMETERS:,}" in message
    big_vocab = {"type": "embedding", "vocab": 1_048_576, "dim": 64}
    _refused(_layers(big_vocab, {"type": "mean_pool"}, {"type": "linear"}), (8,),
             "model.layers[0] (embedding): the model reaches 67,108,864 parameters", LimitExceeded)


def test_too_large_activations_are_refused() -> None:
    message = _refused(_layers({"type": "conv2d", "out_channels": 512, "kernel": 1}, {"type": "flatten"}, {"type": "linear"}),
                       (3, 128, 128), "", LimitExceeded)
    assert message.startswith("model.layers[0] (conv2d): activations reach") and "[512, 128, 128]" in message
    _refused(_layers({"type": "linear"}), (MAX_ACTIVATION_ELEMENTS + 1,), "more than the limit of 8,000,000", LimitExceeded)
    # Attention scores grow with the square of the sequence: 64 heads of 4096 x 4096.
    attention = {"type": "transformer_encoder", "dim": 64, "heads": 64, "ff_dim": 64}
    _refused(_layers(attention, {"type": "mean_pool"}, {"type": "linear"}), (4096, 64),
             "model.layers[0] (transformer_encoder): activations reach", LimitExceeded)


def test_too_long_sequences_are_refused() -> None:
    embed = {"type": "embedding", "vocab": 10, "dim": 2}
    _refused(_layers(embed, {"type": "mean_pool"}, {"type": "linear"}), (MAX_SEQUENCE_LENGTH + 1,),
             f"model.layers[0] (embedding): 4097 token ids per example, more than the limit of {MAX_SEQUENCE_LENGTH}",
             LimitExceeded)
    _refused(_layers({"type": "mean_pool"}, {"type": "linear"}), (MAX_SEQUENCE_LENGTH + 1, 1),
             "model.layers[0] (mean_pool): 4097 positions, more than the limit of 4096", LimitExceeded)


def test_limits_are_checked_before_anything_is_built() -> None:
    wide = {"type": "linear", "out": 65536}
    spec = parse_model(_layers(wide, wide, {"type": "linear"}))
    with mock.patch.object(build, "_assemble", side_effect=AssertionError("built")) as assemble:
        with pytest.raises(LimitExceeded):
            build.build_model(spec, input_shape=(65536,), num_outputs=3, generator=torch.Generator())
    assemble.assert_not_called()
