"""Per-thread limits for torch's OpenMP and MKL thread teams.

A worker thread that runs torch operations would otherwise start its own teams as
wide as the machine, on top of the main thread's.
"""
from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["one_thread"]

log = logging.getLogger(__name__)

#: Per-thread thread-count setters: (library, symbol). None is the process's global
#: namespace, where torch's libgomp is; torch's MKL is linked into libtorch_cpu.
_THREAD_LIMITS = ((None, "omp_set_num_threads"), ("libtorch_cpu.so", "MKL_Set_Num_Threads_Local"))


def _thread_limit_setters() -> list[Callable[[int], object]]:
    """The per-thread OpenMP and MKL thread-count setters this torch build has."""
    setters: list[Callable[[int], object]] = []
    for library, symbol in _THREAD_LIMITS:
        path = None if library is None else str(Path(torch.__file__).parent / "lib" / library)
        try:
            setter = getattr(ctypes.CDLL(path), symbol)
        except (OSError, AttributeError):
            log.debug("no %s in this torch build: the noise worker keeps its default", symbol)
            continue
        setter.argtypes = [ctypes.c_int]
        setters.append(setter)
    return setters


def one_thread() -> None:
    """Run this thread's torch ops on one thread (see the module docstring for why)."""
    # ATen sets a thread's OpenMP and MKL counts lazily, on its first parallel op;
    # asking for the count runs that set-up now, so it cannot undo the limits below.
    torch.get_num_threads()
    for setter in _thread_limit_setters():
        setter(1)


