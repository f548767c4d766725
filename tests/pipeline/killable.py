"""``fhir-cohort`` with test hooks, for the kill-and-rerun tests (test_fetch_kill.py).

``install()`` patches this process; the tests call it in a tests/zygote.py child
(``hooks=["tests.pipeline.killable:install"]``); by hand:

    python tests/pipeline/killable.py screen --source URL ...

Environment:
- ``KILLABLE_LOG``: a file; one line is appended per HTTP request sent ("request") and per
  fetch-journal write ("journal"), before it happens, so a killed run's count is exact.
- ``KILLABLE_PAGE_SIZE``: resources per search page (small, so searches have many pages).
- ``KILLABLE_KILL``: ``request:N`` or ``journal:N`` sends SIGKILL to this process just before
  the N-th request / journal write; ``read`` once the fetch is complete and the screen starts
  reading the snapshot.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import requests

from fhir_cohort import pipeline
from fhir_cohort.cli import main
from fhir_cohort.fhir import fetch

_lock = threading.Lock()
_seen = {"request": 0, "journal": 0}
_kind, _at = "", ""


def _event(kind: str) -> None:
    with _lock:
        _seen[kind] += 1
        if _kind == kind and _seen[kind] == int(_at):
            os.kill(os.getpid(), signal.SIGKILL)
        log = os.environ.get("KILLABLE_LOG")
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, f"{kind}\n".encode())
            os.close(fd)


_send = requests.Session.send
_write_state = fetch._write_state
_open_source = pipeline.open_source


def send(self: requests.Session, request: Any, **kw: Any) -> Any:
    _event("request")
    return _send(self, request, **kw)


def write_state(*args: Any) -> None:
    _event("journal")
    _write_state(*args)


def open_source(*args: Any, **kw: Any) -> Any:
    if _kind == "read":
        os.kill(os.getpid(), signal.SIGKILL)
    return _open_source(*args, **kw)


def install() -> None:
    """Patch this process as the environment's KILLABLE_* say (read now, not at import)."""
    global _kind, _at
    _kind, _, _at = os.environ.get("KILLABLE_KILL", "").partition(":")
    requests.Session.send = send  # type: ignore[method-assign]
    fetch._write_state = write_state
    pipeline.open_source = open_source  # type: ignore[assignment]
    if os.environ.get("KILLABLE_PAGE_SIZE"):
        fetch.PAGE_SIZE = int(os.environ["KILLABLE_PAGE_SIZE"])


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
