"""glibc malloc thresholds: a step's freed memory stays in the heap for the next step."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.native import heap

ROOT = Path(__file__).resolve().parents[3]

# Run in a fresh interpreter, so the allocator's dynamic thresholds have not been
# raised by anything else: an 8 MiB block, then which arena served it and what the
# heap kept after it was freed (glibc's mallinfo2).
_PROBE = """
import ctypes, json, sys
from enclave.native.heap import retain_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
before = libc.mallinfo2()
block = libc.malloc(8 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mapped": during.hblks - before.hblks, "kept": after.arena - before.arena}))
"""


def _probe(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def _glibc_with_mallinfo2() -> bool:
    import ctypes

    libc = ctypes.CDLL(None)
    return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")


pytestmark = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")


def test_by_default_a_large_block_is_mapped_and_given_back() -> None:
    # The control: without the fixed thresholds glibc maps the block and unmaps it
    # on free, so the probe can tell the two behaviours apart.
    probe = _probe("default")
    assert probe["mapped"] == 1
    assert probe["kept"] == 0


def test_retained_block_comes_from_the_heap_and_stays_there() -> None:
    probe = _probe("retain")
    assert probe["applied"] is True
    assert probe["mapped"] == 0
    assert probe["kept"] >= 8 << 20


def test_retain_is_idempotent_and_reports_the_same_outcome() -> None:
    assert heap.retain_freed_memory() is heap.retain_freed_memory()


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotGlibc:
        def mallopt(self, *_: object) -> int:
            raise AssertionError("mallopt must not be called outside glibc")

    monkeypatch.setattr(heap.ctypes, "CDLL", lambda _name: NotGlibc())
    assert heap._apply() is False


def test_a_training_run_fixes_the_thresholds_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    from unittest.mock import MagicMock

    from enclave.training import trainer

    class Applied(Exception):
        pass

    def applied() -> bool:
        raise Applied

    # The stand-in stops the run at the call; without the call the run would go on
    # into the (mock) inputs and fail some other way.
    monkeypatch.setattr(trainer, "retain_freed_memory", applied)
    with pytest.raises(Applied):
        trainer.Trainer(MagicMock(), MagicMock()).run()
