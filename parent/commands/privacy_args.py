"""Argument types shared by the `hermetic privacy` actions: malformed numbers are usage errors (exit 2)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from enclave.privacy import params
from enclave.privacy.errors import PrivacyParameterError
from enclave.privacy.ledger import Segment


def _arg_type(check: Callable[[Any], Any], convert: Callable[[str], Any],
              noun: str = "a number") -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text[:40]!r}") from None
        try:
            return check(value)
        except PrivacyParameterError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _int(text: str) -> int:
    return int(text.strip(), 10)


def _positive(value: int) -> int:
    if value < 1:
        raise PrivacyParameterError(f"must be at least 1, got {value}")
    return value


sampling_rate = _arg_type(params.check_q, float)
sigma = _arg_type(params.check_sigma, float)
steps = _arg_type(params.check_steps, _int, "an integer")
count = _arg_type(_positive, _int, "an integer")
delta = _arg_type(params.check_delta, float)
target = _arg_type(lambda v: params.check_epsilon(v, "target epsilon"), float)
budget = _arg_type(lambda v: params.check_epsilon(v, "epsilon budget", allow_zero=True), float)


def run(text: str) -> Segment:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"a run is Q,S,T (sampling rate, noise multiplier, steps): {text[:40]!r}")
    return Segment(sampling_rate(parts[0]), sigma(parts[1]), steps(parts[2]))
