"""Import boundaries: production paths load no local stand-in, the enclave loads nothing of the host.

Each runtime check runs in a fresh interpreter: in this process other tests have
already imported `parent.local`, which would hide a leak.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from parent.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
# The dev commands run stand-ins, so they alone may import parent.local (in their handlers).
DEV_COMMANDS = {"kms-emulator": "kms_emulator", "mock-enclave": "mock_enclave", "demo": "demo", "local": "local"}
STAND_INS = "parent.local"

# Prints the help, then the parent.local modules it loaded, as the last line.
_CLI_PROBE = """
import json, sys
from parent.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("\\nLOADED " + json.dumps(sorted(m for m in sys.modules if m == "parent.local" or m.startswith("parent.local."))))
sys.exit(code)
"""


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, (*path, name))


ALL_PATHS = list(_command_paths(build_parser()))
PRODUCTION_PATHS = [p for p in ALL_PATHS if not p or p[0] not in DEV_COMMANDS]


def _run_cli(*argv: str) -> tuple[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _CLI_PROBE, *argv], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    help_text, _, loaded = out.stdout.rpartition("\nLOADED ")
    return help_text, json.loads(loaded)


def test_dev_commands_are_real_commands() -> None:
    # Otherwise a renamed dev command would be exempt from nothing and this file would test less than it says.
    top = {p[0] for p in ALL_PATHS if len(p) == 1}
    assert set(DEV_COMMANDS) < top
    assert {"seal", "parent", "policy", "verify-attestation", "verify-certificate", "measure-eif",
            "checkpoint", "privacy", "train"} <= top


@pytest.mark.parametrize("path", PRODUCTION_PATHS, ids=lambda p: " ".join(p) or "hermetic")
def test_production_help_loads_no_stand_in(path: tuple[str, ...]) -> None:
    help_text, loaded = _run_cli(*path, "--help")
    assert help_text.startswith(f"usage: {' '.join(('hermetic', *path))}")
    if not path:
        assert all(p[0] in help_text for p in ALL_PATHS if len(p) == 1)
    assert loaded == []


def test_policy_render_runs_without_the_emulator(tmp_path: Path) -> None:
    # The renderer validates with the shared grammar, not the emulator's modules.
    measurements = tmp_path / "m.json"
    measurements.write_text(json.dumps({"PCR0": "ab" * 48, "PCR1": "01" * 48, "PCR2": "02" * 48}))
    out = tmp_path / "policy.json"
    _, loaded = _run_cli("policy", "render", "--template", "data-owner", "--measurements", str(measurements),
                         "--owner-arn", "arn:aws:iam::111122223333:user/owner",
                         "--parent-role-arn", "arn:aws:iam::111122223333:role/parent", "--out", str(out))
    assert json.loads(out.read_text())["Statement"]
    assert loaded == []


def _imported_names(path: Path, package: str) -> Iterator[str]:
    """Every module an import statement in `path` names, in function bodies too."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _production_modules() -> Iterator[tuple[str, Path]]:
    dev = {f"parent.commands.{module}" for module in DEV_COMMANDS.values()}
    for path in sorted((ROOT / "parent").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name == STAND_INS or name.startswith(STAND_INS + ".") or name in dev:
            continue
        yield name, path


def test_no_production_module_imports_a_stand_in_even_lazily() -> None:
    # --help never runs a handler; this catches an import inside one.
    dev = {f"parent.commands.{module}" for module in DEV_COMMANDS.values()}
    leaks = []
    for name, path in _production_modules():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imported_names(path, package):
            if imported == STAND_INS or imported.startswith(STAND_INS + ".") or imported in dev:
                leaks.append(f"{name} imports {imported}")
    assert leaks == []


# --- the enclave entry point ---------------------------------------------------------------------
# Loads `python -m enclave --help` and reports every top-level module with its file and distribution.
_ENCLAVE_PROBE = """
import importlib.metadata, json, runpy, sys
sys.argv = ["enclave", "--help"]
try:
    runpy.run_module("enclave", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
owners = importlib.metadata.packages_distributions()
report = {}
for name in {m.split(".")[0] for m in list(sys.modules)}:
    module = sys.modules.get(name)
    report[name] = {"file": getattr(module, "__file__", None), "package": hasattr(module, "__path__"),
                    "dists": owners.get(name, [])}
print("\\nMODULES " + json.dumps(report))
"""
NEVER_IN_ENCLAVE = {"parent", "tests", "pytest", "_pytest", "hypothesis", "moto", "dp_accounting", "opacus"}
# Absent from the image; the enclave's own dependencies try to import them when installed,
# as they are in a development environment.
OPTIONAL_IMPORTS_OF_DEPENDENCIES = {
    "pyopenssl": "botocore -> urllib3.contrib.pyopenssl",
    "certifi": "botocore's CA bundle lookup",
    "opt-einsum": "torch.backends.opt_einsum",
    "tqdm": "torch.hub",
    "cloudpickle": "pyarrow's pickling (lib's compat.pxi), when mlflow's install brings it",
}


def _enclave_distributions() -> set[str]:
    """The image's full dependency closure, from the pinned list the EIF installs."""
    names = set()
    for line in (ROOT / "eif" / "requirements-enclave.txt").read_text("utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            names.add(canonicalize_name(re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]))
    return names


def _outside_the_enclave(report: dict[str, Any], allowed: set[str]) -> list[str]:
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | {"__main__", "__mp_main__"}
    bad = []
    for name, info in sorted(report.items()):
        if name in stdlib or name == "enclave":
            continue
        dists = {canonicalize_name(d) for d in info["dists"]}
        if name in NEVER_IN_ENCLAVE or "hermetic" in dists:
            bad.append(name)
        elif dists:
            if not dists & allowed:
                bad.append(f"{name} ({', '.join(sorted(dists))})")
        elif info["file"] is None and not info["package"]:
            continue  # an in-memory module an extension registers (Cython runtime, Rust bindings)
        elif not name.startswith("__editable__"):  # the editable install's path finder
            bad.append(f"{name} ({info['file']})")
    return bad


def test_python_m_enclave_loads_only_the_enclave_and_its_dependencies() -> None:
    out = subprocess.run([sys.executable, "-c", _ENCLAVE_PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    help_text, _, modules = out.stdout.rpartition("\nMODULES ")
    assert "--kms-forward-port" in help_text
    report = json.loads(modules)
    assert "enclave" in report and "torch" in report  # the probe really loaded the entry point
    allowed = _enclave_distributions() | set(OPTIONAL_IMPORTS_OF_DEPENDENCIES)
    assert _outside_the_enclave(report, allowed) == []


def test_the_enclave_check_flags_host_and_test_modules() -> None:
    # The filter above must not wave through what it exists to catch.
    allowed = _enclave_distributions()
    report = {
        "parent": {"file": str(ROOT / "parent" / "__init__.py"), "package": True, "dists": ["hermetic"]},
        "tests": {"file": str(ROOT / "tests" / "__init__.py"), "package": True, "dists": []},
        "moto": {"file": "/x/moto/__init__.py", "package": True, "dists": ["moto"]},
        "matplotlib": {"file": "/x/matplotlib/__init__.py", "package": True, "dists": ["matplotlib"]},
        "stray": {"file": "/x/stray.py", "package": False, "dists": []},
        "cbor2": {"file": "/x/cbor2/__init__.py", "package": True, "dists": ["cbor2"]},
        "_openssl": {"file": None, "package": False, "dists": []},
    }
    assert _outside_the_enclave(report, allowed) == ["matplotlib (matplotlib)", "moto", "parent",
                                                      "stray (/x/stray.py)", "tests"]
