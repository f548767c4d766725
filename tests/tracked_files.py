"""Pytest plugin: the run fails if a test changed a tracked file of the repository.

Tests write to tmp_path or tmp/ (gitignored) only; docs/img/report.png, for one, is refreshed by
`make screenshot`, never by a test run. The check lists tracked files that differ from HEAD
(``git status``) before and after the session and compares their content, so local edits made
before the run, or committed during it, are no false alarm. Skipped when git or the repository
is absent (an unpacked sdist), and in pytest-xdist workers (the controller checks once).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_KEY = pytest.StashKey[dict[str, str] | None]()
# `make screenshot` sets this to refresh the README's picture on purpose.
SCREENSHOT = "docs/img/report.png"
SCREENSHOT_ENV = "FHIR_COHORT_UPDATE_SCREENSHOT"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def tracked_state(root: Path) -> dict[str, str] | None:
    """``{path: content hash}`` of every tracked file that differs from HEAD."""
    if shutil.which("git") is None:
        return None
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    if status is None:
        return None
    state: dict[str, str] = {}
    for entry in filter(None, status.split("\0")):
        state[entry[3:]] = _digest(root, entry[3:])
    return state


def _digest(root: Path, path: str) -> str:
    digest = _git(root, "hash-object", "--", path) if (root / path).is_file() else None
    return (digest or "absent").strip()


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    config.stash[_KEY] = None if _is_xdist_worker(config) else tracked_state(config.rootpath)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    before = config.stash.get(_KEY, None)
    if before is None:
        return
    after = tracked_state(config.rootpath) or {}
    # A file dirty before the run counts as changed only if its content changed (not if it was
    # committed meanwhile); one clean before and dirty after was changed by the run.
    changed = sorted(
        p
        for p in before.keys() | after.keys()
        if before.get(p) != after.get(p, _digest(config.rootpath, p))
    )
    if os.environ.get(SCREENSHOT_ENV) == "1":
        changed = [p for p in changed if p != SCREENSHOT]
    if not changed:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    message = "tests changed tracked files (tests must write to tmp_path or tmp/): " + ", ".join(
        changed
    )
    if reporter is not None:
        reporter.write_sep("=", "tracked files changed", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
