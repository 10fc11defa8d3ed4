"""Static checks of the enclave image recipe (scripts/eif-base.sh, scripts/eif-image.sh and
the pins in eif/): they always run, whatever the machine can build."""
from __future__ import annotations

import ast
import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "eif" / "requirements-enclave.txt"
ENCLAVE = ROOT / "enclave"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


BASE = (ROOT / "scripts" / "eif-base.sh").read_text()
IMAGE = (ROOT / "scripts" / "eif-image.sh").read_text()
DEBIAN_LOCK = ROOT / "eif" / "debian-packages.lock"


def buildah(verb: str) -> list[list[str]]:
    """The words of each `b VERB ...` call in eif-image.sh, continuation lines joined."""
    joined = IMAGE.replace("\\\n", " ")
    calls = [line.strip().split(f"b {verb} ", 1)[1].rstrip(")") for line in joined.splitlines()
             if line.strip().startswith(f"b {verb} ") or f"$(b {verb} " in line]
    return [[w for w in shlex.split(c) if not w.startswith(">")] for c in calls]


def requirement_lines() -> list[str]:
    return [line.strip() for line in REQUIREMENTS.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def pinned() -> dict[str, Version]:
    out = {}
    for line in requirement_lines():
        spec = line.split(" --hash=")[0]
        name, _, version = spec.partition("==")
        out[canonicalize_name(name)] = Version(version)
    return out


def test_base_is_every_debian_package_pinned() -> None:
    lines = [x for x in DEBIAN_LOCK.read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert lines and all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?=[0-9A-Za-z.+~:-]+", x) for x in lines)
    names = [x.split("=")[0].split(":")[0] for x in lines]
    assert "python3.11" in names and len(names) == len(set(names))
    assert "debian-packages.lock" in BASE and "mmdebstrap" in BASE


def test_install_checks_hashes_and_takes_no_dependencies_of_its_own() -> None:
    joined = BASE.replace("\\\n", " ")
    [pip] = [line for line in joined.splitlines() if "pip install" in line]
    words = pip.split("pip install", 1)[1].split('"')[0].split()
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--no-compile", "--no-index"):
        assert flag in words, f"pip install lacks {flag}"
    assert "requirements-enclave.txt" in words[-1]
    assert '"$w/$pip_whl/pip" check' in BASE


def test_source_date_epoch_and_no_bytecode() -> None:
    [config] = buildah("config")
    env = [config[i + 1] for i, w in enumerate(config) if w == "--env"]
    assert "SOURCE_DATE_EPOCH=$epoch" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    [commit] = [c for c in buildah("commit") if any(w.startswith("oci:") for w in c)]
    assert "--timestamp" in commit and commit[commit.index("--timestamp") + 1] == "$epoch"


def test_copies_only_the_enclave_package_and_its_entrypoint() -> None:
    sources = sorted(c[-2] for c in buildah("copy"))
    assert sources == ["$src/eif/entrypoint.py", "$src/enclave"]
    assert [c[-2:] for c in buildah("add")] == [["$out/base.tar", "/"]], "only the base tar is added"


def test_runs_as_a_non_root_user_with_an_exec_form_entrypoint() -> None:
    [config] = buildah("config")
    user = config[config.index("--user") + 1]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = config[config.index("--entrypoint") + 1]
    assert entrypoint.startswith("["), "exec form: nitro-cli runs it without a shell"
    assert "/opt/hermetic/entrypoint.py" in entrypoint


def test_every_requirement_is_pinned_with_a_hash() -> None:
    lines = requirement_lines()
    assert lines
    for line in lines:
        spec, *hashes = line.split(" --hash=")
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", spec), f"not an exact pin: {line}"
        assert hashes, f"no --hash for {spec}"
        for h in hashes:
            algo, _, digest = h.partition(":")
            assert algo == "sha256" and SHA256.match(digest), f"bad hash on {spec}: {h}"
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names)), "a package is listed twice"


def test_torch_is_the_cpu_build() -> None:
    assert str(pinned()["torch"]).endswith("+cpu")


def test_list_is_closed_under_dependencies() -> None:
    # --no-deps installs exactly this list, so every dependency (for CPython 3.11 on
    # Linux x86_64) of every listed package must be listed too. Requires-Dist comes
    # from the same versions installed in this venv.
    env = default_environment() | {"python_version": "3.11", "python_full_version": "3.11.0",
                                   "sys_platform": "linux", "platform_system": "Linux",
                                   "platform_machine": "x86_64", "implementation_name": "cpython",
                                   "platform_python_implementation": "CPython"}
    listed = pinned()
    missing = []
    for name in listed:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed in this venv: cannot check its dependencies")
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env | {"extra": ""}):
                continue
            if canonicalize_name(req.name) not in listed:
                missing.append(f"{name} -> {req}")
    assert not missing, f"dependencies missing from requirements-enclave.txt: {missing}"


def test_enclave_imports_are_covered() -> None:
    # Every third-party top-level module the enclave package imports comes from a listed distribution.
    dist_of = metadata.packages_distributions()
    listed = pinned()
    stdlib = set(__import__("sys").stdlib_module_names)
    missing = set()
    for module in third_party_imports(stdlib):
        dists = {canonicalize_name(d) for d in dist_of.get(module, [])}
        if not dists & set(listed):
            missing.add(module)
    assert not missing, f"enclave imports modules no listed wheel provides: {sorted(missing)}"


def test_versions_match_the_project_pins() -> None:
    project = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            project[canonicalize_name(name)] = Version(version)
    for name, version in pinned().items():
        if name in project:
            assert version.public.split("+")[0] == project[name].public.split("+")[0], name


def modules_under_enclave() -> list[Path]:
    return sorted(p for p in ENCLAVE.rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Call):
            # importlib.import_module("parent...") / __import__("parent...")
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    out.append((node.args[0].value, node.lineno))
    return out


def third_party_imports(stdlib: set[str]) -> set[str]:
    tops = set()
    for path in modules_under_enclave():
        for name, _ in imported_names(path):
            top = name.split(".")[0]
            if top not in stdlib and top not in ("enclave", "__future__"):
                tops.add(top)
    return tops


def test_enclave_never_imports_parent() -> None:
    modules = modules_under_enclave()
    assert len(modules) > 20 and ENCLAVE / "__main__.py" in modules
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules
        for name, line in imported_names(path)
        if name.split(".")[0] in ("parent", "tests")
    ]
    assert not offenders, offenders


def test_the_scan_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "import parent\nfrom parent.local import mock_nsm\nimport os, parent.x as y\n"
        "def f():\n    import importlib\n    importlib.import_module('parent.local')\n    __import__('parent')\n"
    )
    names = [n for n, _ in imported_names(sample)]
    assert names.count("parent") == 2 and "parent.local" in names and "parent.x" in names
