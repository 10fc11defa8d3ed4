"""A tracker that remembers what it was given, and a reader of TensorBoard event files."""
from __future__ import annotations

from pathlib import Path


class RecordingTracker:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def read_event_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under `log_dir`, by tag, as (step, value) in written order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    # size_guidance 0: keep every event (the default samples them down).
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    # tensorboard.summary.Writer writes scalars as rank-0 tensors with the scalars plugin's metadata.
    assert not tags["scalars"], "scalars are written in the tensor form"
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in tags["tensors"]:
        assert events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars", tag
        out[tag] = [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
    return out
