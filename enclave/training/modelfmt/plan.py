"""Shape inference and size limits over a whole model, before any tensor exists.

`plan_model(spec, input_shape=..., num_outputs=...)` walks the layers in order with
each op's shape rule (`ops.OpDef.infer`), and refuses the model at the first layer
that cannot take its inputs or that pushes the parameter count or the per-example
activations past `limits`. The model input is integer token ids when a layer taking
ids (`embedding`, `padding_mask`) reads it directly, float features otherwise; the
output must be float logits, one per class.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from enclave.training.modelfmt.errors import LimitExceeded, ModelFormatError, ShapeMismatch
from enclave.training.modelfmt.limits import MAX_ACTIVATION_ELEMENTS, MAX_PARAMETERS, MAX_RANK, MAX_WIDTH
from enclave.training.modelfmt.ops import OPS, Context, TensorInfo
from enclave.training.modelfmt.spec import MODEL_INPUT, ModelFormat

__all__ = ["ModelPlan", "NodePlan", "plan_model"]


@dataclass(frozen=True)
class NodePlan:
    """One layer's inferred output and parameter count."""

    name: str
    label: str
    out: TensorInfo
    parameters: int


@dataclass(frozen=True)
class ModelPlan:
    """What a model will be for a given input shape and class count, within every limit."""

    input: TensorInfo
    num_outputs: int
    nodes: tuple[NodePlan, ...]
    #: Trainable parameters of the whole model.
    parameters: int
    #: Per-example elements of the input, every layer output and large layer internals.
    activation_elements: int

    def tensor(self, name: str) -> TensorInfo:
        """The inferred tensor a node (or the model input) produces."""
        if name == MODEL_INPUT:
            return self.input
        for node in self.nodes:
            if node.name == name:
                return node.out
        raise KeyError(name)


def _check_input(input_shape: Sequence[int], num_outputs: int) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (
        shape is None
        or not 1 <= len(shape) <= MAX_RANK
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise ModelFormatError(f"the input shape must be 1..{MAX_RANK} positive integers, got {input_shape!r}")
    if math.prod(shape) > MAX_ACTIVATION_ELEMENTS:
        raise LimitExceeded(
            f"the input {list(shape)} has {math.prod(shape):,} elements per example, more than the limit of "
            f"{MAX_ACTIVATION_ELEMENTS:,}"
        )
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or not 1 <= num_outputs <= MAX_WIDTH:
        raise ModelFormatError(f"the number of classes must be an integer in [1, {MAX_WIDTH}], got {num_outputs!r}")
    return shape


def plan_model(spec: ModelFormat, *, input_shape: Sequence[int], num_outputs: int) -> ModelPlan:
    """Every layer's output shape, the parameter and activation totals; refuses what cannot be built."""
    shape = _check_input(input_shape, num_outputs)
    reads_ids = any(OPS[node.op].takes_ids and node.inputs[0] == MODEL_INPUT for node in spec.nodes)
    model_input = TensorInfo(shape, "ids" if reads_ids else "float")
    tensors = {MODEL_INPUT: model_input}
    planned: list[NodePlan] = []
    parameters, activations = 0, model_input.numel
    for node in spec.nodes:
        ctx = Context(at=node.label, num_outputs=num_outputs)
        inferred = OPS[node.op].infer(node.arguments, [tensors[name] for name in node.inputs], ctx)
        parameters += inferred.parameters
        activations += inferred.out.numel + inferred.scratch
        if parameters > MAX_PARAMETERS:
            raise LimitExceeded(
                f"{node.label}: the model reaches {parameters:,} parameters here, more than the limit of "
                f"{MAX_PARAMETERS:,}"
            )
        if activations > MAX_ACTIVATION_ELEMENTS:
            raise LimitExceeded(
                f"{node.label}: activations reach {activations:,} elements per example here (output "
                f"{inferred.out}), more than the limit of {MAX_ACTIVATION_ELEMENTS:,}"
            )
        tensors[node.name] = inferred.out
        planned.append(NodePlan(node.name, node.label, inferred.out, inferred.parameters))
    last = next(node for node in spec.nodes if node.name == spec.output)
    out = tensors[spec.output]
    if out.kind != "float" or out.shape != (num_outputs,):
        if last.op == "linear" and out.kind == "float" and len(out.shape) == 1:
            raise ShapeMismatch(
                f"{last.label}: out is {out.shape[0]} but the model must give one logit per class, {num_outputs}"
            )
        raise ShapeMismatch(
            f"{last.label}: the model output is {out} but must be [{num_outputs}], one logit per class"
        )
    return ModelPlan(model_input, num_outputs, tuple(planned), parameters, activations)
