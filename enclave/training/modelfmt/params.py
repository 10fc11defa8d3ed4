"""Layer parameters: their declared kinds, strict reading from a parsed TOML table, typed access.

A parameter is one of five kinds; reading a value never coerces across kinds except
int -> float for real-valued settings (`p = 0` is `p = 0.0`), and never accepts a
bool where a number is expected (Python's bool is an int, TOML's is not).

    int     an integer in [low, high]
    float   a finite number in [low, high) or [low, high]; stored as float
    bool    true or false
    dims    an integer, or a list of exactly `dims` integers, each in [low, high];
            stored as a tuple of `dims` integers (kernel = 3 is kernel = [3, 3] in 2-D)
    shape   a list of 1..MAX_RANK integers in [1, MAX_WIDTH]; stored as a tuple
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from enclave.training.modelfmt.errors import ModelFormatError
from enclave.training.modelfmt.limits import MAX_RANK, MAX_WIDTH

__all__ = [
    "Args",
    "Kind",
    "Param",
    "Value",
    "arg_bool",
    "arg_dims",
    "arg_float",
    "arg_int",
    "arg_optional_int",
    "describe",
    "shown_int",
]

#: A parameter's value once read: tuples for lists, None for an omitted optional one.
Value = int | float | bool | tuple[int, ...] | None
#: A layer's parameters by name, every declared one present (defaults filled in).
Args = Mapping[str, Value]
Kind = Literal["int", "float", "bool", "dims", "shape"]


def describe(value: object) -> str:
    """How a value reads in an error message: its TOML kind, not its Python repr."""
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a float",
             list: "an array", tuple: "an array", dict: "a table"}
    for kind, text in names.items():
        if type(value) is kind:
            return text
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    """One declared parameter of an op.

    `required` parameters have no default; an optional one without a default reads as
    None when omitted (an op's `finish` may then derive it from the others).
    """

    name: str
    kind: Kind
    low: float = 0
    high: float = MAX_WIDTH
    required: bool = False
    default: Value = None
    #: Spatial dimensions of a "dims" parameter.
    dims: int = 1
    #: A float's upper bound is excluded (dropout p < 1).
    high_open: bool = False

    def read(self, table: Mapping[str, object], at: str) -> Value:
        """The value of this parameter in `table`, or its default; ModelFormatError naming `at`."""
        # null, which TOML cannot write, reads as omitted: the canonical form parses back.
        if table.get(self.name) is None:
            if self.required:
                raise ModelFormatError(f"{at}: {self.name} is required")
            return self.default
        value = table[self.name]
        where = f"{at}: {self.name}"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ModelFormatError(f"{where} must be true or false, got {describe(value)}")
            return value
        if self.kind == "int":
            return self._int(value, where)
        if self.kind == "float":
            return self._float(value, where)
        if self.kind == "dims":
            if _is_int(value):
                return (self._int(value, where),) * self.dims
            if not isinstance(value, (list, tuple)) or len(value) != self.dims:
                expected = "an integer" if self.dims == 1 else f"an integer or an array of {self.dims} integers"
                raise ModelFormatError(f"{where} must be {expected}, got {_shown(value)}")
            return tuple(self._int(v, where) for v in value)
        # shape
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_RANK:
            raise ModelFormatError(f"{where} must be an array of 1..{MAX_RANK} integers, got {_shown(value)}")
        return tuple(self._int(v, where) for v in value)

    def _int(self, value: object, where: str) -> int:
        if not _is_int(value):
            raise ModelFormatError(f"{where} must be an integer, got {describe(value)}")
        assert isinstance(value, int)
        if not self.low <= value <= self.high:
            raise ModelFormatError(
                f"{where} must be in [{_bound(self.low)}, {_bound(self.high)}], got {shown_int(value)}"
            )
        return value

    def _float(self, value: object, where: str) -> float:
        if not (_is_int(value) or isinstance(value, float)):
            raise ModelFormatError(f"{where} must be a number, got {describe(value)}")
        assert isinstance(value, (int, float))
        if isinstance(value, int) and abs(value) > 2**53:
            raise ModelFormatError(f"{where} is out of range")
        number = float(value)
        too_high = number >= self.high if self.high_open else number > self.high
        if not math.isfinite(number) or number < self.low or too_high:
            right = ")" if self.high_open else "]"
            low, high = _bound(self.low), _bound(self.high)
            raise ModelFormatError(f"{where} must be in [{low}, {high}{right}, got {number:g}")
        return number


def shown_int(value: int) -> str:
    """An integer for a message; beyond 64 bits (no TOML integer is) not in full."""
    return str(value) if abs(value) < 2**63 else "an integer beyond 64 bits"


def _bound(value: float) -> str:
    # Integers in full: "1048575", never "1.04858e+06".
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    return describe(value)


# -- typed access to parsed arguments (the parser guarantees the kinds) ---------------------


def arg_int(args: Args, name: str) -> int:
    value = args[name]
    if not _is_int(value):
        raise TypeError(f"argument {name} is not an integer: {value!r}")
    assert isinstance(value, int)
    return value


def arg_optional_int(args: Args, name: str) -> int | None:
    return None if args[name] is None else arg_int(args, name)


def arg_float(args: Args, name: str) -> float:
    value = args[name]
    if not isinstance(value, float):
        raise TypeError(f"argument {name} is not a float: {value!r}")
    return value


def arg_bool(args: Args, name: str) -> bool:
    value = args[name]
    if not isinstance(value, bool):
        raise TypeError(f"argument {name} is not a boolean: {value!r}")
    return value


def arg_dims(args: Args, name: str) -> tuple[int, ...]:
    value = args[name]
    if not isinstance(value, tuple):
        raise TypeError(f"argument {name} is not a tuple: {value!r}")
    return value
