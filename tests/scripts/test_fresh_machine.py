"""What `make install`, `make dataset` (and so `make test`, `make demo`) do on a fresh
Debian or Ubuntu machine: the Python they pick, python3-venv and Fashion-MNIST installed
as root or the exact command printed otherwise (never sudo), and torch's CPU build.

Hosts are played by fake executables (tests/scripts/fakes.py); only the last test makes a
real (pip-less) virtual environment.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.fakes import ROOT, SCRIPTS, FakeHost, fake_host

FIND_PYTHON = str(SCRIPTS / "find-python.sh")
MAKE_VENV = str(SCRIPTS / "make-venv.sh")
APT_INSTALL = str(SCRIPTS / "apt-install.sh")
INSTALL_TORCH = str(SCRIPTS / "install-torch.sh")
TORCH = re.search(r"^torch==([0-9.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
assert TORCH is not None
TORCH_VERSION = TORCH.group(1)

# A Python 3.11 as Debian installs it without python3.11-venv: `import ensurepip` fails
# until the fake apt-get has "installed" the package (a flag file). `-m venv DIR` makes a
# DIR whose bin/python is this same fake; `-m pip ...` succeeds.
FAKE_PYTHON = r'''
flag="$(dirname "$0")/../venv-installed"
case "$*" in
  *"sys.version_info < (3, 11)"*) [ "${FAKE_PY_VERSION:-3.11}" != 3.9 ] || exit 1; exit 0;;
  *"platform.python_version"*) echo "${FAKE_PY_VERSION:-3.11}.2";;
  *"print(\"%d.%d\""*) echo "${FAKE_PY_VERSION:-3.11}";;
  *"import ensurepip, venv"*) [ -f "$flag" ] || exit 1;;
  *"importlib.metadata"*) [ -n "$FAKE_TORCH" ] || exit 1; echo "$FAKE_TORCH";;
  "-m venv "*) mkdir -p "$3/bin" && ln -sf "$0" "$3/bin/python" && touch "$3/pyvenv.cfg";;
  "-m pip --version") exit 0;;
  "-m pip install"*"--no-index"*) [ -z "$FAKE_NO_LOCAL_WHEEL" ] || exit 1;;
  "-m pip install"*"--index-url"*) [ -z "$FAKE_INDEX_DOWN" ] || exit 1;;
  "-m pip install"*) exit 0;;
  *) echo "fake python: unexpected $*" >&2; exit 3;;
esac
'''
FAKE_APT = 'case "$1" in update) ;; install) touch "$(dirname "$0")/../venv-installed";; esac'


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = fake_host(tmp_path)
    h.add("python3.11", FAKE_PYTHON)
    return h


# ------------------------------------------------------------------ which Python


def test_python3_when_it_is_recent_enough(host: FakeHost) -> None:
    host.link("python3", sys.executable)
    out = host.run(["/bin/bash", FIND_PYTHON], path_tail="")
    assert out.returncode == 0 and out.stdout == "python3\n"


def test_python3_11_when_python3_is_3_9_as_on_amazon_linux_2023(host: FakeHost) -> None:
    host.add("python3", FAKE_PYTHON)
    out = host.run(["/bin/bash", FIND_PYTHON], path_tail="", FAKE_PY_VERSION="3.9")
    assert out.returncode == 1  # the fake python3.11 also says 3.9 here
    (host.bin / "python3.11").unlink()
    host.link("python3.11", sys.executable)
    out = host.run(["/bin/bash", FIND_PYTHON], path_tail="", FAKE_PY_VERSION="3.9")
    assert out.returncode == 0 and out.stdout == "python3.11\n"


@pytest.mark.parametrize(("manager", "fix"), [
    ("dnf", "run as root: dnf install -y python3.11"),
    ("apt-get", "run as root: apt-get update && apt-get install -y python3.11 python3.11-venv"),
])
def test_no_python_3_11_says_what_to_install(host: FakeHost, manager: str, fix: str) -> None:
    (host.bin / "python3.11").unlink()
    host.add("python3", FAKE_PYTHON)
    host.add(manager, "exit 0")
    out = host.run(["/bin/bash", FIND_PYTHON], path_tail="", FAKE_PY_VERSION="3.9")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"hermetic: Python 3.11 or newer is needed and python3 is 3.9.2: {fix}\n"


def test_python_variable_is_checked(host: FakeHost) -> None:
    out = host.run(["/bin/bash", FIND_PYTHON], path_tail="", PYTHON="python3.11", FAKE_PY_VERSION="3.9")
    assert out.returncode == 1 and "PYTHON=python3.11 is not a Python 3.11 or newer" in out.stderr


# ------------------------------------------------------------------ python3-venv, root or not


def test_missing_venv_module_not_root_prints_the_command(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.non_root()
    out = host.run([MAKE_VENV, str(tmp_path / "venv")], PYTHON="python3.11")
    assert out.returncode == 1
    assert out.stderr == ("hermetic: 'python3.11 -m venv' (Python's venv module) is missing: "
                          "run as root: apt-get update && apt-get install -y python3.11-venv\n")
    assert not (tmp_path / "venv").exists()
    assert not [c for c in host.calls() if c.startswith(("apt-get", "sudo"))]


def test_missing_venv_module_as_root_is_installed_first(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.add("id", 'echo 0')
    out = host.run([MAKE_VENV, str(tmp_path / "venv")], PYTHON="python3.11")
    assert out.returncode == 0, out.stderr
    calls = host.calls()
    assert "apt-get update -qq" in calls
    assert "apt-get install -y -qq python3.11-venv" in calls
    assert calls.index("apt-get update -qq") < calls.index("apt-get install -y -qq python3.11-venv")
    assert calls[-1] == f"python3.11 -m venv {tmp_path / 'venv'}"
    assert (tmp_path / "venv" / "pyvenv.cfg").exists()


def test_without_apt_get_the_venv_hint_names_dnf(host: FakeHost, tmp_path: Path) -> None:
    for tool in ("bash", "dirname"):  # and nothing else: no apt-get
        host.link(tool, f"/usr/bin/{tool}")
    out = host.run(["/bin/bash", MAKE_VENV, str(tmp_path / "venv")], path_tail="/bin/nonexistent",
                   PYTHON="python3.11")
    assert out.returncode == 1 and "dnf install -y python3.11-pip" in out.stderr


def test_a_directory_that_is_no_venv_is_left_alone(host: FakeHost, tmp_path: Path) -> None:
    (host.bin / "../venv-installed").touch()
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "keep").touch()
    out = host.run([MAKE_VENV, str(tmp_path / "venv")], PYTHON="python3.11")
    assert out.returncode == 1 and "is not a virtual environment" in out.stderr
    assert (tmp_path / "venv" / "keep").exists()


def test_apt_install_without_apt_get(host: FakeHost) -> None:
    out = host.run(["/bin/bash", APT_INSTALL, "Fashion-MNIST", "dataset-fashion-mnist"], path_tail="/bin/nonexistent")
    assert out.returncode == 1
    assert "comes from the Debian/Ubuntu package(s) dataset-fashion-mnist" in out.stderr


# ------------------------------------------------------------------ torch's CPU build


def torch_calls(host: FakeHost) -> list[str]:
    return [c for c in host.calls() if " -m pip " in c]


def test_cpu_torch_already_installed_is_left_alone(host: FakeHost) -> None:
    out = host.run([INSTALL_TORCH, "python3.11"], FAKE_TORCH=f"{TORCH_VERSION}+cpu")
    assert out.returncode == 0 and torch_calls(host) == []


def test_local_cpu_wheel_first_no_network(host: FakeHost) -> None:
    out = host.run([INSTALL_TORCH, "python3.11"], FAKE_TORCH=TORCH_VERSION)  # a CUDA build is replaced
    assert out.returncode == 0, out.stderr
    assert torch_calls(host) == [f"python3.11 -m pip install -q --disable-pip-version-check --no-deps "
                                 f"--no-index torch=={TORCH_VERSION}+cpu"]
    assert "local wheel" in out.stderr


def test_cpu_index_when_there_is_no_local_wheel(host: FakeHost) -> None:
    out = host.run([INSTALL_TORCH, "python3.11"], FAKE_NO_LOCAL_WHEEL="1")
    assert out.returncode == 0, out.stderr
    assert torch_calls(host)[-1] == (
        "python3.11 -m pip install -q --disable-pip-version-check --no-deps --timeout 30 --retries 2 "
        f"--index-url https://download.pytorch.org/whl/cpu torch=={TORCH_VERSION}+cpu")


def test_unreachable_cpu_index_says_what_to_do(host: FakeHost) -> None:
    out = host.run([INSTALL_TORCH, "python3.11"], FAKE_NO_LOCAL_WHEEL="1", FAKE_INDEX_DOWN="1")
    assert out.returncode == 1
    assert "could not install torch" in out.stderr and "make install TORCH_INDEX=" in out.stderr


def test_empty_torch_index_skips_the_step(host: FakeHost) -> None:
    out = host.run([INSTALL_TORCH, "python3.11"], TORCH_INDEX="")
    assert out.returncode == 0 and torch_calls(host) == [] and "TORCH_INDEX is empty" in out.stderr


def test_not_linux_takes_torch_from_the_default_index(host: FakeHost) -> None:
    host.add("uname", "echo Darwin")
    out = host.run([INSTALL_TORCH, "python3.11"])
    assert out.returncode == 0 and torch_calls(host) == []


def test_one_torch_version_everywhere() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    enclave = (ROOT / "eif" / "requirements-enclave.txt").read_text()
    assert f'"torch=={TORCH_VERSION}"' in pyproject
    assert re.search(rf"^torch=={re.escape(TORCH_VERSION)}\+cpu\b", enclave, re.M)


# ------------------------------------------------------------------ through make


def make(host: FakeHost, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return host.run(["make", "--no-print-directory", *args], **env)


pytestmark = pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0,
                                reason="make is not installed")


def test_make_install_fresh_debian_without_venv_not_root(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.non_root()
    out = make(host, "install", f"VENV={tmp_path / 'venv'}", "PYTHON=python3.11")
    assert out.returncode != 0
    assert "run as root: apt-get update && apt-get install -y python3.11-venv" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_make_install_fresh_debian_without_venv_as_root(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.add("id", "echo 0")
    venv = tmp_path / "venv"
    out = make(host, "install", f"VENV={venv}", "PYTHON=python3.11", FAKE_NO_LOCAL_WHEEL="1")
    assert out.returncode == 0, out.stderr
    calls = host.calls()
    order = [
        "apt-get update -qq",
        "apt-get install -y -qq python3.11-venv",
        f"python3.11 -m venv {venv}",
        f"python3.11 -m pip install -q --disable-pip-version-check --no-deps --timeout 30 --retries 2 "
        f"--index-url https://download.pytorch.org/whl/cpu torch=={TORCH_VERSION}+cpu",
        "python3.11 -m pip install -q --disable-pip-version-check -r requirements-build.txt "
        "-r requirements.txt -r requirements-dev.txt",
    ]
    assert [calls.index(c) for c in order] == sorted(calls.index(c) for c in order)
    assert (venv / ".installed").exists()


def test_make_dataset_not_root_prints_the_command(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.non_root()
    out = make(host, "dataset", f"FMNIST={tmp_path / 'none'}")
    assert out.returncode != 0
    assert ("run as root: apt-get update && apt-get install -y dataset-fashion-mnist"
            in out.stderr.splitlines()[0])
    assert not [c for c in host.calls() if c.startswith("apt-get")]


def test_make_dataset_as_root_installs_it(host: FakeHost, tmp_path: Path) -> None:
    host.add("apt-get", FAKE_APT)
    host.add("id", "echo 0")
    out = make(host, "dataset", f"FMNIST={tmp_path / 'none'}")
    assert out.returncode == 0, out.stderr
    assert host.calls()[-2:] == ["apt-get update -qq", "apt-get install -y -qq dataset-fashion-mnist"]


def test_nothing_calls_sudo() -> None:
    sources = [ROOT / "Makefile", *sorted(SCRIPTS.glob("*.sh"))]
    for source in sources:
        code = [line.split("#", 1)[0] for line in source.read_text().splitlines()]
        assert not [line for line in code if re.search(r"\bsudo\b", line)], source


def test_half_made_venv_is_made_again(tmp_path: Path) -> None:
    # What `python3 -m venv` leaves behind without python3-venv: no pip in it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    out = subprocess.run([MAKE_VENV, str(venv)], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    assert "making it again" in out.stderr
    assert subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True).returncode == 0
