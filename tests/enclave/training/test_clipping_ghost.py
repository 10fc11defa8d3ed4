"""Ghost clipping engine ("fast"): equals the reference per-sample computation for every supported layer."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping import ghost_layers
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.ghost_layers import (
    PATH_FALLBACK,
    PATH_GHOST_GRAM,
    PATH_GHOST_OUTER,
    PATH_MATERIALISED,
)
from enclave.training.clipping.reference import clip_per_sample, per_sample_gradients, per_sample_norms
from enclave.training.clipping.rules import GhostClippingError, UnsupportedLayer
from enclave.training.models import MODELS, build_model

RTOL, ATOL = 1e-4, 1e-6
#: Clipped sums add hundreds of float32 products in a different order from the reference:
#: entries that nearly cancel to zero differ by ~1e-6 absolute.
ATOL_SUM = 1e-5


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float):
    # On a copy: torch.func.functional_call leaves plain tensors in place of the
    # parameters of a module registered twice (seen with torch 2.13).
    grads = per_sample_gradients(copy.deepcopy(model), x, y)
    clipped, _ = clip_per_sample(grads, clip)
    return per_sample_norms(grads), {k: v.sum(dim=0) for k, v in clipped.items()}


def _assert_equivalent(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, micro_batch: int = 1024
) -> dict[str, str]:
    """Fast == reference for norms and clipped sum; C at the median norm so both regimes occur."""
    model.eval()
    if len(x) == 0:
        result = GhostClipping(model, max_grad_norm=1.0, micro_batch=micro_batch).clipped_sum(x, y)
        assert result.norms.shape == (0,) and result.clipped == 0
        for name, p in model.named_parameters():
            assert torch.equal(result.sums[name], torch.zeros_like(p))
        return result.paths
    norms_ref, _ = _reference(model, x, y, 1.0)
    clip = float(norms_ref.median()) if len(norms_ref) else 1.0
    _, sums_ref = _reference(model, x, y, clip)
    result = GhostClipping(model, max_grad_norm=clip, micro_batch=micro_batch).clipped_sum(x, y)
    torch.testing.assert_close(result.norms, norms_ref, rtol=RTOL, atol=ATOL)
    assert result.sums.keys() == sums_ref.keys()
    for name, expected in sums_ref.items():
        torch.testing.assert_close(result.sums[name], expected, rtol=RTOL, atol=ATOL_SUM, msg=lambda m, name=name: f"{name}: {m}")
    assert result.clipped == int((clip / (result.norms + 1e-6) < 1.0).sum())
    return result.paths


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _data(shape: tuple[int, ...], n: int = 7, classes: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


# -- every supported layer ------------------------------------------------------------------


def test_linear_2d_takes_the_outer_product_path() -> None:
    model = _seeded(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)))
    paths = _assert_equivalent(model, *_data((5,)))
    assert paths == {"0.weight": PATH_GHOST_OUTER, "0.bias": PATH_MATERIALISED,
                     "2.weight": PATH_GHOST_OUTER, "2.bias": PATH_MATERIALISED}


@pytest.mark.parametrize(("steps", "d", "p", "path"), [(2, 16, 12, PATH_GHOST_GRAM), (8, 2, 3, PATH_MATERIALISED)])
def test_linear_on_sequences(steps: int, d: int, p: int, path: str) -> None:
    model = _seeded(nn.Sequential(nn.Linear(d, p), nn.Tanh(), nn.Flatten(), nn.Linear(steps * p, 3)))
    paths = _assert_equivalent(model, *_data((steps, d)), micro_batch=3)
    assert paths["0.weight"] == path


def test_linear_without_bias_and_frozen_parameters() -> None:
    model = _seeded(nn.Sequential(nn.Linear(5, 6, bias=False), nn.Tanh(), nn.Linear(6, 3)))
    model[2].bias.requires_grad_(False)
    paths = _assert_equivalent(model, *_data((5,)))
    assert set(paths) == {"0.weight", "2.weight"}


@pytest.mark.parametrize(
    "conv",
    [
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=1, groups=1),
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=2, dilation=2, groups=2),
        dict(in_channels=4, out_channels=4, kernel_size=2, stride=1, padding="same", groups=4, padding_mode="circular"),
        dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect", bias=False),
    ],
)
def test_conv1d(conv: dict) -> None:
    model = nn.Sequential(nn.Conv1d(**conv), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))
    x, y = _data((4, 11))
    model(x)  # materialise the lazy layer
    _assert_equivalent(_seeded(model), x, y, micro_batch=4)


@pytest.mark.parametrize(
    ("conv", "path"),
    [
        (dict(in_channels=16, out_channels=32, kernel_size=3, stride=3), PATH_GHOST_GRAM),
        (dict(in_channels=16, out_channels=64, kernel_size=3, stride=3, groups=2), PATH_GHOST_GRAM),
        (dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1), PATH_MATERIALISED),
        (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2), PATH_MATERIALISED),
        (dict(in_channels=1, out_channels=2, kernel_size=2, stride=1, padding=0), PATH_MATERIALISED),
        (dict(in_channels=2, out_channels=4, kernel_size=3, padding="same", padding_mode="replicate"), PATH_MATERIALISED),
    ],
)
def test_conv2d(conv: dict, path: str) -> None:
    model = nn.Sequential(nn.Conv2d(**conv), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))
    x, y = _data((conv["in_channels"], 7, 6))
    model(x)
    paths = _assert_equivalent(_seeded(model), x, y, micro_batch=3)
    assert paths["0.weight"] == path


@pytest.mark.parametrize(
    "conv",
    [
        # Each has positions^2 < weight size but positions^2 (d + p) > d p: materialising
        # would be cheaper, the memory budget (set to zero here) rules it out.
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.Conv2d(8, 12, (3, 2), stride=(3, 3), padding=(2, 1), dilation=(2, 1), groups=2),
        nn.Conv2d(16, 32, 3, padding="same", padding_mode="reflect"),
        nn.Conv1d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2),
    ],
)
def test_conv_gram_path_when_materialising_exceeds_the_memory_budget(
    conv: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ghost_layers, "MATERIALISE_BUDGET_BYTES", 0)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))
    x, y = _data((conv.in_channels, 7, 6) if isinstance(conv, nn.Conv2d) else (conv.in_channels, 9))
    model(x)
    assert _assert_equivalent(_seeded(model), x, y, micro_batch=4)["0.weight"] == PATH_GHOST_GRAM


@pytest.mark.parametrize("steps", [1, 6])
def test_embedding_with_repeats_and_padding(steps: int) -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 4, padding_idx=0)
            self.out = nn.Linear(4 * steps, 3)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.emb(idx)).flatten(1))

    model = _seeded(Bag())
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 5, (9, steps), generator=g)  # few rows: many repeats, some padding
    paths = _assert_equivalent(model, idx, torch.randint(0, 3, (9,), generator=g), micro_batch=4)
    assert paths["emb.weight"] == (PATH_GHOST_OUTER if steps == 1 else PATH_GHOST_GRAM)


def test_layer_norm_on_vectors_and_sequences() -> None:
    model = _seeded(
        nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.LayerNorm((5, 6)), nn.Flatten(), nn.Linear(30, 3))
    )
    paths = _assert_equivalent(model, *_data((5, 4)))
    assert paths["1.weight"] == paths["3.bias"] == PATH_MATERIALISED


def test_rms_norm_on_vectors_and_sequences() -> None:
    model = _seeded(
        nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Tanh(), nn.RMSNorm((5, 6), eps=1e-3), nn.Flatten(),
                      nn.Linear(30, 3))
    )
    paths = _assert_equivalent(model, *_data((5, 4)))
    assert paths["1.weight"] == paths["3.weight"] == PATH_MATERIALISED


def test_group_norm() -> None:
    model = _seeded(
        nn.Sequential(nn.Conv2d(2, 6, 3), nn.GroupNorm(3, 6), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    )
    paths = _assert_equivalent(model, *_data((2, 6, 6)), micro_batch=5)
    assert paths["1.weight"] == PATH_MATERIALISED


class _Scale(nn.Module):
    """A layer the engine has no rule for: elementwise affine with a squashing nonlinearity."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(features))
        self.shift = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * self.gain) + self.shift


