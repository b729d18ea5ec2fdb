"""Nothing in the repository reads a path beside it: a clone anywhere passes its own tests.

Two layers. At run time, tests/conftest.py installs `repo_boundary`'s audit hook for the whole suite, so any
test whose code opens a file beside the clone fails (tested here on a throwaway layout with a real pytest
run). Statically, every Python file under core/, plugins/, bench/, tests/ and examples/ is checked for
paths built from `__file__` that climb above the repository root.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import repo_boundary

ROOT = repo_boundary.REPO_ROOT
CHECKED_DIRS = ("core", "plugins", "bench", "tests", "examples")


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    repo, shared = tmp_path / "repo", tmp_path / "shared"
    (repo / "data").mkdir(parents=True)
    shared.mkdir()
    (shared / "train.csv").write_text("text,category\n", encoding="utf-8")
    (repo / "data" / "train.csv").write_text("text,category\n", encoding="utf-8")
    return repo, shared


def test_boundary_tells_sibling_reads_from_reads_inside(tmp_path):
    repo, shared = _layout(tmp_path)
    boundary = repo_boundary.RepoBoundary(repo, allowed=[tmp_path / "venv"])
    assert boundary.crosses(shared / "train.csv")
    assert boundary.crosses(repo / ".." / "shared" / "train.csv")  # spelt with ..
    assert not boundary.crosses(repo / "data" / "train.csv")
    assert not boundary.crosses("/usr/lib/os-release")  # not beside the repository
    (tmp_path / "made-later").mkdir()
    assert not boundary.crosses(tmp_path / "made-later" / "x")  # created after the run began
    assert not boundary.crosses(tmp_path / "venv" / "lib" / "x.py")  # an allowed root


def test_guard_fails_a_test_that_reads_beside_the_clone(tmp_path):
    """A real pytest run with this repository's guard, in a repository whose sibling holds the data."""
    repo, shared = _layout(tmp_path)
    tests = repo / "tests"
    tests.mkdir()
    for name in ("conftest.py", "repo_boundary.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    (repo / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tests / "test_reads.py").write_text(
        "from pathlib import Path\n"
        "HERE = Path(__file__).resolve().parent\n"
        "def test_inside():\n"
        "    assert (HERE.parent / 'data' / 'train.csv').read_text().startswith('text')\n"
        "def test_beside():\n"
        "    (HERE.parent.parent / 'shared' / 'train.csv').read_text()\n"
        "def test_beside_swallowed():\n"
        "    try:\n"
        "        open(HERE.parent.parent / 'shared' / 'train.csv').close()\n"
        "    except OSError:\n"
        "        pass\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 failed, 1 passed" in out, out
    assert "OutsideRepositoryRead" in out and "read outside the repository" in out, out


def _climbs(node: ast.AST, depth: int, names: dict[str, int]) -> int | None:
    """How many directories below the repository root `node` points at (negative: above it), when it
    is a path derived from `__file__`; None for anything else."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "Path" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Name) and first.id == "__file__":
                return depth
        if isinstance(func, ast.Attribute) and func.attr in {"resolve", "absolute"}:
            return _climbs(func.value, depth, names)
        return None
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = _climbs(node.value, depth, names)
        return None if inner is None else inner - 1
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        inner = _climbs(node.value.value, depth, names)
        if inner is not None and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
            return inner - 1 - node.slice.value
        return None
    if isinstance(node, ast.Name):
        return names.get(node.id)
    return None


def _escapes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    depth = len(path.relative_to(ROOT).parts)
    names: dict[str, int] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            level = _climbs(node.value, depth, names)
            if level is not None:
                names[node.targets[0].id] = level
    for node in ast.walk(tree):
        level = _climbs(node, depth, names)
        if level is not None and level < 0:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def _python_files() -> list[Path]:
    return sorted(p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts)


def test_static_check_sees_a_climb_above_the_root(tmp_path, monkeypatch):
    fake = tmp_path / "bench" / "x.py"
    fake.parent.mkdir()
    fake.write_text(
        "from pathlib import Path\nHERE = Path(__file__).resolve().parent\nA = HERE.parents[1] / 'shared'\n"
        "B = Path(__file__).parents[0]\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _escapes(fake) == ["bench/x.py:3: HERE.parents[1]"]


def test_no_file_builds_a_path_above_the_repository_root():
    files = _python_files()
    assert len(files) > 100  # the walk found the tree
    escapes = [line for f in files for line in _escapes(f)]
    assert escapes == []


@pytest.mark.parametrize("needle", ["shared/data", "HONING_SHARED_DIR"])
def test_no_code_names_the_sibling_data_directory(needle):
    hits = [
        str(p.relative_to(ROOT))
        for p in _python_files()
        if p.name != Path(__file__).name and needle in p.read_text(encoding="utf-8")
    ]
    assert hits == []
