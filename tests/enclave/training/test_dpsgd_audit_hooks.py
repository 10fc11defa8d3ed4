"""DpSgd's audit-only hooks: what they do, and that neither a job spec nor the enclave can reach them."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from enclave.hazmat.csprng import Csprng
from enclave.training.clipping.rules import DpSgdConfigError
from enclave.training.dpsgd import DpSgd
from enclave.training.spec import JobSpec, SpecError
from tests.support.specs import mlp_spec

NOISE_SEED = bytes(range(1, 33))
ENCLAVE = Path(__file__).resolve().parents[3] / "enclave"
HOOK_NAMES = {"audit_hooks", "_extra_clipped", "_add_noise"}


def _engine(**kwargs: float) -> tuple[nn.Module, DpSgd]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = DpSgd(model, optimizer, max_grad_norm=1.0, noise_multiplier=kwargs.get("sigma", 1.0),
                   expected_batch_size=4.0, rng=Csprng(NOISE_SEED), noise_ahead=False)
    return model, engine


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _empty() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((0, 3)), torch.zeros((0,), dtype=torch.int64)


def _extra() -> dict[str, torch.Tensor]:
    return {"0.weight": torch.full((2, 3), 0.25), "0.bias": torch.tensor([1.0, -1.0])}


def test_extra_clipped_gradients_join_the_sum_before_the_noise() -> None:
    plain_model, plain = _engine()
    plain.step(*_empty())
    hooked_model, hooked = _engine()
    hooked.audit_hooks(extra_clipped=_extra)
    hooked.step(*_empty())
    with_extra, without = _grads(hooked_model), _grads(plain_model)
    for name, extra in _extra().items():
        # The same noise (same seed, same stream position), plus extra / B.
        torch.testing.assert_close(with_extra[name] - without[name], extra / 4.0)
    plain.close()
    hooked.close()


def test_no_noise_control_leaves_exactly_the_clipped_sum_and_draws_the_noise_all_the_same() -> None:
    model, engine = _engine(sigma=5.0)
    engine.audit_hooks(extra_clipped=_extra, add_noise=False)
    engine.step(*_empty())
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, _extra()[name] / 4.0)
    # The stream moved as in a noised step: the next draw is the noised engine's second one.
    noised_model, noised = _engine(sigma=5.0)
    noised.step(*_empty())
    noised.step(*_empty())
    engine.audit_hooks()
    before = _grads(model)
    engine.step(*_empty())
    assert _grads(model).keys() == before.keys()
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, _grads(noised_model)[name])
    engine.close()
    noised.close()


def test_an_empty_canary_step_is_a_plain_step() -> None:
    plain_model, plain = _engine()
    plain.step(*_empty())
    hooked_model, hooked = _engine()
    hooked.audit_hooks(extra_clipped=lambda: None)
    hooked.step(*_empty())
    for name, grad in _grads(hooked_model).items():
        torch.testing.assert_close(grad, _grads(plain_model)[name])
    plain.close()
    hooked.close()


def test_a_canary_for_an_unknown_tensor_is_refused() -> None:
    _, engine = _engine()
    engine.audit_hooks(extra_clipped=lambda: {"1.weight": torch.zeros(2, 3)})
    with pytest.raises(DpSgdConfigError, match="not a trainable parameter"):
        engine.step(*_empty())
    engine.close()


def test_the_hooks_are_off_unless_set() -> None:
    _, engine = _engine()
    assert engine._extra_clipped is None and engine._add_noise is True
    engine.close()


def test_the_constructor_takes_no_hook() -> None:
    # The trainer builds DpSgd from the spec through the constructor only.
    parameters = set(inspect.signature(DpSgd.__init__).parameters)
    assert not parameters & {"extra_clipped", "add_noise", "noise", "audit", "canaries"}


def test_no_enclave_code_but_dpsgd_names_a_hook() -> None:
    offenders = []
    for path in sorted(ENCLAVE.rglob("*.py")):
        if path == ENCLAVE / "training" / "dpsgd.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = {node.attr} if isinstance(node, ast.Attribute) else set()
            if isinstance(node, ast.Name):
                names = {node.id}
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = {node.value}
            if names & HOOK_NAMES:
                offenders.append(f"{path.relative_to(ENCLAVE)}:{getattr(node, 'lineno', '?')}")
    assert offenders == []


@pytest.mark.parametrize(
    ("section", "line"),
    [("privacy", "add_noise = false"), ("privacy", "noise = false"), ("privacy", "extra_clipped = 1"),
     ("privacy", "audit_hooks = true"), ("optimizer", "add_noise = false")],
)
def test_no_spec_key_reaches_a_hook(section: str, line: str) -> None:
    text = mlp_spec(key_id="alias/k").replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    with pytest.raises(SpecError, match="unknown"):
        JobSpec.from_toml(text)


def test_an_audit_section_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown"):
        JobSpec.from_toml(mlp_spec(key_id="alias/k") + "\n[audit]\nadd_noise = false\n")
