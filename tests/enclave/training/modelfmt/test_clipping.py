"""Every op trains under DP-SGD: both clipping engines run on a model built with it, and agree."""
from __future__ import annotations

import pytest
import torch

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.ghost import GhostClipping
from enclave.training.clipping.ghost_layers import PATH_FALLBACK
from enclave.training.clipping.reference import ReferenceClipping
from enclave.training.modelfmt.build import build_model
from enclave.training.modelfmt.ops import OPS
from enclave.training.modelfmt.spec import parse_model
from enclave.training.models import reseed_dropout
from tests.enclave.training.modelfmt.cases import CASES, CLASSES, Case, ops_of
from tests.enclave.training.per_sample import loop_gradients

N = 6


def _built(case: Case) -> torch.nn.Module:
    spec = parse_model(case.model)
    return build_model(spec, input_shape=case.input_shape, num_outputs=CLASSES, generator=torch.Generator().manual_seed(3))


def test_the_cases_cover_every_op() -> None:
    covered = set().union(*(ops_of(c.model) for c in CASES))
    assert covered == set(OPS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_both_engines_give_the_per_example_clipped_sum(case: Case) -> None:
    model = _built(case).eval()
    x, y = case.inputs(N), case.targets(N)
    per_sample = loop_gradients(model, x, y)
    norms = torch.linalg.vector_norm(torch.cat([g.flatten(1) for g in per_sample.values()], dim=1), dim=1)
    clip = float(norms.median())  # about half the examples clipped
    reference = ReferenceClipping(model, max_grad_norm=clip).clipped_sum(x, y)
    torch.testing.assert_close(reference.norms, norms, rtol=1e-4, atol=1e-6)
    assert 0 < reference.clipped < N
    # Every op is built from layers the fast engine has a rule (or its checked fallback) for.
    fast = GhostClipping(model, max_grad_norm=clip).clipped_sum(x, y)
    torch.testing.assert_close(fast.norms, reference.norms, rtol=1e-4, atol=1e-6)
    assert fast.sums.keys() == reference.sums.keys() == dict(model.named_parameters()).keys()
    for key, value in reference.sums.items():
        assert torch.allclose(fast.sums[key], value, rtol=1e-4, atol=1e-5), key
    # Every op's parameters have a rule of their own: none takes the torch.func fallback.
    assert PATH_FALLBACK not in fast.paths.values(), fast.paths


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_reference_engine_runs_in_training_mode_with_csprng_dropout(case: Case) -> None:
    model = _built(case)
    reseed_dropout(model, Csprng(bytes(32)))
    result = ReferenceClipping(model, max_grad_norm=1.0).clipped_sum(case.inputs(N), case.targets(N))
    assert result.batch_size == N
    assert all(torch.isfinite(v).all() for v in result.sums.values())
