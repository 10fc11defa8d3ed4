"""The enclave image is reproducible, and measurable, on any Linux machine.

`scripts/eif-check.sh` (`make eif-check`) builds the image twice from the committed
tree (mmdebstrap from pinned Debian packages, hashed wheels, buildah with vfs), requires
equal digests, checks that it runs, turns it into stand-in EIFs and measures them with
`hermetic measure-eif`. The slow test below runs it wherever it can: as root, with
mmdebstrap and buildah or apt-get to install them, and the pinned torch wheel at hand
(CI machines have all of it); elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "eif-check.sh"
PCR = re.compile(r"^[0-9a-f]{96}$")


def eif_check_unavailable() -> str | None:
    """Why scripts/eif-check.sh can't run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the enclave image is built on Linux"
    if os.geteuid() != 0:
        return "eif-check needs root (mmdebstrap --mode=root, rootful buildah, chroot)"
    if not (shutil.which("mmdebstrap") and shutil.which("buildah")) and not shutil.which("apt-get"):
        return "no mmdebstrap/buildah and no apt-get to install them"
    wheels = Path(os.environ.get("EIF_TORCH_WHEELS", "/opt/wheels"))
    if not os.environ.get("EIF_TORCH_INDEX") and not list(wheels.glob("torch-*.whl")):
        return f"the pinned torch wheel is not in {wheels} (set EIF_TORCH_WHEELS or EIF_TORCH_INDEX)"
    return None


@pytest.mark.slow
def test_two_builds_give_one_image_and_its_eif_measures(tmp_path: Path) -> None:
    reason = eif_check_unavailable()
    if reason is not None:
        pytest.skip(reason)
    venv_bin = Path(sys.executable).parent
    env = os.environ | {"EIF_CHECK_DIR": str(tmp_path / "check"), "PYTHON": sys.executable,
                        "HERMETIC": str(venv_bin / "hermetic"), "SOURCE_DATE_EPOCH": "1767225600"}
    env.pop("EIF_ALLOW_DIRTY", None)
    out = subprocess.run([str(CHECK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-6000:]
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", report["image_digest"])
    assert report["commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                              text=True).stdout.strip()
    pcrs, changed = report["stand_in_eif"], report["one_byte_change"]
    assert all(PCR.match(pcrs[k]) for k in ("PCR0", "PCR1", "PCR2"))
    assert changed["PCR1"] == pcrs["PCR1"]
    assert changed["PCR0"] != pcrs["PCR0"] and changed["PCR2"] != pcrs["PCR2"]
    assert changed["image_digest"] != report["image_digest"]
    assert sorted(p.name for p in (tmp_path / "check").iterdir()) == ["report.json"], "big files are cleaned up"


def test_skip_reason_is_clear_here() -> None:
    reason = eif_check_unavailable()
    if reason is None:
        pytest.skip("this machine runs the real check")
    assert reason


def test_docker_build_script_fails_clearly_without_an_engine() -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        pytest.skip("a Docker engine is available")
    out = subprocess.run([str(ROOT / "scripts" / "eif-docker-build.sh"), "hermetic-enclave:never"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env=os.environ | {"EIF_IGNORE_DIRTY": "1"})
    assert out.returncode == 1
    assert "eif:" in out.stderr and ("Docker engine" in out.stderr or "docker" in out.stderr)


def test_make_eif_script_names_what_is_missing() -> None:
    docker = shutil.which("docker")
    if docker and shutil.which("nitro-cli") and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        pytest.skip("this machine can build EIFs")
    out = subprocess.run([str(ROOT / "scripts" / "eif-build.sh")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "cannot build the EIF here: missing" in out.stderr
    assert not (ROOT / "eif" / "hermetic.eif").exists() or (ROOT / "eif" / "hermetic.eif").stat().st_size > 0


def test_stage_takes_only_what_the_image_is_made_of(tmp_path: Path) -> None:
    env = os.environ | {"EIF_ALLOW_DIRTY": "1", "SOURCE_DATE_EPOCH": "1767225600"}
    out = subprocess.run([str(ROOT / "scripts" / "eif-stage.sh"), str(tmp_path / "ctx")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ctx = tmp_path / "ctx"
    assert sorted(p.name for p in ctx.iterdir()) == ["eif", "enclave", "scripts"]
    assert sorted(p.name for p in (ctx / "eif").iterdir()) == [
        "debian-packages.lock", "entrypoint.py", "requirements-enclave.txt", "requirements-pip.txt"]
    assert sorted(p.name for p in (ctx / "scripts").iterdir()) == ["eif-base.sh", "eif-image.sh"]
    assert (ctx / "enclave" / "__main__.py").is_file()
    staged = sorted(p.relative_to(ctx).as_posix() for p in (ctx / "enclave").rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "enclave"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert staged == sorted(tracked), "the image takes every tracked file of the package, and only those"
    files = list(ctx.rglob("*"))
    assert not [p for p in files if p.name == "__pycache__" or p.suffix == ".pyc"]
    assert {p.stat().st_mtime for p in files} == {1767225600}
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.is_file() and p.parent.name != "scripts"} == {"0o644"}
    assert {oct(p.stat().st_mode & 0o777) for p in (ctx / "scripts").iterdir()} == {"0o755"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
                   check=True, capture_output=True, timeout=30)


def test_stage_uses_the_committed_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "enclave").mkdir()
    (repo / "eif").mkdir()
    shutil.copy(ROOT / "scripts" / "eif-stage.sh", repo / "scripts" / "eif-stage.sh")
    for name in ("eif-base.sh", "eif-image.sh"):
        (repo / "scripts" / name).write_text(name)
    for name in ("entrypoint.py", "requirements-enclave.txt", "requirements-pip.txt", "debian-packages.lock"):
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
