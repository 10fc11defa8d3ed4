"""The README's quick start, command by command, as a new user runs it from a fresh directory.

The commands are read from the README's block (so the block cannot rot), run as
subprocesses through bash with the virtualenv's `hermetic` on PATH, and each step's
JSON is checked. Whatever happens, `hermetic local down` runs at the end and no
process the appliance started may survive it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parent.appliance import SERVICES, ServiceRecord, load_state, process_status

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- quick-start:"
# The promise: at most these seven commands, no other set-up.
STEPS = ["local up", "seal", "job check", "train", "verify-certificate", "checkpoint decrypt", "local down"]


def quick_start_commands(readme: str) -> list[str]:
    """The shell commands of the README's quick-start block; a heredoc stays one command."""
    start = readme.index(MARKER)
    body_start = readme.index("```sh\n", start) + len("```sh\n")
    block = readme[body_start : readme.index("\n```", body_start)]
    commands: list[str] = []
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "<<'EOF'" in line:
            heredoc = [line]
            for more in lines:
                heredoc.append(more)
                if more == "EOF":
                    break
            commands.append("\n".join(heredoc))
        else:
            commands.append(line)
    return commands


def _step(command: str) -> str | None:
    if not command.startswith("hermetic "):
        return None
    words = command.split()
    return " ".join(words[1:3]) if words[1] in ("local", "job", "checkpoint") else words[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def test_the_block_is_the_promised_seven_commands() -> None:
    commands = quick_start_commands((ROOT / "README.md").read_text("utf-8"))
    assert [s for s in map(_step, commands) if s is not None] == STEPS
    # Everything else only makes the user's own data and job spec.
    assert [c.split()[0] for c in commands if _step(c) is None] == ["python3", "cat"]
    assert all("--json" in c for c in commands if _step(c) is not None)


@pytest.mark.slow
def test_the_readme_quick_start_runs(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed; the README's block uses it to carry values between steps")
    commands = quick_start_commands((ROOT / "README.md").read_text("utf-8"))
    env = _env()
    out: dict[str, Any] = {}
    started: list[ServiceRecord] = []
    try:
        for command in commands:
            step = _step(command)
            proc = _run(command, tmp_path, env)
            assert proc.returncode == 0, f"{command}\n{proc.stderr}"
            if step is not None and proc.stdout.strip():
                out[step] = json.loads(proc.stdout)
            if step == "local up":
                state = load_state(tmp_path / ".hermetic" / "local")
                assert state is not None
                started = [state.services[name] for name in SERVICES]
        _check_outputs(tmp_path, out)
    finally:
        if (tmp_path / ".hermetic" / "local").exists():
            _run("hermetic local down", tmp_path, env)
        assert started, "local up never ran"
        assert [s.name for s in started if process_status(s.pid, s.start_ticks) == "running"] == []


def _check_outputs(cwd: Path, out: dict[str, Any]) -> None:
    up = json.loads((cwd / "up.json").read_text())
    assert Path(up["root"]).is_file() and Path(up["measurements"]).is_file()
    assert up["kms_endpoint"].startswith("http://127.0.0.1:") and up["data_owner_key"] and up["model_owner_key"]

    sealed = json.loads((cwd / "sealed.json").read_text())
    digest = hashlib.sha256((cwd / "my-data.npz").read_bytes()).hexdigest()
    assert sealed["dataset_id"].startswith("my-data-") and sealed["dataset_id_source"] == "derived"
    assert digest[:8] not in sealed["dataset_id"]
    assert sealed["record_count"] == 4000 and sealed["encryption_context"]["owner"] == "data-owner"

    trained = json.loads((cwd / "trained.json").read_text())
    assert trained["status"] == "ok" and trained["job_id"]
    assert 0 < trained["epsilon"] <= 2.0 and trained["metrics"] == []
    assert Path(trained["certificate"]).is_file() and Path(trained["released"]).is_file()

    verified = out["verify-certificate"]
    measured = json.loads(Path(up["measurements"]).read_text())["Measurements"]
    assert verified["valid"] is True and verified["job_id"] == trained["job_id"]
    assert verified["pcrs"]["0"] == measured["PCR0"] and verified["epsilon"] <= 3.0
    assert verified["datasets"][0]["dataset_id"] == sealed["dataset_id"]
    assert verified["sealed_checked"] == [{"file": "my-data.sealed", "dataset_id": sealed["dataset_id"]}]
    assert verified["spec_checked"] is True
    assert verified["pinned_pcrs"] == sorted(int(name[3:]) for name in measured if name.startswith("PCR"))

    decrypted = out["checkpoint decrypt"]
    assert decrypted["model_sha256"] == verified["model_sha256"]
    assert (cwd / "model.pt").stat().st_mode & 0o777 == 0o600

    assert sorted(s["name"] for s in out["local down"]["stopped"]) == sorted(SERVICES)
    assert {s["outcome"] for s in out["local down"]["stopped"]} == {"stopped"}
