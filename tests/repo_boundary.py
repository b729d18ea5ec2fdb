"""Catch code that reads files from beside the repository instead of from inside it.

The CI machine has a sibling `shared/` directory next to the clone; code that reads from there passes on
that machine and fails for everyone who clones the project anywhere else. `RepoBoundary` decides whether a
path is such a read: it lies under the repository's parent directory, outside the repository itself, in an
entry that existed there before the run started (so temporary directories a test makes beside a clone in
/tmp do not count), and outside the places every Python program legitimately reads (its interpreter and
site-packages, the honing cache, the temp dir's pytest area, the user's cache directory).

`install(boundary)` turns it into a guard for the whole process with an audit hook on `open`
(builtins.open, io.open, os.open and everything built on them, Path.read_text included): a read across the
boundary raises `OutsideRepositoryRead` at the call site and is remembered in `boundary.violations`, so a
caller that swallows the exception still fails the test (see tests/conftest.py).
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class OutsideRepositoryRead(PermissionError):
    """A test touched a file beside the repository (for example a sibling data folder)."""


def _environment_roots() -> list[Path]:
    """Where any Python process reads from: the interpreter, its libraries and the user's caches."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(sysconfig.get_paths().values())
    roots.update(site.getsitepackages() + [site.getusersitepackages()])
    roots.add(str(Path.home() / ".cache"))
    for name in ("HONING_CACHE_DIR", "HONING_WHEEL_CACHE", "XDG_CACHE_HOME", "HF_HOME"):
        if os.environ.get(name):
            roots.add(os.environ[name])
    return [Path(r).resolve() for r in roots if r]


class RepoBoundary:
    """Which paths count as "outside the repository root" for a repository at `root`."""

    def __init__(self, root: Path, *, allowed: Iterable[Path] = ()) -> None:
        self.root = root.resolve()
        self.parent = self.root.parent
        try:
            entries = os.listdir(self.parent)
        except OSError:
            entries = []
        # Only what was beside the repository when the run began: a temp dir created later is not data.
        self.siblings = frozenset(entries) - {self.root.name}
        # An allowed area that holds the repository itself (a clone inside /tmp/pytest-of-<user>) says
        # nothing about its siblings, so it does not count.
        self.allowed = tuple(a for a in (p.resolve() for p in allowed) if not self.root.is_relative_to(a))
        self.violations: list[str] = []

    @classmethod
    def for_this_repo(cls, *, extra_allowed: Iterable[Path] = ()) -> RepoBoundary:
        return cls(REPO_ROOT, allowed=[*_environment_roots(), *extra_allowed])

    def crosses(self, path: str | os.PathLike[str]) -> bool:
        """True when reading `path` means reading a file beside the repository."""
        p = Path(os.path.abspath(os.fspath(path)))
        try:
            rel = p.relative_to(self.parent)
        except ValueError:
            return False  # not beside the repository at all (/usr, /proc, another tree)
        if not rel.parts or rel.parts[0] == self.root.name or rel.parts[0] not in self.siblings:
            return False
        p = p.resolve()
        return not (p.is_relative_to(self.root) or any(p.is_relative_to(a) for a in self.allowed))


def install(boundary: RepoBoundary) -> None:
    """Guard this process: every `open` of a path that crosses `boundary` fails and is recorded."""

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if boundary.crosses(path):
            boundary.violations.append(str(path))
            raise OutsideRepositoryRead(
                f"{path} is outside the repository {boundary.root}: ship the file inside the repository "
                "(data/ for datasets) instead of reading it from beside the clone"
            )

    sys.addaudithook(hook)
