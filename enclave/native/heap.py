"""Keep the memory a training step frees for the next step, instead of faulting it back in.

glibc's malloc serves a request above its mmap threshold with a fresh mapping that is
unmapped again on free, and returns the free top of its heap to the kernel once it
exceeds the trim threshold. Both thresholds start at 128 KiB and are raised
dynamically as large blocks are freed, up to 32 MiB and 64 MiB. A DP-SGD step
allocates and frees the same few-megabyte temporaries every time (the noise draw's
float64 scratch, activations, gradients), and under the dynamic thresholds much of
that memory goes back to the kernel between steps and is page-faulted back in,
zero-filled, on every step (measured: bench/RESULTS.md).

`retain_freed_memory()` fixes both thresholds at the top of glibc's own dynamic
range: the values glibc itself adopts after freeing a 32 MiB block. Requests from
32 MiB up are still mapped and unmapped, so one huge temporary is not kept, and the
free memory kept at the heap's top is at most 64 MiB.
"""
from __future__ import annotations

import ctypes
import logging
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "retain_freed_memory"]

log = logging.getLogger(__name__)

#: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (4 MiB * sizeof(long)): the largest
#: value mallopt accepts, and the ceiling of its dynamic threshold.
MMAP_THRESHOLD = 32 << 20
#: Twice the mmap threshold, the ratio glibc keeps when it raises both dynamically.
TRIM_THRESHOLD = 64 << 20

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Fix glibc malloc's mmap and trim thresholds (see the module docstring); idempotent.

    Returns whether they are set: False where the C library is not glibc (no
    `gnu_get_libc_version`) or refuses a value, in which case nothing changes.
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        log.info("not glibc: malloc thresholds left at the C library's defaults")
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # Setting either one also turns off glibc's dynamic adjustment of both.
    if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.warning("glibc refused the malloc thresholds: a step's freed memory may be faulted back in")
        return False
    log.debug("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return True
