"""The package's imports form no cycle at any depth, and the preprocessing never imports the evaluation side.

Every import counts: at module level, inside functions (the start-up rule's lazy imports,
docs/architecture.md) and under ``if TYPE_CHECKING:``. A lazy import only postpones a cycle: the
two modules still cannot be understood, tested or moved one without the other. ``from package
import name`` counts as importing the package's ``__init__`` unless ``name`` is a submodule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package name it installs as (pyproject.toml's package-dir).
PACKAGE_DIRS = {"fr_mer": ROOT / "fr_mer", "fr_mer.pipeline": ROOT / "pipeline"}


def discover_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere: at module level, in functions, under TYPE_CHECKING."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = discover_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """A package ``p`` under ``root``: module name -> its source; returns module name -> path."""
    (root / "p").mkdir()
    modules = {}
    for name, source in files.items():
        path = root / "p" / ("__init__.py" if name == "p" else f"{name.split('.')[-1]}.py")
        path.write_text(source)
        modules[name] = path
    return modules


def test_relative_and_package_imports_resolve(tmp_path):
    modules = write_package(tmp_path, {"p": "from p.m import f\n", "p.m": "from . import n\nfrom p import g\n",
                                       "p.n": ""})
    assert imports_of(modules["p.m"], "p.m", modules) == {"p.n", "p"}
    assert imports_of(modules["p"], "p", modules) == {"p.m"}


def test_imports_in_functions_and_under_type_checking_count(tmp_path):
    modules = write_package(tmp_path, {
        "p": "",
        "p.a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.b import B\n",
        "p.b": "def f():\n    from p.c import g\n    return g\n",
        "p.c": "class C:\n    def m(self):\n        import p.a\n",
    })
    graph = {name: imports_of(path, name, modules) for name, path in modules.items()}
    assert graph == {"p": set(), "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "fr_mer.pipeline.cache" in graph and "fr_mer.cli" in graph
    found = cycles(graph)
    if found:
        pytest.fail("import cycles: " + "; ".join(" <-> ".join(c) for c in found))


#: The modules of fr_mer below the preprocessing (fr_mer.pipeline): each imports nothing of fr_mer but
#: these. The preprocessing imports nothing else of fr_mer, so it never depends on the evaluation side.
BASE_FLOOR = {"fr_mer", "fr_mer.errors", "fr_mer.config", "fr_mer.limits", "fr_mer.cluster", "fr_mer.workers"}


def test_the_preprocessing_imports_only_the_base_floor_of_fr_mer():
    graph = import_graph()
    assert BASE_FLOOR <= set(graph)
    upward = sorted(f"{name} -> {imported}" for name, imports in graph.items()
                    if name.startswith("fr_mer.pipeline") or name in BASE_FLOOR
                    for imported in imports
                    if not imported.startswith("fr_mer.pipeline") and imported not in BASE_FLOOR)
    assert upward == []
    assert all(not imported.startswith("fr_mer.pipeline") for name in BASE_FLOOR for imported in graph[name])


def test_commands_do_not_import_each_other():
    """What two commands share lives in a module of its own (common, dataset_options, name_values) or in the
    library, so a command's module is one command."""
    from fr_mer.cli import COMMANDS

    graph = import_graph()
    commands = {f"fr_mer.commands.{module}" for module in COMMANDS.values()}
    assert commands <= set(graph)
    crossing = sorted(f"{name} -> {imported}" for name in commands for imported in graph[name] & commands)
    assert crossing == []


#: docs/architecture.md's floors above the preprocessing, lowest first: a module imports nothing of a higher
#: floor. (A module listed in none is not checked here; the no-cycle test still covers it.)
UPPER_FLOORS = (
    ("models", "metrics", "protocols", "data", "training", "ops", "stacked_optim", "func_stack", "fold_stack",
     "checkpoint", "state_dicts"),
    ("selection_grid", "run_plan", "results_folder", "epoch_archive", "fold_dispatch", "selection", "selection_audit",
     "report", "paired_statistics", "compare", "comparison_report"),
    ("evaluation", "probe", "train_checkpoint", "inference", "apex_alignment", "ststnet_import", "demo"),
    ("commands", "cli"),
)


def _floor(module: str) -> int | None:
    if module.startswith("fr_mer.pipeline"):
        return 0
    if module in BASE_FLOOR:
        return -1
    name = module.split(".")[1]
    return next((1 + i for i, floor in enumerate(UPPER_FLOORS) if name in floor), None)


def test_no_module_imports_from_a_higher_floor():
    graph = import_graph()
    upward = sorted(f"{name} -> {imported}" for name, imports in graph.items() for imported in imports
                    if None not in (_floor(name), _floor(imported)) and _floor(imported) > _floor(name))
    assert upward == []
