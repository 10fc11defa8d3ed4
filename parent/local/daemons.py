"""Background processes that outlive the command that started them, found again by PID.

`spawn` starts a process in its own session (a terminal's Ctrl-C does not reach it)
with stdout and stderr appended to a log file; `wait_ready` waits for the `ready
ADDRESS` line every local server prints once it listens (or for the process to die);
`stop` ends exactly one recorded process: it checks PID and start time first, signals
through a pidfd where the kernel has them (so a PID recycled in between is never
signalled), SIGTERM, then SIGKILL after a bounded wait.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from parent.appliance import ServiceRecord, process_status, start_ticks
from parent.local.processes import ProcessFailed, child_environment

log = logging.getLogger(__name__)

READY_PREFIX = "ready "
_POLL = 0.05  # seconds between looks at a log file or a process without a pidfd


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `argv` detached; return the process and the log offset its output starts at."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = child_environment(env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as out:
        offset = out.tell()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env, cwd=cwd,
            start_new_session=True, close_fds=True,
        )
    log.info("started %s (pid %d), log %s", name, proc.pid, log_path)
    return proc, offset


def wait_ready(
    name: str, proc: subprocess.Popen[bytes], log_path: Path, offset: int, timeout: float
) -> str:
    """The address from the process's `ready ADDRESS` line; ProcessFailed if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        address = _ready_line(log_path, offset)
        if address is not None:
            return address
        code = proc.poll()
        if code is not None:
            raise ProcessFailed(f"{name} exited with {code} before it was ready: {last_line(log_path, offset)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop_child(proc)
            raise ProcessFailed(f"{name} was not ready within {timeout:g}s; see {log_path}")
        # Returns at once if the process dies; otherwise it is the pause between looks at the log.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=min(_POLL, remaining))


def record(name: str, proc: subprocess.Popen[bytes], argv: Sequence[str], log_path: Path,
           address: str) -> ServiceRecord:
    ticks = start_ticks(proc.pid)
    if ticks is None:
        raise ProcessFailed(f"{name} (pid {proc.pid}) vanished right after it was ready; see {log_path}")
    return ServiceRecord(
        name=name, pid=proc.pid, start_ticks=ticks,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"), argv=tuple(argv), log=str(log_path),
        address=address,
    )


def stop(service: ServiceRecord, timeout: float = 10.0) -> str:
    """End `service` if it is still the process that was started.

    Returns "stopped" (exited on SIGTERM), "killed" (needed SIGKILL), "exited" (was
    already gone) or "replaced" (its PID now belongs to another process: left alone).
    """
    pidfd = _pidfd(service.pid)
    try:
        # Checked after the pidfd is open: from here on the pidfd names this very process.
        status = process_status(service.pid, service.start_ticks)
        if status != "running":
            return status
        _signal(service.pid, pidfd, signal.SIGTERM)
        if _wait_exit(service, pidfd, timeout):
            return "stopped"
        log.warning("%s (pid %d) ignored SIGTERM for %gs: SIGKILL", service.name, service.pid, timeout)
        _signal(service.pid, pidfd, signal.SIGKILL)
        if not _wait_exit(service, pidfd, timeout):
            raise ProcessFailed(f"{service.name} (pid {service.pid}) did not exit even after SIGKILL")
        return "killed"
    finally:
        if pidfd is not None:
            os.close(pidfd)
        _reap(service.pid)


def stop_child(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """End a process this one started and still holds (one that never became ready)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(log_path: Path, offset: int = 0) -> str:
    lines = tail(log_path, 1, offset)
    return lines[-1] if lines else f"no output; see {log_path}"


def tail(log_path: Path, lines: int = 10, offset: int = 0) -> list[str]:
    """The last `lines` lines of a log (from `offset`), decoded leniently; [] if there is none."""
    try:
        with open(log_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(offset, size - 64 * 1024)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return []
    return [line for line in data.decode(errors="replace").splitlines() if line.strip()][-lines:]


def _ready_line(log_path: Path, offset: int) -> str | None:
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()
    return None


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no such process, or a kernel/Python without pidfds
        return None


def _signal(pid: int, pidfd: int | None, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)


def _wait_exit(service: ServiceRecord, pidfd: int | None, timeout: float) -> bool:
    if pidfd is not None:
        # A pidfd becomes readable when its process exits: no polling.
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    deadline = time.monotonic() + timeout
    while process_status(service.pid, service.start_ticks) == "running":
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _reap(pid: int) -> None:
    # Only our own children (a supervisor run in-process) leave zombies for us to collect.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
