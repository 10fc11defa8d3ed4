"""bench.dpsgd's declarative workloads build, step under every Hermetic contender, and are judged
against their own goals (no timing here)."""
from __future__ import annotations

import pytest
import torch

from bench.dpsgd import GOALS, SEQUENCE, WORKLOAD_BATCHES, WORKLOAD_CLASSES, WORKLOADS, _batch, _contender, _goals


@pytest.mark.parametrize("model", sorted(WORKLOADS))
def test_a_workload_steps_under_each_hermetic_contender(model: str) -> None:
    x, y = _batch(model, 6)
    assert x.shape[0] == y.shape[0] == 6 and int(y.max()) < WORKLOAD_CLASSES
    for name in ("nonprivate", "engine", "hermetic"):
        _contender(name, model, 6)()


def test_the_transformer_batch_is_right_padded_token_ids() -> None:
    ids, _ = _batch("transformer", 32)
    assert ids.dtype == torch.int64 and ids.shape == (32, SEQUENCE)
    padded = ids == 0
    # Padding only at the end of a row, and some rows shorter than others.
    assert torch.equal(padded, padded.cummax(dim=1).values) and padded.any() and not padded[:, 0].any()


def test_each_workload_is_judged_at_its_own_batch() -> None:
    def row(model: str, batch: int, ratio: float, speedup: float) -> dict[str, object]:
        return {"model": model, "batch": batch, "ratio_vs_nonprivate": ratio, "speedup_vs_opacus": speedup,
                "peak_rss_ratio_vs_nonprivate": 1.0}

    lines = _goals([row("transformer", WORKLOAD_BATCHES["transformer"][0], 1.2, 1.4),
                    row("tabular", WORKLOAD_BATCHES["tabular"][0], 1.6, 9.0), row("tabular", 64, 1.0, 1.0)])
    assert lines[0] == "goal transformer@64: DP/non-private 1.20 (<= 1.3: met), speed-up over Opacus 1.40x (>= 1.5: MISSED)"
    assert lines[1] == "goal tabular@1024: DP/non-private 1.60 (<= 1.5: MISSED), speed-up over Opacus 9.00x"
    assert len([line for line in lines if line.startswith("goal tabular")]) == 1
    assert GOALS["transformer"][0] == WORKLOAD_BATCHES["transformer"][0]
