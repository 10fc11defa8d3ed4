"""Building the enclave image twice from the committed tree gives the same image digest.

Needs a Docker engine with buildx; where `docker info` fails (as on the CI and dev
machines this project is written on) the test is skipped with that reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "eif-docker-build.sh"


def docker_engine() -> str | None:
    """Why Docker can't be used here, or None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "no Docker engine on this machine (no docker command)"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no Docker engine on this machine (docker info: {err})"
    if info.returncode != 0:
        return "no Docker engine on this machine (docker info failed)"
    if subprocess.run([docker, "buildx", "version"], capture_output=True, timeout=30).returncode != 0:
        return "Docker engine without buildx on this machine"
    return None


def build(tag: str) -> str:
    env = os.environ | {"EIF_IGNORE_DIRTY": "1", "SOURCE_DATE_EPOCH": "1767225600"}
    out = subprocess.run([str(BUILD), tag], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_clean_builds_give_the_same_digest() -> None:
    reason = docker_engine()
    if reason is not None:
        pytest.skip(reason)
    tags = [f"hermetic-enclave-repro:{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        first, second = build(tags[0]), build(tags[1])
        assert first.startswith("sha256:")
        assert first == second, f"image digests differ: {first} vs {second}"
    finally:
        subprocess.run(["docker", "image", "rm", "--force", *tags], capture_output=True, timeout=120)


def test_skip_reason_is_clear_here() -> None:
    # Keeps the skip honest: on a machine without an engine the reason names it.
    reason = docker_engine()
    if reason is None:
        pytest.skip("a Docker engine is available: the real build test runs instead")
    assert reason.startswith(("no Docker engine on this machine", "Docker engine without buildx"))


def test_build_script_fails_clearly_without_an_engine(tmp_path: Path) -> None:
    if docker_engine() is None:
        pytest.skip("a Docker engine is available")
    out = subprocess.run([str(BUILD), "hermetic-enclave:never"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=os.environ | {"EIF_IGNORE_DIRTY": "1"})
    assert out.returncode == 1
    assert "eif:" in out.stderr and ("Docker engine" in out.stderr or "docker" in out.stderr)


def test_make_eif_script_names_what_is_missing() -> None:
    if docker_engine() is None and shutil.which("nitro-cli"):
        pytest.skip("this machine can build EIFs")
    out = subprocess.run([str(ROOT / "scripts" / "eif-build.sh")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "cannot build the EIF here: missing" in out.stderr
    assert not (ROOT / "eif" / "hermetic.eif").exists() or (ROOT / "eif" / "hermetic.eif").stat().st_size > 0


def test_stage_takes_only_what_the_image_copies(tmp_path: Path) -> None:
    env = os.environ | {"EIF_ALLOW_DIRTY": "1", "SOURCE_DATE_EPOCH": "1767225600"}
    out = subprocess.run([str(ROOT / "scripts" / "eif-stage.sh"), str(tmp_path / "ctx")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ctx = tmp_path / "ctx"
    assert sorted(p.name for p in ctx.iterdir()) == ["eif", "enclave"]
    assert sorted(p.name for p in (ctx / "eif").iterdir()) == ["Dockerfile", "entrypoint.py", "requirements-enclave.txt"]
    assert (ctx / "enclave" / "__main__.py").is_file()
    staged = sorted(p.relative_to(ctx).as_posix() for p in (ctx / "enclave").rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "enclave"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert staged == sorted(tracked), "the image takes every tracked file of the package, and only those"
    files = list(ctx.rglob("*"))
    assert not [p for p in files if p.name == "__pycache__" or p.suffix == ".pyc"]
    assert {p.stat().st_mtime for p in files} == {1767225600}
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.is_file()} == {"0o644"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
                   check=True, capture_output=True, timeout=30)


def test_stage_uses_the_committed_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "enclave").mkdir()
    (repo / "eif").mkdir()
    shutil.copy(ROOT / "scripts" / "eif-stage.sh", repo / "scripts" / "eif-stage.sh")
    for name in ("Dockerfile", "entrypoint.py", "requirements-enclave.txt"):
        (repo / "eif" / name).write_text(name)
    (repo / "enclave" / "__init__.py").write_text("committed = True\n")
    (repo / "parent.py").write_text("never staged\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "x")
    (repo / "enclave" / "__init__.py").write_text("committed = False\n")
    (repo / "enclave" / "extra.py").write_text("untracked\n")
    stage = [str(repo / "scripts" / "eif-stage.sh")]

    refused = subprocess.run([*stage, str(tmp_path / "a")], capture_output=True, text=True, timeout=60,
                             env=os.environ | {"EIF_ALLOW_DIRTY": "", "EIF_IGNORE_DIRTY": ""})
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr

    head = subprocess.run([*stage, str(tmp_path / "b")], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"EIF_IGNORE_DIRTY": "1", "EIF_ALLOW_DIRTY": ""})
    assert head.returncode == 0, head.stderr
    assert (tmp_path / "b" / "enclave" / "__init__.py").read_text() == "committed = True\n"
    assert not (tmp_path / "b" / "enclave" / "extra.py").exists()
    assert not (tmp_path / "b" / "parent.py").exists()

    work = subprocess.run([*stage, str(tmp_path / "c")], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"EIF_ALLOW_DIRTY": "1"})
    assert work.returncode == 0 and "not a reproducible release" in work.stderr
    assert (tmp_path / "c" / "enclave" / "__init__.py").read_text() == "committed = False\n"
    assert (tmp_path / "c" / "enclave" / "extra.py").exists()
