"""`hermetic parent serve`: the long-running KMS relay with JSON logs, locally over loopback TCP."""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from enclave.transport.address import TcpAddress
from parent.commands.parent_serve import JsonLogFormatter, read_allowlist, serve_until
from parent.proxy.relay import KmsRelay

ROOT = Path(__file__).resolve().parents[2]


class EchoServer:
    """A stand-in for KMS: echoes what it gets, upper-cased, on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def round_trip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := conn.recv(4096):
            out += chunk
        return out


class ReadyOn(logging.Handler):
    """Sets `event` when a record with `message` is logged (readiness without sleeping)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.event.set()


def test_serve_until_relays_and_stops(echo: EchoServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hermetic.parent.serve")
    ready = ReadyOn("serving")
    logger = logging.getLogger("hermetic.parent.serve")
    logger.addHandler(ready)
    relay = KmsRelay(TcpAddress("127.0.0.1", 0), "127.0.0.1", echo.port, [("127.0.0.1", echo.port)])
    stop = threading.Event()
    thread = threading.Thread(target=serve_until, args=(relay, stop, 0))
    thread.start()
    try:
        assert ready.event.wait(timeout=30), "relay did not start"
        port = relay.address.port
        assert round_trip(port, b"opaque tls bytes") == b"OPAQUE TLS BYTES"
    finally:
        stop.set()
        thread.join(timeout=10)
        logger.removeHandler(ready)
    assert not thread.is_alive()
    serving = next(r for r in caplog.records if r.getMessage() == "serving")
    assert serving.fields == {"relay": f"tcp://127.0.0.1:{port}", "target": f"tcp://127.0.0.1:{echo.port}"}
    assert caplog.records[-1].getMessage() == "stopped"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_json_log_lines() -> None:
    record = logging.LogRecord("hermetic.parent.serve", logging.WARNING, __file__, 1, "relay %s", ("stats",), None)
    record.fields = {"active_connections": 2}
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "fields"}
    assert entry["level"] == "WARNING" and entry["message"] == "relay stats"
    assert entry["logger"] == "hermetic.parent.serve" and entry["fields"] == {"active_connections": 2}
    assert entry["time"].endswith("+00:00")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "multi\nline", (), None)
    assert json.loads(JsonLogFormatter().format(plain))["fields"] == {}


def test_allowlist_file(tmp_path: Path) -> None:
    path = tmp_path / "allow"
    path.write_text("# vsock-proxy style allow-list\nkms.us-east-1.amazonaws.com:443\n\n  kms-fips.us-east-1.amazonaws.com:443 # FIPS\n")
    assert read_allowlist(path) == ["kms.us-east-1.amazonaws.com:443", "kms-fips.us-east-1.amazonaws.com:443"]
    with pytest.raises(ConfigError, match="cannot read allow-list"):
        read_allowlist(tmp_path / "missing")


class Serve:
    """`hermetic parent serve` as a child process; its stderr lines arrive through a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parent.cli", "parent", "serve", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def next_json(self, timeout: float = 60) -> dict:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"parent serve exited with {self.proc.wait(timeout=5)}"
        return json.loads(line)

    def wait_serving(self) -> int:
        """Readiness: the "serving" line; returns the relay's port."""
        entry = self.next_json()
        while entry["message"] != "serving":  # the relay's own "listening" line comes first
            entry = self.next_json()
        assert entry["level"] == "INFO" and entry["logger"] == "hermetic.parent.serve"
        return int(entry["fields"]["relay"].rsplit(":", 1)[1])

    def rest(self) -> tuple[list[dict], str]:
        """After exit: the remaining JSON entries, and any non-JSON text (CLI errors)."""
        self._reader.join(timeout=15)
        entries, text = [], ""
        while (line := self.lines.get_nowait()) is not None:
            try:
                entries.append(json.loads(line))
            except ValueError:
                text += line
        return entries, text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def test_serve_process_sigterm_and_pid_file(echo: EchoServer, tmp_path: Path) -> None:
    allow = tmp_path / "allowlist"
    allow.write_text(f"127.0.0.1:{echo.port}\n")
    pid_file = tmp_path / "serve.pid"
    serve = Serve("--kms-relay", "tcp://127.0.0.1:0", "--kms-target", f"127.0.0.1:{echo.port}",
                  "--allowlist", str(allow), "--pid-file", str(pid_file), "--stats-interval", "0")
    try:
        port = serve.wait_serving()
        assert pid_file.read_text().strip() == str(serve.proc.pid)
        assert round_trip(port, b"hello kms") == b"HELLO KMS"
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=30) == 0
    finally:
        serve.kill()
    rest, _ = serve.rest()
    messages = [e["message"] for e in rest]
    assert "signal received" in messages and messages[-1] == "stopped"
    assert next(e for e in rest if e["message"] == "signal received")["fields"] == {"signal": "SIGTERM"}
    assert not pid_file.exists()


def test_target_not_on_the_allowlist_is_refused(tmp_path: Path) -> None:
    serve = Serve("--kms-relay", "tcp://127.0.0.1:0", "--kms-target", "127.0.0.1:9",
                  "--allow", "kms.us-east-1.amazonaws.com:443")
    assert serve.proc.wait(timeout=60) == 1
    _, text = serve.rest()
    assert "hermetic: error: relay target 127.0.0.1:9 is not on the allow-list" in text


def test_pid_file_of_a_running_serve_is_respected(tmp_path: Path) -> None:
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # this test process: alive
    serve = Serve("--kms-relay", "tcp://127.0.0.1:0", "--kms-target", "127.0.0.1:9", "--allow", "127.0.0.1:9",
                  "--pid-file", str(pid_file))
    assert serve.proc.wait(timeout=60) == 1
    _, text = serve.rest()
    assert "names running process" in text
    assert pid_file.read_text().strip() == str(os.getpid())


def test_default_target_is_the_regional_kms_endpoint() -> None:
    from parent.cli import build_parser

    args = build_parser().parse_args(["parent", "serve", "--region", "eu-central-1"])
    assert str(args.kms_relay) == "vsock://3:8000" and args.kms_target is None and args.region == "eu-central-1"


def test_stop_enclave_script_stops_parent_serve(echo: EchoServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    pid_file = state / "parent-serve.pid"
    serve = Serve("--kms-relay", "tcp://127.0.0.1:0", "--kms-target", f"127.0.0.1:{echo.port}",
                  "--allow", f"127.0.0.1:{echo.port}", "--pid-file", str(pid_file), "--stats-interval", "0")
    # Reap the child as soon as it exits, so the script's `kill -0` stops seeing it.
    reaper = threading.Thread(target=serve.proc.wait)
    try:
        serve.wait_serving()
        reaper.start()
        out = subprocess.run([str(ROOT / "scripts" / "stop-enclave.sh")], capture_output=True, text=True,
                             timeout=60, env=os.environ | {"STATE": str(state), "PATH": "/usr/bin:/bin"})
        reaper.join(timeout=15)
        assert out.returncode == 0, out.stderr
        assert f"parent serve (PID {serve.proc.pid}) stopped" in out.stderr
        assert "nitro-cli not found" in out.stderr
        assert serve.proc.returncode == 0
        assert not pid_file.exists()
    finally:
        serve.kill()
