"""``fhir-cohort`` that SIGKILLs itself mid-save, for the decisions' crash test.

``install()`` runs in a tests/zygote.py child (``hooks=["tests.history.killable:install"]``)
before ``main``: the history's connections then kill this process just as SQLite starts the
``KILLABLE_LOG_ROW``-th insert into ``decision_log`` of the run, inside a save's open
transaction (its decision row already written), with a one-page cache so that uncommitted
pages spill into the WAL file first. No waiting on the test's side: the child dies at that
exact statement.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from typing import Any

from fhir_cohort.history import db

_open = db.sqlite3.connect
_inserts = 0


def _trace(statement: str) -> None:
    global _inserts
    if statement.lstrip().upper().startswith("INSERT INTO DECISION_LOG"):
        _inserts += 1
        if _inserts == int(os.environ["KILLABLE_LOG_ROW"]):
            os.kill(os.getpid(), signal.SIGKILL)


def connect(*args: Any, **kw: Any) -> sqlite3.Connection:
    conn = _open(*args, **kw)
    conn.execute("PRAGMA cache_size = 1")
    conn.set_trace_callback(_trace)
    return conn


def install() -> None:
    db.sqlite3.connect = connect  # type: ignore[assignment]  # this child only
