"""The `hermetic` command line: the only place in Hermetic that prints.

Exit codes follow the tools auditors already script against: 0 success/valid,
1 failure or invalid (one-line reason on stderr), 2 usage error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from enclave.errors import HermeticError

# Each module in parent.commands registers its own sub-command(s). The dev commands
# (kms_emulator, mock_enclave, demo) import parent.local only in their handlers, so
# building this parser loads no stand-in (tests/parent/test_import_boundaries.py).
COMMAND_MODULES: tuple[str, ...] = (
    "seal",
    "policy",
    "verify_attestation",
    "verify_certificate",
    "kms_emulator",
    "parent_serve",
    "mock_enclave",
    "demo",
    "privacy",
    "checkpoint",
    "measure_eif",
    "local",
    "train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hermetic",
        description="Enclave-first secure training: seal, attest, train privately, verify.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"parent.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except HermeticError as err:
        print(f"hermetic: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hermetic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
