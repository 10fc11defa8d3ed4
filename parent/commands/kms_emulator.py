"""Placeholder: `hermetic` sub-command module 'kms_emulator' (being written)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # noqa: SLF001
    del subparsers
