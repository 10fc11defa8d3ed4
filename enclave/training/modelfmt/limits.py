"""Size limits of the declarative model format, checked before any tensor is built.

They bound what one job can make the enclave allocate: a model is parsed, then its
shapes, parameter count and per-example activations are inferred from the spec and
the input shape alone (`plan.plan_model`), and only a model within every limit is
built. The values leave ample room for the models DP-SGD trains well on one CPU
enclave (DP favours small models) while keeping a hostile spec from asking for
gigabytes of weights or activations.
"""
from __future__ import annotations

__all__ = [
    "MAX_ACTIVATION_ELEMENTS",
    "MAX_HEADS",
    "MAX_INPUTS",
    "MAX_KERNEL",
    "MAX_LAYERS",
    "MAX_NAME_LENGTH",
    "MAX_PARAMETERS",
    "MAX_RANK",
    "MAX_SCATTER_J",
    "MAX_SCATTER_L",
    "MAX_SEQUENCE_LENGTH",
    "MAX_STRIDE",
    "MAX_VOCAB",
    "MAX_WEIGHTS_BYTES",
    "MAX_WEIGHTS_HEADER_BYTES",
    "MAX_WEIGHTS_NAME",
    "MAX_WEIGHTS_RANK",
    "MAX_WEIGHTS_TENSORS",
    "MAX_WIDTH",
]

#: Trainable parameters of the whole model: 200 MB of float32 weights, and DP-SGD keeps
#: a few more copies (clipped sums, noise, optimizer state).
MAX_PARAMETERS = 50_000_000

#: Elements of every layer output (and large layer internals such as attention scores)
#: for one example, summed over the model: 32 MiB of float32 per example, which the
#: clipping engines multiply by their micro-batch.
MAX_ACTIVATION_ELEMENTS = 8_000_000

#: Layers (sequential form) or nodes (graph form).
MAX_LAYERS = 256

#: Positions of a token sequence (embedding input, transformer and pooling input).
MAX_SEQUENCE_LENGTH = 4_096

#: Any one width: features, channels, embedding dim, feed-forward dim, a reshape's sides.
MAX_WIDTH = 65_536

#: Rows of an embedding table.
MAX_VOCAB = 1_048_576

#: Dimensions of one example's tensor (batch dimension not counted): [C, H, W] is 3.
MAX_RANK = 4

#: Kernel side of a convolution or pooling window.
MAX_KERNEL = 64

#: Stride of a convolution or pooling window.
MAX_STRIDE = 64

#: Attention heads of one transformer block.
MAX_HEADS = 64

#: Inputs of one graph node (add, concat).
MAX_INPUTS = 16

#: Characters of a graph node name.
MAX_NAME_LENGTH = 32

#: Scales and orientations of the scattering front end (J=2, L=8 in the registered models).
MAX_SCATTER_J = 4
MAX_SCATTER_L = 16

#: A file of initial weights (safetensors): the largest model's float32 weights with room
#: for float64 files of smaller ones; it is held in memory whole.
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024

#: Its JSON header: ample for thousands of tensors, small enough to parse without worry.
MAX_WEIGHTS_HEADER_BYTES = 16 * 1024 * 1024

#: Characters of one tensor name in it (a state_dict name such as `graph.nodes.3.weight`).
MAX_WEIGHTS_NAME = 256

#: Dimensions of one tensor in it.
MAX_WEIGHTS_RANK = 8

#: Tensors in it: far above what MAX_LAYERS layers hold, far below what would take long to read.
MAX_WEIGHTS_TENSORS = 16_384
