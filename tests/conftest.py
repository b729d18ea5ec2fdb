"""Repository-wide guard: no test may read a file from beside the clone (see tests/repo_boundary.py).

The guard is installed when pytest configures (it covers every test of the run, core's and plugins' too,
once this file is collected, as it is by the README's test command) and a test fails when it touched a path
beside the repository, even if the code under test swallowed the error.
"""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path

import pytest
import repo_boundary

_boundary: repo_boundary.RepoBoundary | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _boundary
    if _boundary is None:  # audit hooks cannot be removed: install one per process
        pytest_temp = [Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"]
        if config.option.basetemp:
            pytest_temp.append(Path(config.option.basetemp))
        _boundary = repo_boundary.RepoBoundary.for_this_repo(extra_allowed=pytest_temp)
        repo_boundary.install(_boundary)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    seen = len(_boundary.violations) if _boundary else 0
    result = yield
    if _boundary and len(_boundary.violations) > seen:
        pytest.fail(f"read outside the repository: {_boundary.violations[seen:]}", pytrace=False)
    return result
