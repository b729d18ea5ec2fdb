"""The layout the README's map promises: imports point down, plugins use only the declared API, and each
piece of the optimizer toolkit exists once.

The import graph is read from the source (every ``import``, function-level ones included, since those
are how loops hide), and each core module is also imported alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "src" / "honing"
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("*/src/*") if p.is_dir() and p.name.startswith("honing_"))

#: The floors of the core, lowest first. A module may import its own floor or lower ones, never higher;
#: within a floor the graph must still have no cycle. (The README's Layout section shows the same map.)
FLOORS: list[tuple[str, ...]] = [
    ("honing.errors", "honing._version", "honing.jsontext"),
    ("honing.settings", "honing.signatures", "honing.data", "honing.record", "honing.runs", "honing.metrics",
     "honing.datafiles", "honing.tracing"),
    ("honing.lm",),
    ("honing.adapters", "honing.embedders"),
    ("honing.plugins",),
    ("honing.serialization", "honing.modules", "honing.evaluate"),
    ("honing.optimizers",),
    ("honing.plugin_api", "honing.cli", "honing.testing", "honing"),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p, CORE): p for p in CORE.rglob("*.py")}


def imported_modules(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every honing module `path` imports (resolved to a module of `known`), at any depth in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            module = resolve(target)
            if module and module != name:
                found.add(module)
    return found


def core_graph() -> dict[str, set[str]]:
    known = core_modules()
    return {name: imported_modules(path, name, known) for name, path in known.items()}


def floor_of(module: str) -> int:
    best, level = -1, None
    for i, floor in enumerate(FLOORS):
        for prefix in floor:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level is not None, f"{module} is on no floor: add it to FLOORS (and to the README's map)"
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_function_level_imports_and_loops():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    known = core_modules()
    hidden = imported_modules(CORE / "optimizers" / "kit" / "checks.py", "honing.optimizers.kit.checks", known)
    assert {"honing.settings", "honing.errors"} <= hidden


def test_core_has_no_import_cycle():
    assert cycles(core_graph()) == []


def test_no_core_import_points_up_a_floor():
    upward = [f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})"
              for a, targets in sorted(core_graph().items()) for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert upward == []


def test_each_core_module_imports_alone_in_a_fresh_interpreter():
    """A loop that function-level imports hide shows up as an ImportError when a module is imported first.
    One interpreter per module, two at a time."""
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}

    def import_alone(module: str) -> tuple[str, int, str]:
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                              timeout=120, env=env)
        return module, proc.returncode, proc.stderr[-1500:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, code, err in pool.map(import_alone, sorted(core_modules())) if code != 0]
    assert failed == []


# ----------------------------------------------------------------------------------------------------
# plugins use the declared API only

ALLOWED_FROM_PLUGINS = {"honing", "honing.plugin_api"}


def plugin_imports(package: Path) -> dict[str, set[str]]:
    """honing module -> the files of `package` importing it (any depth)."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
                if node.module == "honing":  # `from honing import settings` reaches honing.settings
                    names = [f"honing.{alias.name}" if (CORE / alias.name).exists()
                             or (CORE / f"{alias.name}.py").exists() else "honing" for alias in node.names]
            else:
                continue
            for name in names:
                if name == "honing" or name.startswith("honing."):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_plugin_import_reader_sees_internals():
    assert plugin_imports(CORE / "testing")  # the core's own testing helpers use internals


@pytest.mark.parametrize("package", PLUGINS, ids=lambda p: p.name)
def test_plugins_import_only_the_declared_api(package):
    outside = {name: sorted(files) for name, files in plugin_imports(package).items()
               if name not in ALLOWED_FROM_PLUGINS}
    assert outside == {}, "plugins may import `honing` and `honing.plugin_api` only"


def test_the_declared_api_exports_what_it_lists():
    import honing.plugin_api as api

    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []
    assert len(set(api.__all__)) == len(api.__all__)


# ----------------------------------------------------------------------------------------------------
# one toolkit, one copy

#: Helpers that used to exist in several copies across the core and the plugins.
TOOLKIT = ("make_teacher", "assemble", "bootstrap_demos", "build_demos", "BuiltDemos", "shortfall_note",
           "demo_count", "check_count", "check_fraction", "check_threshold", "check_number", "check_lm",
           "jsonable", "json_safe", "_json_safe", "_jsonable", "open_run_log", "reject_unknown", "RUN_NEUTRAL",
           "selection_set", "clear_gain", "gain_text", "more_demos", "resolve_lm", "effective_max_errors",
           "with_driver", "comparable_parameters")


def definitions(name: str) -> list[str]:
    where = []
    for root in [CORE, *PLUGINS]:
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                defined = ((isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name)
                           or (isinstance(node, ast.Assign)
                               and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)))
                if defined:
                    where.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return where


@pytest.mark.parametrize("name", TOOLKIT)
def test_each_toolkit_helper_is_defined_at_most_once(name):
    assert len(definitions(name)) <= 1, definitions(name)
