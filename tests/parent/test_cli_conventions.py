"""The conventions every `hermetic` command follows, over the whole argparse tree.

Commands are enumerated from the parser itself, so a command added later is held to
the same rules without touching this file: --help, --version, one-line usage errors
(exit 2), the --json error object (exit 1) and a closed stdout (no traceback).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from enclave.certificate.issue import issue_certificate
from enclave.errors import CODES
from parent.cli import OWN_JSON_ERRORS, build_parser, iter_commands, main
from parent.commands.output import EXIT_CLOSED_PIPE, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from parent.local.local_ca import LocalCa
from tests.support.certificates import PCRS, make_body, new_nsm

ROOT = Path(__file__).resolve().parents[2]
TREE = dict(iter_commands(build_parser()))
PATHS = list(TREE)


def _is_group(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(action, argparse._SubParsersAction) for action in parser._actions)


LEAVES = [path for path, parser in TREE.items() if not _is_group(parser)]
JSON_LEAVES = [path for path in LEAVES if "--json" in TREE[path]._option_string_actions]


def _name(path: tuple[str, ...]) -> str:
    return " ".join(("hermetic", *path))


def _ids(path: tuple[str, ...]) -> str:
    return " ".join(path) or "hermetic"


def _one_json_object(text: str) -> dict[str, Any]:
    """The single JSON object `text` holds, and nothing else but whitespace."""
    decoder = json.JSONDecoder()
    value, end = decoder.raw_decode(text.lstrip())
    assert text.lstrip()[end:].strip() == "", f"more than one JSON value on stdout: {text!r}"
    assert isinstance(value, dict)
    return value


def test_the_tree_is_enumerated() -> None:
    # Otherwise every parametrised test below could pass by testing nothing.
    assert {("seal",), ("privacy", "epsilon"), ("checkpoint", "inspect"), ("parent", "serve"),
            ("verify-attestation",), ("demo",)} <= set(LEAVES)
    assert {("seal",), ("verify-certificate",), ("privacy", "noise"), ("policy", "render")} <= set(JSON_LEAVES)
    assert ("privacy",) in PATHS and ("privacy",) not in LEAVES


# --- --help and --version ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_help_exits_0_and_names_the_exit_status(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: {_name(path)}")
    assert captured.err == ""
    assert "exit status:" in captured.out


def test_top_level_help_lists_every_exit_code_and_the_json_error() -> None:
    # Run as users run it: the console script's module, another interpreter.
    out = subprocess.run([sys.executable, "-m", "parent.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    status = out.stdout.split("exit status:", 1)[1]
    for code in (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE):
        assert re.search(rf"^\s+{code}\s+\S", status, re.MULTILINE), f"exit code {code} not described"
    assert '{"error": "<one line>", "error_type": "<class>", "code": "<family code>"}' in status


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == EXIT_OK
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"hermetic {importlib.metadata.version('hermetic')}"
    assert second.startswith(f"Python {platform.python_version()} ({platform.python_implementation()})")


def test_readme_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    block = readme.split("## Command line\n\n```\n", 1)[1].split("```", 1)[0]
    listed = {line.split("[", 1)[0].split("#", 1)[0] for line in block.splitlines() if line.startswith("hermetic ")}
    missing = [_name(path) for path in LEAVES
               if not any(re.match(rf"{re.escape(_name(path))}(\s|$)", entry) for entry in listed)]
    assert missing == []
    assert any(entry.startswith("hermetic --version") for entry in listed)


# --- usage errors: exit 2, one line -------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_usage_error_is_one_line_and_exits_2(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--no-such-option"])
    assert exit_.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("hermetic: error: ")
    assert captured.err.rstrip().endswith(f"(see '{_name(path)} --help')")


def test_options_are_never_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    # A prefix of --noise-multiplier must not be taken for it: scripts would change meaning
    # the day another option shares the prefix.
    with pytest.raises(SystemExit) as exit_:
        main(["privacy", "epsilon", "--sampling-rate", "0.01", "--noise", "1", "--steps", "10", "--delta", "1e-5"])
    assert exit_.value.code == EXIT_USAGE
    assert "--noise" in capsys.readouterr().err


def test_an_argument_type_raising_a_hermetic_error_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["mock-enclave", "run", "--state", "s", "--listen", "nowhere", "--kms-relay", "tcp://127.0.0.1:1"])
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: argument --listen: address 'nowhere'") and err.count("\n") == 1


@pytest.mark.parametrize("path", JSON_LEAVES, ids=_ids)
def test_usage_error_under_json_is_one_object(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--json", "--no-such-option"])
    assert exit_.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    error = _one_json_object(captured.out)
    assert error == {"error": error["error"], "error_type": "UsageError", "code": "config"}
    assert captured.err == f"hermetic: error: {error['error']}\n"


# --- failures under --json: exit 1, one object on stdout --------------------------------------------

# Commands whose every runtime input is checked while parsing: a failure is a usage error.
NO_RUNTIME_FAILURE = {("privacy", "epsilon"), ("privacy", "max-steps")}


def _failing_argv(path: tuple[str, ...], unusable: Path) -> list[str] | None:
    """An argv that parses but fails at run time, for the commands a generic one does not fit."""
    table: dict[tuple[str, ...], list[str]] = {
        ("privacy", "noise"): ["--target-epsilon", "1e-7", "--sampling-rate", "1", "--steps", "1",
                               "--delta", "1e-5"],
        ("mock-enclave", "run"): ["--state", str(unusable / "state"), "--listen", "tcp://127.0.0.1:0",
                                  "--kms-relay", "tcp://127.0.0.1:0"],
        ("parent", "run"): ["--enclave", "tcp://127.0.0.1:1", "--kms-relay", "tcp://127.0.0.1:0",
                            "--kms-target", "127.0.0.1:1", "--dataset", f"d={unusable / 'd.sealed'}",
                            "--spec", str(unusable / "job.toml")],
        ("mock-enclave", "measure"): ["--measure-dir", str(unusable / "enclave")],
        ("demo",): ["--out", str(unusable / "demo")],
        ("seal",): ["--key-id", "k", "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner",
                    "--owner", "o", "--out", str(unusable / "x.sealed"), "--max-epsilon", "1",
                    "--delta", "1e-5", "--ledger", "s3://ledgers/x?owner=123456789012", str(unusable / "in.npz")],
        ("job", "check"): [str(unusable / "job.toml")],
        ("checkpoint", "decrypt"): [str(unusable / "x.ckpt"), "--out", str(unusable / "x.pt")],
        ("local", "up"): ["--state", str(unusable / "state")],
        ("local", "status"): ["--state", str(unusable / "state")],
        ("local", "down"): ["--state", str(unusable)],
        ("train",): ["--local", str(unusable / "state"), "--dataset", f"d={unusable / 'd.sealed'}",
                     "--out", str(unusable / "out"), str(unusable / "job.toml")],
    }
    return [*path, *table[path], "--json"] if path in table else None


def _generic_argv(path: tuple[str, ...], unusable: Path) -> list[str]:
    """Every required argument given: a choice, else a path nothing can read or create (a file's child)."""
    argv = list(path)
    for action in TREE[path]._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings and not action.required:
            continue
        if not action.option_strings and action.nargs in ("?", "*"):
            continue
        value = _value_for(action, unusable / action.dest)
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return [*argv, "--json"]


def _value_for(action: argparse.Action, path: Path) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    convert = action.type if callable(action.type) else str
    for candidate in (str(path), "1"):
        try:
            convert(candidate)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        return candidate
    return str(path)


@pytest.fixture
def unusable(tmp_path: Path) -> Path:
    """A path under a regular file: reading, writing or creating anything below it fails."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return blocker


@pytest.fixture
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _check_json_failure(path: tuple[str, ...], code: int, out: str, err: str) -> None:
    assert code == EXIT_FAILURE, f"{_name(path)}: exit {code}, stdout {out!r}, stderr {err!r}"
    error = _one_json_object(out)
    assert isinstance(error.get("error"), str) and error["error"] and "\n" not in error["error"]
    assert isinstance(error.get("error_type"), str) and error["error_type"].isidentifier()
    if path[0] not in OWN_JSON_ERRORS:
        assert error["code"] in CODES
    assert err.splitlines()[-1] == f"hermetic: error: {error['error']}"


@pytest.mark.usefixtures("offline_aws")
@pytest.mark.parametrize("path", [p for p in JSON_LEAVES if p not in NO_RUNTIME_FAILURE], ids=_ids)
def test_json_failure_is_one_object_and_exits_1(path: tuple[str, ...], unusable: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = _failing_argv(path, unusable)
    if argv is not None:
        code = main(argv)
        captured = capsys.readouterr()
        _check_json_failure(path, code, captured.out, captured.err)
        return
    # A command this file does not know yet: run it apart, so one that starts serving fails
    # the test by timing out instead of hanging the suite (then add it to _failing_argv).
    argv = _generic_argv(path, unusable)
    # Never in the repository: an unknown command may create state in its working directory.
    out = subprocess.run([sys.executable, "-m", "parent.cli", *argv], cwd=unusable.parent, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    _check_json_failure(path, out.returncode, out.stdout, out.stderr)


def test_commands_without_runtime_failures_really_have_none() -> None:
    # The exemption above must name real commands with --json.
    assert NO_RUNTIME_FAILURE <= set(JSON_LEAVES)


def test_generic_argv_reaches_the_command(unusable: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The fallback for unknown commands must produce a runtime failure, not a usage error:
    # checked here on commands that exist today.
    for path in [("verify-attestation",), ("checkpoint", "inspect"), ("policy", "render"),
                 ("kms-emulator", "serve"), ("measure-eif",)]:
        code = main(_generic_argv(path, unusable))
        captured = capsys.readouterr()
        _check_json_failure(path, code, captured.out, captured.err)


def test_unreadable_file_is_named_whatever_the_command(unusable: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # parent run reads its job spec before anything else.
    argv = _failing_argv(("parent", "run"), unusable)
    assert argv is not None
    assert main(argv) == EXIT_FAILURE
    error = json.loads(capsys.readouterr().out)
    assert error["error"].startswith(f"cannot read job spec {unusable / 'job.toml'}: ")
    assert error["error_type"] == "ConfigError" and error["code"] == "config"


def test_an_os_error_naming_a_file_becomes_a_config_error(unusable: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # demo creates its output folder first; that it cannot is reported like any other input.
    assert main(["demo", "--out", str(unusable / "demo"), "--json"]) == EXIT_FAILURE
    error = json.loads(capsys.readouterr().out)
    assert error == {"error": f"{unusable / 'demo'}: Not a directory", "error_type": "ConfigError",
                     "code": "config"}


def test_certificate_pcr_mismatch_names_the_pcr_and_both_values(ca: LocalCa, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cert, root = tmp_path / "job.cert", tmp_path / "root.pem"
    cert.write_bytes(issue_certificate(make_body(), new_nsm(ca)))
    root.write_bytes(ca.root_pem)
    expected = "ab" * 48
    assert main(["verify-certificate", str(cert), "--root", str(root), "--pcr", f"0={PCRS[0].hex()}",
                 "--pcr", f"2={expected}"]) == EXIT_FAILURE
    attested = PCRS[2].hex()
    assert capsys.readouterr().err == (f"hermetic: error: PCR2 differs: expected abababab...abababab, "
                                       f"attested {attested[:8]}...{attested[-8:]}\n")


def test_interrupt_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from parent.commands import privacy

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(privacy, "run_epsilon", interrupted)
    assert main(["privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "10",
                 "--delta", "1e-5", "--json"]) == EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert captured.err == "hermetic: interrupted\n" and captured.out == ""


# --- a closed stdout: no traceback ----------------------------------------------------------------


def _with_closed_stdout(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose reader is already gone, as in `| head -c0`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "parent.cli", *argv], cwd=ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=120)
    finally:
        os.close(write_end)


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_help_into_a_closed_pipe(path: tuple[str, ...]) -> None:
    out = _with_closed_stdout(*path, "--help")
    _no_traceback(out.stderr)
    assert out.stderr == ""
    assert out.returncode == EXIT_CLOSED_PIPE


@pytest.mark.parametrize("argv", [
    ("--version",),
    ("privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"),
    ("privacy", "noise", "--target-epsilon", "1", "--sampling-rate", "0.01", "--steps", "10", "--delta", "1e-5",
     "--json"),
], ids=lambda argv: " ".join(argv[:2]))
def test_output_into_a_closed_pipe(argv: tuple[str, ...]) -> None:
    out = _with_closed_stdout(*argv)
    _no_traceback(out.stderr)
    assert out.returncode == EXIT_CLOSED_PIPE


def test_a_failure_into_a_closed_pipe_still_exits_1(tmp_path: Path) -> None:
    out = _with_closed_stdout("verify-attestation", str(tmp_path / "absent.cbor"), "--pcr", f"0={'00' * 48}", "--json")
    _no_traceback(out.stderr)
    assert out.returncode == EXIT_FAILURE
    assert out.stderr == f"hermetic: error: cannot read attestation document {tmp_path / 'absent.cbor'}: " \
                         "No such file or directory\n"


def test_stdout_closed_from_the_start(tmp_path: Path) -> None:
    # `hermetic ... >&-`: Python starts with sys.stdout None; output is dropped, nothing crashes.
    measurements = tmp_path / "m.json"
    measurements.write_text(json.dumps({"PCR0": "ab" * 48, "PCR1": "01" * 48, "PCR2": "02" * 48}))
    for argv in (["--help"], ["policy", "render", "--template", "data-owner", "--measurements", str(measurements),
                              "--owner-arn", "arn:aws:iam::111122223333:user/o",
                              "--parent-role-arn", "arn:aws:iam::111122223333:role/p"]):
        out = subprocess.run([sys.executable, "-m", "parent.cli", *argv], cwd=ROOT, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True, timeout=120, preexec_fn=lambda: os.close(1))
        assert (out.returncode, out.stderr) == (EXIT_OK, ""), argv


def test_an_open_pipe_is_left_alone() -> None:
    # The control: the same command into a live pipe prints its line and exits 0.
    out = subprocess.run([sys.executable, "-m", "parent.cli", "privacy", "epsilon", "--sampling-rate", "0.01",
                          "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_OK and out.stdout.startswith("epsilon = ")

