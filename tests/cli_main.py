"""Run the console entry point (``fhir-cohort = fhir_cohort.cli:main``) in this process and
answer as ``subprocess.run`` would: exit code, stdout, stderr.

A subprocess pays ~2 s of imports (pandas, pyarrow, the engine) per call for nothing a test
checks; tests that need a process of their own (signals, umask, a kill, the installed script
itself) keep ``subprocess``. What the script adds to ``main`` is reproduced: its exit code
(``sys.exit(main())``, argparse's ``SystemExit``) and, for an unexpected exception, a traceback
on stderr and exit 1. ``env`` replaces the environment for the call as it would a child's; the
log handler ``main`` sets up writes to this call's stderr, as it would in a fresh process.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout

from fhir_cohort.cli import main
from fhir_cohort.logs import THIRD_PARTY

__all__ = ["run_main"]


@contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _fresh_logging() -> Iterator[None]:
    """No root handler (as in a new process: ``main`` adds its own, on the redirected stderr),
    then the test's logging set-up back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY}
    root.handlers = []
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = handlers
        root.setLevel(level)
        for name, lvl in levels.items():
            logging.getLogger(name).setLevel(lvl)


@contextmanager
def _process_state(umask: int | None, cwd: str | os.PathLike[str] | None) -> Iterator[None]:
    """A child's umask and working folder for the call (both process-wide: a pytest worker runs
    one test at a time, and both are restored)."""
    old_umask = os.umask(umask) if umask is not None else None
    old_cwd = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_umask is not None:
            os.umask(old_umask)


def run_main(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    umask: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``fhir-cohort ARGS`` in-process; ``env`` (default: this process's) as its environment,
    ``umask`` and ``cwd`` as a child's would be."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _environment(env),
        _process_state(umask, cwd),
        _fresh_logging(),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=err)
                code = 1
        except Exception:
            traceback.print_exc(file=err)
            code = 1
    return subprocess.CompletedProcess(["fhir-cohort", *args], code, out.getvalue(), err.getvalue())
