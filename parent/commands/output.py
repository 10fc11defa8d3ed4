"""How every `hermetic` command reports: exit codes, the one-line error, the `--json` error object.

`parent.cli.main` applies these for every command, so a command only raises a
`HermeticError` and prints its own result; it never prints its own failure.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from enclave.errors import ConfigError, HermeticError

EXIT_OK = 0
EXIT_FAILURE = 1  # a failed check (invalid document, certificate, signature) or any other error
EXIT_USAGE = 2  # the command line is malformed: argparse's convention
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`| head`), as shells report it

EXIT_STATUS_HELP = f"""\
exit status:
  {EXIT_OK:<4} success; for a verify command: valid
  {EXIT_FAILURE:<4} a check failed (invalid, mismatched, over budget) or an error; one line on stderr
  {EXIT_USAGE:<4} usage error: the command line is malformed
  {EXIT_INTERRUPTED:<4} interrupted (SIGINT)
  {EXIT_CLOSED_PIPE:<4} stdout was closed early (e.g. piped into head); the rest was dropped

With --json, a failure also prints one JSON object on stdout:
  {{"error": "<one line>", "error_type": "<class>", "code": "<family code>"}}
(verify commands add "valid": false); the same line still goes to stderr."""

SUBCOMMAND_EPILOG = (
    f"exit status: {EXIT_OK} ok, {EXIT_FAILURE} failed check or error, {EXIT_USAGE} usage error, "
    f"{EXIT_INTERRUPTED} interrupted (see 'hermetic --help')"
)

JSON_FLAG = "--json"
ERROR_PREFIX = "hermetic: error: "


class UsageError(ConfigError):
    """The command line is malformed (unknown option, missing or unparsable argument): exit 2."""

    def __init__(self, message: str, prog: str = "hermetic") -> None:
        super().__init__(f"{message} (see '{prog} --help')")
        self.prog = prog


def add_json_flag(parser: argparse.ArgumentParser, help: str = "print the result as one JSON object") -> None:
    """The `--json` option; failures then print the error object on stdout as well."""
    parser.add_argument(JSON_FLAG, action="store_true", help=help)


def error_object(err: HermeticError, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `--json` form of a failure: message, class name and the stable family code."""
    return {**(extra or {}), "error": str(err), "error_type": type(err).__name__, "code": err.code}


def error_line(err: HermeticError) -> str:
    return f"{ERROR_PREFIX}{err}"


def report_error(err: HermeticError, *, as_json: bool, extra: Mapping[str, Any] | None = None) -> None:
    """The one line on stderr, and under --json the error object on stdout.

    A closed stdout does not hide the failure: the line is written first and the
    caller's exit status stays that of the failure.
    """
    print(error_line(err), file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(error_object(err, extra)), flush=True)


def json_requested(argv: list[str]) -> bool:
    """Whether `--json` is among the options of `argv` (before any `--`), for errors before parsing ends."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return JSON_FLAG in options
