"""The CLI's shared argument types: hex strings and --pcr N=HEX options."""
from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parent.inputs import parse_hex, parse_pcr, pcr_values


@given(st.binary(max_size=64), st.sampled_from(["", "0x", "0X"]), st.booleans())
def test_parse_hex_round_trips(data: bytes, prefix: str, upper: bool) -> None:
    text = data.hex().upper() if upper else data.hex()
    assert parse_hex(f" {prefix}{text} ") == data


@pytest.mark.parametrize("text", ["abc", "zz", "0x0g", "12 34"])
def test_parse_hex_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_hex(text)


def test_parse_pcr_reads_index_and_value() -> None:
    assert parse_pcr("0=" + "ab" * 48) == (0, bytes([0xAB]) * 48)
    assert parse_pcr("8=0x" + "00" * 32) == (8, bytes(32))


@pytest.mark.parametrize(
    "text", ["ab" * 48, "x=" + "ab" * 48, "-1=" + "ab" * 48, "32=" + "ab" * 48, "0=" + "ab" * 47, "0=zz"]
)
def test_parse_pcr_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_pcr(text)


def test_pcr_values_merges_repeats_and_refuses_conflicts() -> None:
    parser = argparse.ArgumentParser(prog="t")
    same = (0, bytes(48))
    assert pcr_values(parser, [same, same, (1, bytes(32))]) == {0: bytes(48), 1: bytes(32)}
    assert pcr_values(parser, None) == {}
    with pytest.raises(SystemExit) as exit_info:
        pcr_values(parser, [same, (0, b"\x01" * 48)])
    assert exit_info.value.code == 2
