"""The `hermetic` command line: the only place in Hermetic that prints.

Every command follows the conventions of `parent.commands.output`, applied here
once: exit 0 success/valid, 1 a failed check or an error (one-line reason on
stderr; under --json also an error object on stdout), 2 usage error, 130
interrupted, 141 stdout closed early.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import platform
import select
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from enclave.errors import ConfigError, HermeticError
from parent.commands.output import (
    EXIT_CLOSED_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    SUBCOMMAND_EPILOG,
    UsageError,
    json_requested,
    report_error,
)

# Each module in parent.commands registers its own sub-command(s). The dev commands
# (kms_emulator, mock_enclave, demo) import parent.local only in their handlers, so
# building this parser loads no stand-in (tests/parent/test_import_boundaries.py).
COMMAND_MODULES: tuple[str, ...] = (
    "seal",
    "policy",
    "verify_attestation",
    "verify_certificate",
    "audit_log",
    "report",
    "kms_emulator",
    "parent_serve",
    "mock_enclave",
    "demo",
    "privacy",
    "checkpoint",
    "model",
    "measure_eif",
    "job",
    "local",
    "train",
    "budget",
    "audit",
)

# Commands that print their own --json failure object (train: with the partial report of the
# job so far); main() adds none for them, so stdout holds one object either way.
OWN_JSON_ERRORS: frozenset[str] = frozenset({"train"})

_USAGE_PROG = "_usage_prog"


class HermeticArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's conventions: usage errors raise UsageError (one line, exit 2,
    JSON under --json) instead of printing the usage block, and options are never abbreviated
    (a new option must not change what an abbreviation in someone's script means)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        convert = kwargs.get("type")
        if callable(convert):
            kwargs["type"] = _usage_on_hermetic_error(convert)
        return super().add_argument(*args, **kwargs)

    def print_help(self, file: Any = None) -> None:
        # argparse swallows write errors here; a closed stdout must reach main() like any other.
        (file or sys.stdout).write(self.format_help())

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        # The innermost sub-command parses first: unrecognised arguments point to its --help.
        if getattr(parsed, _USAGE_PROG, None) is None:
            setattr(parsed, _USAGE_PROG, self.prog)
        return parsed, extras

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}", getattr(parsed, _USAGE_PROG))
        return parsed


def _usage_on_hermetic_error(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` whose HermeticError (e.g. a malformed address) is a usage error, not a crash."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except HermeticError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    # argparse names the type in its own messages ("invalid float value: 'x'").
    parse.__name__ = getattr(convert, "__name__", parse.__name__)
    return parse


class _Version(argparse.Action):
    """`--version`: `hermetic X.Y.Z` from the installed metadata, then the Python that runs it."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    try:
        version = importlib.metadata.version("hermetic")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return (f"hermetic {version}\n"
            f"Python {platform.python_version()} ({platform.python_implementation()}) "
            f"on {sys.platform} {platform.machine()}")


def build_parser() -> argparse.ArgumentParser:
    parser = HermeticArgumentParser(
        prog="hermetic",
        description="Enclave-first secure training: seal, attest, train privately, verify.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version of hermetic and Python, and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"parent.commands.{name}")
        module.register(sub)
    for _, command in iter_commands(parser):
        if command is not parser and command.epilog is None:
            command.epilog = SUBCOMMAND_EPILOG
    return parser


def iter_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path, `parser` itself first (path ())."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_commands(sub, (*path, name))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status follows parent.commands.output (usage errors raise SystemExit(2))."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None:  # started with fd 1 closed (`>&-`): output is dropped, as print() does
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
    try:
        try:
            return _main(arguments)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Python's documented recipe (library/signal, "Note on SIGPIPE"): point stdout at
        # devnull so the interpreter's final flush cannot raise again, and exit. 141, not 1:
        # the shell's code for a writer whose reader left, never mistaken for "invalid".
        if not _stdout_is_closed():
            raise
        _divert_stdout()
        return EXIT_CLOSED_PIPE


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        _report(err, json_requested(argv))
        raise SystemExit(EXIT_USAGE) from None
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    as_json = bool(getattr(args, "json", False)) and args.command not in OWN_JSON_ERRORS
    extra = getattr(args, "json_error_extra", None)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:  # a handler called parser.error(), e.g. for conflicting options
        _report(err, as_json, extra)
        raise SystemExit(EXIT_USAGE) from None
    except HermeticError as err:
        _report(err, as_json, extra)
        return EXIT_FAILURE
    except OSError as err:
        if err.filename is None:
            raise  # a closed stdout (BrokenPipeError) or a bug: not a file the user named
        # A file the user named cannot be read or written: say which, like any Unix tool.
        _report(ConfigError(f"{err.filename}: {err.strerror or err}"), as_json, extra)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("hermetic: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _report(err: HermeticError, as_json: bool, extra: Any = None) -> None:
    try:
        report_error(err, as_json=as_json, extra=extra)
    except BrokenPipeError:
        # Nobody reads stdout any more; the failure's own exit status still stands.
        if not _stdout_is_closed():
            raise
        _divert_stdout()


def _stdout_is_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (so a BrokenPipeError was ours)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _divert_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
