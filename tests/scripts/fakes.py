"""Fake executables on PATH for testing the shell scripts and the Makefile.

Each fake is a small bash script that appends its argv to a shared log (one call per
line, words joined by spaces) and answers from the environment, so a test can play a
whole host (Amazon Linux 2023 with Docker 25, a Debian machine without python3-venv,
a non-root user) without touching the real one.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


@dataclass
class FakeHost:
    bin: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)
        return path

    def link(self, name: str, target: str | os.PathLike[str]) -> None:
        (self.bin / name).symlink_to(target)

    def non_root(self) -> None:
        self.add("id", 'case "$1" in -u) echo 1000;; -un) echo dev;; *) echo "uid=1000(dev)";; esac')

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def run(self, argv: list[str], *, path_tail: str = "/usr/bin:/bin", **env: str) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the repository with the fakes first on PATH (then `path_tail`)."""
        full = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
        full |= self.env | env
        full["PATH"] = f"{self.bin}:{path_tail}" if path_tail else str(self.bin)
        return subprocess.run(argv, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120, check=False)


def fake_host(tmp_path: Path) -> FakeHost:
    directory = tmp_path / "bin"
    directory.mkdir()
    return FakeHost(directory, tmp_path / "calls.log")
