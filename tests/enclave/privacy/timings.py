"""Wall-clock timings of the accountants (a report, not a test: nothing here asserts speed).

    .venv/bin/python -m tests.enclave.privacy.timings

Each call runs with cold caches, as the first epsilon of a job would.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from enclave.privacy import calibration as privacy
from enclave.privacy import pld, rdp

CALLS: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
    ("epsilon prv q=0.004 s=1 T=5000", privacy.epsilon, (0.004, 1.0, 5000, 1e-5), {}),
    ("epsilon rdp q=0.004 s=1 T=5000", privacy.epsilon, (0.004, 1.0, 5000, 1e-5), {"accountant": "rdp"}),
    ("epsilon prv q=256/60000 s=1.1 T=14063", privacy.epsilon, (256 / 60000, 1.1, 14063, 1e-5), {}),
    ("epsilon prv q=1e-4 s=1 T=100000", privacy.epsilon, (1e-4, 1.0, 100000, 1e-6), {}),
    ("epsilon prv q=0.004 s=0.6 T=100000", privacy.epsilon, (0.004, 0.6, 100000, 1e-5), {}),
    ("epsilon prv q=0.01 s=0.8 T=100000", privacy.epsilon, (0.01, 0.8, 100000, 1e-5), {}),
    ("epsilon prv q=0.2 s=0.6 T=100", privacy.epsilon, (0.2, 0.6, 100, 1e-5), {}),
    ("epsilon prv q=1 s=1 T=100000", privacy.epsilon, (1.0, 1.0, 100000, 1e-5), {}),
    ("noise_multiplier prv eps=1 q=0.004 T=5000", privacy.noise_multiplier, (1.0, 1e-5, 0.004, 5000), {}),
    ("noise_multiplier rdp eps=1 q=0.004 T=5000", privacy.noise_multiplier, (1.0, 1e-5, 0.004, 5000),
     {"accountant": "rdp"}),
    ("max_steps prv q=0.004 s=1 eps=1.5", privacy.max_steps, (0.004, 1.0, 1e-5, 1.5), {}),
    ("max_steps prv q=1e-4 s=1 eps=0.5", privacy.max_steps, (1e-4, 1.0, 1e-5, 0.5), {}),
]


def main() -> None:
    privacy.epsilon(0.5, 1.0, 2, 1e-5)  # imports and one-time constants
    for name, fn, args, kwargs in CALLS:
        pld.step_pld.cache_clear()
        pld._composed_cached.cache_clear()
        rdp._step_rdp_cached.cache_clear()
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        print(f"{name:45s} {time.perf_counter() - start:7.3f} s   -> {value}")


if __name__ == "__main__":
    main()
