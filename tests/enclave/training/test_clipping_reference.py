"""Reference clipping engine ("vmap"): per-sample gradients by torch.func, clipping to C."""
from __future__ import annotations

import pytest
import torch

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.reference import clip_per_sample, per_sample_gradients, per_sample_norms
from enclave.training.models import MODELS, build_model, reseed_dropout
from tests.enclave.training.per_sample import loop_gradients

MODEL_SEED = bytes(range(32))


def _batch(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = MODELS[name].input_shape
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- per-sample gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("micro_batch", [1024, 4])
def test_vmap_gradients_equal_batch_size_one_backward(name: str, micro_batch: int) -> None:
    model = build_model(name, rng=Csprng(MODEL_SEED)).eval()  # eval: dropout off
    x, y = _batch(name, 10)
    fast = per_sample_gradients(model, x, y, micro_batch=micro_batch)
    slow = loop_gradients(model, x, y)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key].shape == (10, *dict(model.named_parameters())[key].shape)
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-4, atol=1e-6)


def test_per_sample_gradients_of_an_empty_batch_are_empty() -> None:
    model = build_model("mlp", rng=Csprng(MODEL_SEED))
    x, y = _batch("mlp", 0)
    grads = per_sample_gradients(model, x, y)
    assert all(g.shape[0] == 0 for g in grads.values())


def test_dropout_masks_differ_per_sample_in_train_mode() -> None:
    model = build_model("mlp", rng=Csprng(MODEL_SEED))
    x, y = _batch("mlp", 1)
    xs, ys = x.repeat(8, 1), y.repeat(8)
    reseed_dropout(model, Csprng(bytes(32)))  # as DpSgd does before every step
    train = per_sample_gradients(model.train(), xs, ys)["1.weight"]
    assert not all(torch.equal(train[0], train[i]) for i in range(1, 8))
    evaluated = per_sample_gradients(model.eval(), xs, ys)["1.weight"]
    assert all(torch.allclose(evaluated[0], evaluated[i]) for i in range(1, 8))


# -- clipping -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("clip", [1e-3, 0.1, 1.0, 10.0])
def test_clipped_per_sample_norms_never_exceed_c(name: str, clip: float) -> None:
    model = build_model(name, rng=Csprng(MODEL_SEED)).eval()
    # Mixed input scales give both tiny and huge per-sample gradients.
    x, y = _batch(name, 16, seed=3)
    x = x * torch.logspace(-3, 3, 16).reshape(-1, *([1] * (x.dim() - 1)))
    grads = per_sample_gradients(model, x, y)
    norms = per_sample_norms(grads)
    clipped, factors = clip_per_sample(grads, clip)
    clipped_norms = per_sample_norms(clipped)
    assert torch.all(clipped_norms <= clip + 1e-5)
    # Gradients already inside the ball are left alone (up to the 1e-6 guard).
    inside = norms + 1e-6 <= clip
    assert torch.all(factors[inside] == 1.0)
    torch.testing.assert_close(clipped_norms[inside], norms[inside])
    # Those outside land on the sphere.
    torch.testing.assert_close(clipped_norms[~inside], torch.full_like(norms[~inside], clip), rtol=1e-5, atol=1e-6)


def test_norm_is_taken_over_all_parameters_together() -> None:
    grads = {"a": torch.tensor([[3.0, 0.0]]), "b": torch.tensor([[[4.0]]])}
    assert per_sample_norms(grads).tolist() == [5.0]
    clipped, factors = clip_per_sample(grads, 1.0)
    assert factors.item() == pytest.approx(1.0 / (5.0 + 1e-6))
    assert clipped["a"][0, 0].item() == pytest.approx(0.6, rel=1e-5)
    assert clipped["b"][0, 0, 0].item() == pytest.approx(0.8, rel=1e-5)
