"""Start local Hermetic processes and wait for them by readiness, not by time.

Every server command used locally prints one line `ready <address>` on stdout
once it is listening; the launcher blocks on that line. Processes are ended by
the PID we started, and their stderr goes to a log file for diagnosis.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from enclave.errors import HermeticError

log = logging.getLogger(__name__)


class ProcessFailed(HermeticError):
    """A local Hermetic process exited early or failed."""


def hermetic_argv(*args: str) -> list[str]:
    """argv that runs the `hermetic` CLI with this interpreter."""
    return [sys.executable, "-m", "parent.cli", *args]


def child_environment(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    """This process's environment with `overrides` applied; None removes a variable."""
    env = dict(os.environ)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Service:
    """A child process that announces readiness with a `ready ADDRESS` line."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str | None] | None = None
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        child_env = child_environment(env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=child_env,
        )
        self.address = ""

    def wait_ready(self) -> str:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("ready "):
                self.address = line.split(" ", 1)[1]
                log.info("%s ready at %s (pid %d)", self.name, self.address, self.proc.pid)
                return self.address
        code = self.proc.wait()
        raise ProcessFailed(f"{self.name} exited with {code} before it was ready; see {self.log_path}")

    def events(self) -> Iterator[dict[str, Any]]:
        """JSON lines the process prints on stdout, as they come, until it closes stdout."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                try:
                    yield dict(json.loads(line))
                except ValueError:
                    log.warning("%s printed a malformed event line", self.name)

    def follow_job(self, progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any] | None:
        """Feed `hermetic parent run --events` progress to `progress`; return its result event."""
        result: dict[str, Any] | None = None
        for event in self.events():
            if event.get("event") == "progress" and progress is not None:
                progress(int(event["step"]), int(event["total"]), float(event["epsilon"]))
            elif event.get("event") == "result":
                result = event
        return result

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_command(name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str | None] | None = None) -> str:
    """Run a command to completion; return its stdout, raise ProcessFailed on non-zero exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = child_environment(env)
    result = subprocess.run(
        list(argv), capture_output=True, env=child_env, stdin=subprocess.DEVNULL, check=False
    )
    (log_dir / f"{name}.log").write_bytes(result.stderr)
    if result.returncode != 0:
        last = result.stderr.decode(errors="replace").strip().splitlines()
        reason = last[-1] if last else f"exit code {result.returncode}"
        raise ProcessFailed(f"{name} failed: {reason}")
    return result.stdout.decode()
