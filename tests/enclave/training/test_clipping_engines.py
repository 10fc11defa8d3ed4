"""The clipping-engine interface: the registry, and every engine giving the same ClipResult."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.engine import ClippingEngine, ClipResult
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.reference import ReferenceClipping, clip_per_sample
from enclave.training.clipping.registry import DEFAULT_ENGINE, ENGINES, make_engine
from enclave.training.clipping.rules import DpSgdConfigError
from enclave.training.models import MODELS, build_model
from tests.enclave.training.per_sample import loop_gradients

SEED = bytes(range(32))


class _Mixed(nn.Module):
    """Embedding, Conv1d, GroupNorm, LayerNorm, a sequence Linear and a parameter no rule knows."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.conv = nn.Conv1d(6, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.seq = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(8)
        self.gain = nn.Parameter(torch.ones(8))
        self.head = nn.Linear(5 * 8, 4)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.gn(self.conv(self.emb(idx).transpose(1, 2))))
        h = self.ln(torch.tanh(self.seq(h.transpose(1, 2))))
        return self.head((h * self.gain).flatten(1))


def _case(name: str, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    if name == "mixed":
        model = _Mixed()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        return model.eval(), torch.randint(0, 11, (n, 5), generator=g), torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, *MODELS[name].input_shape, generator=g) * 3
    return build_model(name, rng=Csprng(SEED)).eval(), x, torch.randint(0, 10, (n,), generator=g)


def test_the_registry_names_both_engines_and_refuses_others() -> None:
    model = nn.Linear(3, 2)
    assert isinstance(make_engine("fast", model, max_grad_norm=1.0), GhostClipping)
    assert isinstance(make_engine("vmap", model, max_grad_norm=1.0), ReferenceClipping)
    assert DEFAULT_ENGINE in ENGINES
    for name in ("ghost", "FAST", None):
        with pytest.raises(DpSgdConfigError, match="fast, vmap"):
            make_engine(name, model, max_grad_norm=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engines_keep_their_settings_and_meet_the_interface(engine: str) -> None:
    model = nn.Linear(3, 2)
    clip = make_engine(engine, model, max_grad_norm=0.25, micro_batch=7)
    assert isinstance(clip, ClippingEngine)
    assert (clip.model, clip.loss, clip.max_grad_norm, clip.micro_batch) == (model, "cross_entropy", 0.25, 7)


@pytest.mark.parametrize("name", [*sorted(MODELS), "mixed"])
@pytest.mark.parametrize("micro_batch", [1024, 3])
def test_every_engine_gives_the_loop_reference_result(name: str, micro_batch: int) -> None:
    model, x, y = _case(name, 8)
    per_sample = loop_gradients(model, x, y)
    norms = torch.linalg.vector_norm(torch.cat([g.flatten(1) for g in per_sample.values()], dim=1), dim=1)
    ordered = norms.sort().values
    clip = float(ordered[3] + ordered[4]) / 2  # half the samples clipped, none on the boundary
    clipped, factors = clip_per_sample(per_sample, clip)
    for engine in ENGINES:
        result = make_engine(engine, model, max_grad_norm=clip, micro_batch=micro_batch).clipped_sum(x, y)
        assert isinstance(result, ClipResult)
        assert result.batch_size == 8 and result.clipped == int((factors < 1.0).sum())
        assert result.clipped_fraction == result.clipped / 8 and 0.0 < result.clipped_fraction < 1.0
        assert result.sums.keys() == result.paths.keys() == per_sample.keys()
        torch.testing.assert_close(result.norms, norms, rtol=1e-4, atol=1e-6)
        for key, value in clipped.items():
            torch.testing.assert_close(result.sums[key], value.sum(0), rtol=1e-4, atol=1e-5, msg=f"{engine} {key}")


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_an_empty_batch_gives_zero_sums(engine: str) -> None:
    model, x, y = _case("tanh_cnn", 0)
    result = make_engine(engine, model, max_grad_norm=1.0).clipped_sum(x, y)
    assert (result.batch_size, result.clipped, result.clipped_fraction) == (0, 0, 0.0)
    assert result.norms.shape == (0,)
    for key, p in model.named_parameters():
        assert torch.equal(result.sums[key], torch.zeros_like(p))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.batch_size = 1  # type: ignore[misc]


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("n", [1, 5])
def test_the_sums_belong_to_the_caller(engine: str, n: int) -> None:
    # DpSgd adds the noise into the sums in place: they must share no memory with anything that lives on.
    model, x, y = _case("mlp", n)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    clip = make_engine(engine, model, max_grad_norm=0.5, micro_batch=3)
    first = clip.clipped_sum(x, y)
    kept = {k: v.clone() for k, v in first.sums.items()}
    for value in first.sums.values():
        value.add_(1.0)
    second = clip.clipped_sum(x, y)
    for key in kept:
        assert torch.equal(second.sums[key], kept[key]), key
        assert torch.equal(dict(model.named_parameters())[key], before[key]), key
