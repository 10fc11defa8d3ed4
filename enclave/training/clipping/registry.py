"""Clipping engines by the names a DP-SGD configuration uses for them."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from torch import nn

from enclave.training.clipping.engine import ClippingEngine, EngineFactory
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.reference import ReferenceClipping
from enclave.training.clipping.rules import DpSgdConfigError

__all__ = ["DEFAULT_ENGINE", "ENGINES", "make_engine"]

#: "fast": ghost norms and book-keeping, the default; "vmap": the torch.func reference,
#: which also clips parameters shared between layers.
ENGINES: Mapping[str, EngineFactory] = MappingProxyType({"fast": GhostClipping, "vmap": ReferenceClipping})

DEFAULT_ENGINE = "fast"


def make_engine(
    name: str,
    model: nn.Module,
    *,
    max_grad_norm: float,
    loss: str = "cross_entropy",
    micro_batch: int = 1024,
) -> ClippingEngine:
    """The engine registered as `name`, built for `model`; DpSgdConfigError for an unknown name."""
    factory = ENGINES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise DpSgdConfigError(f"unknown DP-SGD engine {name!r}; engines: {', '.join(ENGINES)}")
    return factory(model, max_grad_norm=max_grad_norm, loss=loss, micro_batch=micro_batch)