class _Block(nn.Module):
    """Own parameter plus a supported child: the child is ghost-clipped, the rest falls back."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.mix = nn.Parameter(torch.full((6,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix * self.inner(x)


class _Gated(nn.Module):
    """A fallback layer taking a per-sample keyword tensor and a shared constant."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(6))

    def forward(self, x: torch.Tensor, *, gate: torch.Tensor, bias: float) -> torch.Tensor:
        return x * self.w * torch.sigmoid(gate) + bias


class _UsesGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 6)
        self.gated = _Gated()
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return self.out(self.gated(h, gate=x[:, :1] * 2, bias=0.5))


def test_fallback_layer_with_keyword_arguments() -> None:
    paths = _assert_equivalent(_seeded(_UsesGate()), *_data((5,)), micro_batch=4)
    assert paths["gated.w"] == PATH_FALLBACK


def test_fallback_layers_mixed_with_supported_ones() -> None:
    model = _seeded(nn.Sequential(nn.Linear(5, 6), _Scale(6), _Block(), nn.ReLU(), nn.Linear(6, 3)))
    paths = _assert_equivalent(model, *_data((5,)), micro_batch=4)
    assert paths["1.gain"] == paths["1.shift"] == paths["2.mix"] == PATH_FALLBACK
    assert paths["2.inner.weight"] == PATH_GHOST_OUTER


