"""Background processes: readiness from their log, and stopping exactly the recorded process."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from parent.appliance import ServiceRecord, process_status
from parent.local import daemons
from parent.local.processes import ProcessFailed

# Stand-in daemons: they say they are ready, then wait for a signal (never a timed sleep).
SERVE = "import signal; print('ready tcp://127.0.0.1:9', flush=True)\nwhile True: signal.pause()"
STUBBORN = ("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready x', flush=True)\nwhile True: signal.pause()")


@pytest.fixture()
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:  # whatever a failed test left behind
        daemons.stop_child(proc, timeout=2)


def start(tmp_path: Path, code: str, procs: list[subprocess.Popen[bytes]], name: str = "svc") -> ServiceRecord:
    argv = [sys.executable, "-c", code]
    log = tmp_path / f"{name}.log"
    proc, offset = daemons.spawn(name, argv, log)
    procs.append(proc)
    address = daemons.wait_ready(name, proc, log, offset, timeout=60)
    return daemons.record(name, proc, argv, log, address)


def test_ready_line_then_sigterm(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    service = start(tmp_path, SERVE, spawned)
    assert service.address == "tcp://127.0.0.1:9"
    assert process_status(service.pid, service.start_ticks) == "running"
    assert daemons.stop(service, timeout=10) == "stopped"
    assert process_status(service.pid, service.start_ticks) == "exited"
    assert daemons.stop(service) == "exited"


def test_sigkill_after_a_bounded_wait(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    service = start(tmp_path, STUBBORN, spawned)
    assert daemons.stop(service, timeout=0.5) == "killed"
    assert process_status(service.pid, service.start_ticks) == "exited"


def test_a_recycled_pid_is_left_alone(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    service = start(tmp_path, SERVE, spawned)
    # The same PID with another start time: some other process, never to be signalled.
    impostor = replace(service, start_ticks=service.start_ticks - 1)
    assert daemons.stop(impostor) == "replaced"
    assert process_status(service.pid, service.start_ticks) == "running"


def test_early_exit_reports_the_last_log_line(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    with pytest.raises(ProcessFailed, match="exited with 3 before it was ready: port is taken"):
        start(tmp_path, "import sys; print('port is taken', file=sys.stderr); sys.exit(3)", spawned)


def test_readiness_is_read_from_this_start_only(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    # A ready line left in the log by an earlier run must not count.
    (tmp_path / "svc.log").write_text("ready stale-address\n")
    service = start(tmp_path, SERVE.replace("tcp://127.0.0.1:9", "fresh"), spawned)
    assert service.address == "fresh"
    assert daemons.tail(tmp_path / "svc.log", 5) == ["ready stale-address", "ready fresh"]
    daemons.stop(service)
