"""`hermetic local up / status / down` in-process: a real KMS emulator and mock enclave in the background."""
from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from parent.appliance import SERVICES, load_state, process_status
from parent.cli import main


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def processes_naming(state_dir: Path) -> list[int]:
    """PIDs of live processes whose command line names `state_dir` (to catch leftovers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(state_dir).encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_up_status_crash_restart_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    try:
        code, up = cli_json(capsys, "local", "up", "--state", str(state_dir))
        assert code == 0 and up["started"] == ["kms-emulator", "mock-enclave"] and not up["already_running"]
        for key in ("state", "kms_endpoint", "data_owner_key", "model_owner_key", "root", "measurements"):
            assert up[key]
        # Every dataset sealed with `seal --local` keeps its budget ledger here, and the mock enclave uses it.
        assert up["ledger"] == str(state_dir.resolve() / "ledger") and Path(up["ledger"]).is_dir()
        enclave_argv = list(load_state(state_dir).services["mock-enclave"].argv)  # type: ignore[union-attr]
        assert enclave_argv[enclave_argv.index("--ledger") + 1] == up["ledger"]
        measured = json.loads(Path(up["measurements"]).read_text())["Measurements"]
        assert json.dumps(json.loads((state_dir / "policies" / "data-owner.json").read_text())).count(measured["PCR0"])
        for role in ("data-owner", "model-owner", "parent"):
            assert Path(up["identities"][role]["file"]).stat().st_mode & 0o777 == 0o600
        assert (state_dir / "principals.json").stat().st_mode & 0o777 == 0o600

        code, again = cli_json(capsys, "local", "up", "--state", str(state_dir))
        assert code == 0 and again["already_running"] and again["services"] == up["services"]
        assert main(["local", "up", "--state", str(state_dir)]) == 0
        assert "already running" in capsys.readouterr().out

        enclave_pid = up["services"]["mock-enclave"]["pid"]
        os.kill(enclave_pid, signal.SIGKILL)  # a crash: this process started it (in-process up)
        os.waitpid(enclave_pid, 0)
        code, status = cli_json(capsys, "local", "status", "--state", str(state_dir))
        assert code == 1 and not status["healthy"]
        assert status["services"]["mock-enclave"]["status"] == "crashed"
        assert any(line.startswith("ready ") for line in status["services"]["mock-enclave"]["log_tail"])
        assert status["services"]["kms-emulator"]["status"] == "running"

        code, restarted = cli_json(capsys, "local", "up", "--state", str(state_dir))
        assert code == 0 and restarted["started"] == ["mock-enclave"]
        assert restarted["services"]["kms-emulator"] == up["services"]["kms-emulator"]
        assert restarted["services"]["mock-enclave"]["pid"] != enclave_pid
        assert (restarted["data_owner_key"], restarted["model_owner_key"]) == (up["data_owner_key"], up["model_owner_key"])
        assert cli_json(capsys, "local", "status", "--state", str(state_dir))[0] == 0
    finally:
        state = load_state(state_dir)
        code, down = cli_json(capsys, "local", "down", "--state", str(state_dir))
    assert code == 0 and sorted(s["name"] for s in down["stopped"]) == sorted(SERVICES)
    assert state is not None
    assert [n for n, s in state.services.items() if process_status(s.pid, s.start_ticks) == "running"] == []
    assert processes_naming(state_dir) == []
    assert main(["local", "down", "--state", str(state_dir)]) == 0
    assert "nothing was running" in capsys.readouterr().out
    code, status = cli_json(capsys, "local", "status", "--state", str(state_dir))
    assert code == 1 and {s["status"] for s in status["services"].values()} == {"stopped"}

    # Up again after down: same keys; the old KMS port is taken meanwhile, so another one.
    port = int(up["kms_endpoint"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        try:
            code, back = cli_json(capsys, "local", "up", "--state", str(state_dir))
            assert code == 0 and back["started"] == ["kms-emulator", "mock-enclave"]
            assert back["kms_endpoint"] != up["kms_endpoint"]
            assert (back["data_owner_key"], back["model_owner_key"]) == (up["data_owner_key"], up["model_owner_key"])
        finally:
            assert main(["local", "down", "--state", str(state_dir)]) == 0
    assert processes_naming(state_dir) == []


def test_a_failed_up_leaves_nothing_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "run").mkdir(parents=True)
    # The enclave refuses to replace a file that is not a socket: it cannot start.
    (state_dir / "run" / "enclave.sock").write_text("in the way")
    assert main(["local", "up", "--state", str(state_dir)]) == 1
    assert "mock-enclave exited with 1 before it was ready" in capsys.readouterr().err
    assert load_state(state_dir) is None
    assert processes_naming(state_dir) == []


def test_status_and_down_without_an_appliance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "status", "--state", str(tmp_path)]) == 1
    assert "hermetic local up" in capsys.readouterr().err
    assert main(["local", "down", "--state", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