def test_layers_called_twice_and_in_place_activations() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.conv = nn.Conv1d(2, 2, 3, padding=1)
            self.scale = _Scale(4)
            self.act = nn.ReLU(inplace=True)
            self.out = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.lin(x))  # in-place on the Linear's output
            h = self.scale(self.scale(self.lin(h)))
            h = self.conv(self.conv(h.view(-1, 2, 2)).tanh())
            return self.out(torch.cat([h.flatten(1), x], dim=1))

    _assert_equivalent(_seeded(Twice()), *_data((4,)), micro_batch=4)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n", [0, 1, 9])
def test_registered_models(name: str, n: int) -> None:
    model = build_model(name, rng=Csprng(bytes(range(32))))
    x, y = _data(MODELS[name].input_shape, n=n, classes=10)
    _assert_equivalent(model, x, y, micro_batch=4)  # eval mode: the MLP's dropout off


def test_per_sample_norms_match_reference() -> None:
    model = build_model("tanh_cnn", rng=Csprng(bytes(range(32)))).eval()
    x, y = _data(MODELS["tanh_cnn"].input_shape, n=5, classes=10)
    expected = per_sample_norms(per_sample_gradients(model, x, y))
    ours = GhostClipping(model, max_grad_norm=1.0).per_sample_norms(x, y)
    torch.testing.assert_close(ours, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed", range(2))
def test_a_single_clipped_gradient_never_exceeds_the_clip_norm(seed: int) -> None:
    model = build_model("tanh_cnn", rng=Csprng(bytes(range(32)))).eval()
    x, y = _data(MODELS["tanh_cnn"].input_shape, n=1, classes=10, seed=seed)
    for clip in (1e-3, 0.1, 10.0):
        result = GhostClipping(model, max_grad_norm=clip).clipped_sum(x * 30, y)
        total = math.sqrt(sum(float(v.square().sum()) for v in result.sums.values()))
        assert total <= clip * (1 + 1e-5)
        if float(result.norms[0]) > clip:
            assert total == pytest.approx(clip, rel=1e-4)


# -- no per-sample gradients on the ghost path -------------------------------------------


class _Shapes(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.shapes.add(tuple(leaf.shape))
        return out


class _GhostMix(nn.Module):
    """Conv and sequence Linear on the Gram path, vector Linears on the outer-product path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=3)  # 2x2 = 4 positions
        self.seq = nn.Linear(32, 48)  # on the 4 positions as a sequence
        self.head = nn.Linear(4 * 48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(2).transpose(1, 2)  # [n, 4, 32]
        return self.head(torch.tanh(self.seq(h)).flatten(1))


@pytest.mark.parametrize("model_name", ["tanh_cnn", "ghost_mix"])
def test_ghost_paths_never_build_per_sample_weight_gradients(model_name: str) -> None:
    n = 13
    if model_name == "ghost_mix":
        model, shape, expected = _seeded(_GhostMix()), (16, 7, 6), ["conv.weight", "head.weight", "seq.weight"]
    else:
        model = build_model("tanh_cnn", rng=Csprng(bytes(range(32))))
        shape, expected = MODELS["tanh_cnn"].input_shape, ["7.weight", "9.weight"]
    x, y = _data(shape, n=n, classes=10)
    engine = GhostClipping(model, max_grad_norm=1.0)
    engine.clipped_sum(x[:2], y[:2])  # the one-time coverage check runs outside the probe
    with _Shapes() as probe:
        result = engine.clipped_sum(x, y)
    params = dict(model.named_parameters())
    ghost = [k for k, path in result.paths.items() if path in (PATH_GHOST_OUTER, PATH_GHOST_GRAM)]
    assert sorted(ghost) == expected
    for name in ghost:
        assert not _per_sample_shapes(n, params[name].shape) & probe.shapes, name
    # The probe does see the materialised ones (biases; in the CNN, both convolutions).
    materialised = [k for k, path in result.paths.items() if path == PATH_MATERIALISED]
    assert materialised and all(_per_sample_shapes(n, params[k].shape) & probe.shapes for k in materialised)


def _per_sample_shapes(n: int, shape: torch.Size) -> set[tuple[int, ...]]:
    """Shapes a stack of n per-sample gradients of a parameter can take (convolutions keep
    theirs flattened per output channel, in kernel-last order)."""
    return {(n, *shape), (n, shape[0], math.prod(shape[1:]))}


# -- what the ghost engine refuses ----------------------------------------------------------


def test_batch_norm_is_refused() -> None:
    with pytest.raises(UnsupportedLayer, match="batch statistics"):
        GhostClipping(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), max_grad_norm=1.0)


def test_tied_parameters_are_refused() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    with pytest.raises(GhostClippingError, match="shared"):
        GhostClipping(nn.Sequential(a, b), max_grad_norm=1.0)


def test_a_module_reused_in_two_places_is_supported() -> None:
    shared = nn.Linear(4, 4)
    model = _seeded(nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 3)))
    paths = _assert_equivalent(model, *_data((4,)))
    assert paths["0.weight"] == PATH_MATERIALISED  # two calls: a sequence of 2, too short for Gram to pay


def test_embedding_max_norm_is_refused() -> None:
    with pytest.raises(GhostClippingError, match="max_norm"):
        GhostClipping(nn.Sequential(nn.Embedding(4, 3, max_norm=1.0)), max_grad_norm=1.0)


def test_parameter_used_outside_its_module_is_refused_on_first_batch() -> None:
    class Sneaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # a.weight reused by the parent: a hook on `a` never sees this use.
            return self.b(self.a(x) + F.linear(x, self.a.weight))

    engine = GhostClipping(_seeded(Sneaky()), max_grad_norm=1.0)
    x, y = _data((4,))
    with pytest.raises(GhostClippingError, match="a.weight"):
        engine.clipped_sum(x, y)
    assert engine.clipped_sum(x[:0], y[:0]).sums["a.weight"].abs().sum() == 0  # empty: no forward


def test_layer_seeing_samples_along_another_dimension_is_refused() -> None:
    class SeqFirst(nn.Module):
        """Runs its Linear on [T, n, d]: grouping rows by the leading dimension would mix samples."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 5)
            self.out = nn.Linear(10, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x.view(-1, 2, 4).transpose(0, 1))  # [2, n, 5]
            return self.out(torch.tanh(h).transpose(0, 1).flatten(1))

    engine = GhostClipping(_seeded(SeqFirst()), max_grad_norm=1.0)
    x, y = _data((8,))
    engine.clipped_sum(x[:1], y[:1])  # one sample cannot be mis-grouped: no check yet
    with pytest.raises(GhostClippingError, match="dimension other than the first"):
        engine.clipped_sum(x, y)


def test_input_modified_in_place_after_use_is_refused() -> None:
    class Clobber(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x * 2
            out = self.norm(h)
            h.mul_(0)  # the LayerNorm rule would re-normalise zeros
            return self.out(out + h)

    with pytest.raises(GhostClippingError, match="in place"):
        GhostClipping(_seeded(Clobber()), max_grad_norm=1.0).clipped_sum(*_data((4,)))
