"""Run every benchmark in turn: `python -m bench.run [NAME ...]`."""
from __future__ import annotations

import importlib
import sys

# Each module exposes main(argv) -> int and prints a table plus JSON lines.
BENCHES: tuple[str, ...] = ("sealing", "dpsgd")


def main(argv: list[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        print(f"== {name} ==", flush=True)
        status |= importlib.import_module(f"bench.{name}").main([])
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
