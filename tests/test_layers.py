"""The layers' arrows point one way and never round a loop: every import in every module, lazy
ones included, bench/ too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("facesense", "runtime", "trainer", "worker", "api", "cli", "bench")
HEAVY = {"torch", "torchvision", "numpy", "safetensors"}

# What each layer may import of the project (a layer may always import itself).
LAYERS = {
    "facesense": {"facesense"},
    "runtime": {"facesense"},
    "trainer": {"facesense", "runtime"},
    "worker": {"facesense", "runtime", "trainer"},
    "api": {"facesense"},
    "cli": {"facesense", "runtime", "trainer", "worker", "api"},
    "bench": {"facesense", "runtime", "trainer", "worker", "api", "cli"},  # measures them all
}
# bench/ is one script per measurement, run by name (python -m bench.x): a menu, not a room.
SCRIPTS = {"bench"}
TORCH_FREE = {"facesense", "api"}

# Inside the core: the base modules, then sub-packages, each naming what it may import.
BASE = {"facesense.errors", "facesense.settings", "facesense.settings_rules", "facesense.logs",
        "facesense.imaging"}
CORE = {
    "facesense.errors": set(),
    "facesense.settings": {"facesense.errors", "facesense.settings_rules"},
    "facesense.settings_rules": set(),  # what each setting may hold: plain data and words
    "facesense.logs": {"facesense.errors"},
    "facesense.imaging": set(),  # image-safety guards: Pillow only
    "facesense.storage": {"facesense.errors"},
    "facesense.state": BASE | {"facesense.storage"},
    "facesense.inputs": BASE | {"facesense.storage"},
    "facesense.outputs": BASE | {"facesense.storage", "facesense.state", "facesense.inputs"},
}


def node(module: str) -> str:
    """The unit a module belongs to: a core sub-package, a core module, or a top package."""
    parts = module.split(".")
    if parts[0] == "facesense" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Every module a file imports, at any depth (functions included), relative ones resolved;
    `from package import module` names the module when it is one of the known ones."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = package.split(".")[: len(package.split(".")) - n.level + 1]
                module = ".".join([*base, n.module] if n.module else base)
            else:
                module = n.module
            subs = {f"{module}.{a.name}" for a in n.names} & set(known)
            found |= subs if len(subs) == len(n.names) else subs | {module}
    return found


MODULES = modules()
GRAPH = {name: imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def violations() -> list[str]:
    """One line per import that points the wrong way."""
    bad = []
    for name, targets in GRAPH.items():
        layer = name.split(".")[0]
        for target in targets:
            top = target.split(".")[0]
            if top in PACKAGES and top != layer and top not in LAYERS[layer]:
                bad.append(f"{name} imports {target}: {layer}/ may import {sorted(LAYERS[layer])}")
            if layer in TORCH_FREE and top in HEAVY:
                bad.append(f"{name} imports {target}: {layer}/ stays torch-free")
            src, dst = node(name), node(target)
            if top == "facesense" and src in CORE and dst != src and dst not in CORE[src]:
                bad.append(f"{name} imports {target}: {src} may import {sorted(CORE[src])}")
    return bad


def cycles() -> list[list[str]]:
    """Cycles between units (core sub-packages and modules, top packages), if any."""
    edges: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        for target in targets:
            if target.split(".")[0] in PACKAGES and node(target) != node(name):
                edges.setdefault(node(name), set()).add(node(target))
    found, state = [], {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = "open"
        for m in sorted(edges.get(n, ())):
            if state.get(m) == "open":
                found.append([*path[path.index(m):], m] if m in path else [n, m])
            elif m not in state:
                visit(m, [*path, m])
        state[n] = "done"

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    return found


def test_every_import_points_down_the_layers():
    assert modules(), "no modules found: the walk itself is broken"
    assert violations() == []


def module_cycles() -> list[list[str]]:
    """Modules that import one another, directly or round a loop, inside a unit or across:
    each strongly connected group of the module graph, sorted (Tarjan's algorithm)."""
    edges = {name: sorted(t for t in targets if t in GRAPH and t != name)
             for name, targets in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(n: str) -> None:
        index[n] = low[n] = len(index)
        stack.append(n)
        for m in edges[n]:
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            group = stack[stack.index(n):]
            del stack[stack.index(n):]
            if len(group) > 1:
                found.append(sorted(group))

    for n in sorted(edges):
        if n not in index:
            visit(n)
    return sorted(found)


def test_no_package_imports_itself_back_through_another():
    assert cycles() == []


def test_no_module_imports_itself_back_through_another():
    # A loop inside a unit works only while every import in it stays lazy or in order: a
    # module that needs its own importer is one room drawn as two.
    assert module_cycles() == []


@pytest.mark.parametrize("graph, expected", [
    ({"bench.a": {"bench.b"}, "bench.b": {"bench.c"}, "bench.c": {"bench.a", "torch"}},
     [["bench.a", "bench.b", "bench.c"]]),
    ({"worker.x": {"worker.y"}, "worker.y": {"worker.z"}, "worker.z": set()}, []),
    ({"worker.x": {"worker.y"}, "worker.y": {"worker.x"}, "worker.z": {"worker.x"}},
     [["worker.x", "worker.y"]]),
])
def test_a_cycle_between_modules_is_reported(monkeypatch, graph, expected):
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert module_cycles() == expected


def test_from_a_package_import_a_module_is_an_edge_to_the_module(tmp_path):
    # Given a module that imports a sibling module through its package
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from facesense.inputs import scopes, BadName\n")
    # When its imports are read, Then the sibling module (and the package, for the name) is found
    found = imports("facesense.inputs.m", lazy, {"facesense.inputs.scopes"})
    assert found == {"facesense.inputs.scopes", "facesense.inputs"}


def test_the_check_sees_lazy_imports_inside_functions(tmp_path):
    # Given a core module with an upward import hidden in a function
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from worker.inference import score\n    return score\n")
    # When its imports are read, Then the lazy one is found
    assert "worker.inference" in imports("facesense.bad", bad)


@pytest.mark.parametrize("graph, expected", [
    ({"facesense.storage": {"facesense.state.records"},
      "facesense.state.records": {"facesense.storage"}}, [["facesense.state", "facesense.storage",
                                                          "facesense.state"]]),
    ({"worker.x": {"trainer.y"}, "trainer.y": {"runtime.z"}}, []),
])
def test_a_cycle_between_units_is_reported(monkeypatch, graph, expected):
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert cycles() == expected


def test_an_upward_import_is_reported(monkeypatch):
    graph = {"facesense.registry": {"runtime.network"}, "api.jobs": {"torch"},
             "facesense.storage.local": {"facesense.state.records"}}
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert len(violations()) == 3


def test_no_module_is_over_400_lines_and_no_folder_over_14_modules():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()
            if len(p.read_text().splitlines()) > 400}
    assert long == {}
    folders: dict[Path, int] = {}
    for name, path in modules().items():
        if name.split(".")[0] not in SCRIPTS:
            folders[path.parent] = folders.get(path.parent, 0) + 1
    assert {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > 14} == {}


def test_every_package_says_what_it_holds_and_may_import():
    for name, path in modules().items():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "import" in doc, f"{name}/__init__.py: say what the package may import"
