"""enclave.training's modules import each other without a cycle, and each imports on its own."""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = "enclave.training"


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module under `package` (packages by their __init__)."""
    base = root.joinpath(*package.split("."))
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports anywhere in its body (deferred imports included)."""
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in modules:
                    edges.add(node.module)
                # `from pkg import submodule` depends on the submodule itself.
                edges.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        # A package's __init__ runs before any of its modules: not a dependency worth a cycle.
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def test_the_import_graph_is_acyclic() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert f"{PACKAGE}.dpsgd" in graph and f"{PACKAGE}.clipping.ghost" in graph
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert set(order) >= set(graph)


def test_a_cycle_is_detected(tmp_path: Path) -> None:
    # A deferred import closing the loop, as dpsgd and the fast engine once had.
    pkg = tmp_path / "enclave" / "training"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""x"""\n')
    (pkg / "a.py").write_text("from enclave.training.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from enclave.training import a\n")
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(import_graph(tmp_path, PACKAGE)).static_order())


def test_every_module_imports_on_its_own() -> None:
    # Each in a clean interpreter state: an import that only works after another module
    # was loaded first fails here.
    names = sorted(_modules(ROOT, PACKAGE))
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'enclave' or m.startswith('enclave.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
