"""The history database: migrations, files, transactions, what a run records."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.errors import HistoryError
from fhir_cohort.history.db import (
    EVIDENCE_HASHED,
    HISTORY_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    History,
    default_history_path,
    evidence_sets,
    open_history,
)
from tests.history.conftest import CRITERIA, record

# Released steps never change: a database at version N already ran them. Adding a step is
# appending to MIGRATIONS (and a line here); editing one fails this test.
RELEASED = {
    1: "5105bb104cafa7fd076082a22ec5ad7d7f513e901768951e4cab2395fba68ebe",
    2: "68062c402c8ebdbeb726c9b34af16e61a26930fd244243428c4202679388668f",
    3: "a26ddb31c5e063cc957baa9a3f0588cafcb801492f5fddf8f25ab906acf8bc93",
}


def test_released_migration_steps_are_never_edited() -> None:
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == list(range(1, len(MIGRATIONS) + 1)) and versions[-1] == SCHEMA_VERSION
    for version, _, statements in MIGRATIONS:
        if version in RELEASED:
            digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()
            assert digest == RELEASED[version], f"migration {version} was edited"


def _old_database(path: Path, version: int) -> None:
    """A history as an older fhir-cohort left it: only the steps up to ``version``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    History(path, conn).migrate(target=version)
    conn.close()


@pytest.mark.parametrize("old", range(0, SCHEMA_VERSION))
def test_an_old_database_is_migrated_and_keeps_its_runs(tmp_path: Path, old: int) -> None:
    path = tmp_path / "old.sqlite"
    _old_database(path, old)
    if old >= 1:  # a run recorded by the old version, through its own tables
        conn = sqlite3.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        history = History(path, conn)
        record(history, "2026-11-10", patients={"p1": "eligible", "p2": "ineligible"})
        conn.close()
    with open_history(path) as history:
        assert history.schema_version() == SCHEMA_VERSION
        applied = [r[0] for r in history.conn.execute("SELECT version FROM schema_version")]
        assert applied == list(range(1, SCHEMA_VERSION + 1))
        tables = {r[0] for r in history.conn.execute("SELECT name FROM sqlite_master")}
        assert {"runs", "run_answers", "decisions", "decision_log"} <= tables
        columns = {r[1] for r in history.conn.execute("PRAGMA table_info(decision_log)")}
        assert "revision" in columns
        if old >= 1:
            [run] = history.runs()
            assert (run.run_id, run.eligible, run.ineligible) == (1, 1, 1)
            # and the migrated database takes new runs, compared with the old one
            second = record(history, "2026-11-24", patients={"p1": "eligible"})
            assert history.run(second).previous_run_id == 1
    with open_history(path) as again:  # opening a current database changes nothing
        assert again.schema_version() == SCHEMA_VERSION


def test_a_newer_or_foreign_or_broken_file_is_a_history_error(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    open_history(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 'x')", (99,))
    conn.commit()
    conn.close()
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all, just some text " * 100)
    cases = {
        newer: "newer fhir-cohort",
        foreign: "not a fhir-cohort history",
        garbage: "not a usable SQLite database",
        tmp_path: "is a folder",
    }
    for path, message in cases.items():
        with pytest.raises(HistoryError, match=message):
            open_history(path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(HistoryError, match="cannot create it"):
        open_history(tmp_path / "a-file" / "below" / "h.sqlite")
    with pytest.raises(HistoryError, match="no screening history"):
        open_history(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_the_database_and_its_wal_files_are_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "new" / "deeper" / HISTORY_NAME
    with open_history(path) as history:
        record(history, "2026-11-10", patients={"p1": "eligible"})
        mode = history.conn.execute("PRAGMA journal_mode").fetchone()[0]
        files = sorted(p.name for p in path.parent.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    assert mode == "wal"
    assert files == [HISTORY_NAME, f"{HISTORY_NAME}-shm", f"{HISTORY_NAME}-wal"]
    assert set(modes.values()) == {0o600}, modes
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_failed_transaction_records_nothing(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.sqlite") as history:
        with pytest.raises(RuntimeError), history.transaction():
            record(history, "2026-11-10", patients={"p1": "eligible"})
            raise RuntimeError("the outputs could not be written")
        assert history.runs() == []
        for table in ("run_patients", "run_answers", "evidence_sets"):
            assert history.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        first = record(history, "2026-11-10", patients={"p1": "eligible"})
        assert history.run(first).previous_run_id is None


def test_a_run_records_statuses_answers_and_evidence_hashes(tmp_path: Path) -> None:
    evidence = {("p1", "sle"): [{"resource_type": "Condition", "resource_id": "c1"}]}
    with open_history(tmp_path / "h.sqlite") as history:
        run_id = record(
            history, "2026-11-10", patients={"p1": "eligible", "p2": "review"}, evidence=evidence
        )
        run = history.run(run_id)
        assert (run.trial_id, run.as_of, run.criteria_sha256) == ("T-1", "2026-11-10", "abc")
        assert (run.patients, run.eligible, run.review, run.ineligible) == (2, 1, 1, 0)
        assert run.criterion_ids == CRITERIA and run.tool_version == "0.1.0"
        rows = history.conn.execute(
            "SELECT p.patient_id, a.criterion_id, a.answer, a.evidence_sha256 FROM run_answers a "
            "JOIN patients p USING (patient_key) WHERE run_id = ? ORDER BY 1, 2",
            (run_id,),
        ).fetchall()
        assert len(rows) == 2 * len(CRITERIA)
        hashed = {(r[0], r[1]): r[3] for r in rows if r[3] is not None}
        assert list(hashed) == [("p1", "sle")]
        [stored] = history.evidence_rows(hashed["p1", "sle"])
        assert (stored["resource_type"], stored["resource_id"]) == ("Condition", "c1")
        with pytest.raises(HistoryError, match="no run 99"):
            history.run(99)


def test_the_evidence_hash_reads_every_fact_and_nothing_the_as_of_date_changes() -> None:
    base = {f: f"{f}-x" for f in EVIDENCE_HASHED} | {"note": "a note"}

    def digest(as_of: str = "2026-11-10", **changes: str) -> bytes:
        frame = pd.DataFrame([{"patient_id": "p", "criterion_id": "c", **base, **changes}])
        return evidence_sets(frame, as_of)["p", "c"][0]

    first = digest()
    for field in EVIDENCE_HASHED:  # every hashed field counts
        assert digest(**{field: "other"}) != first, field
    # what the engine reads relative to the as-of date does not
    assert digest(note="era 301 days") == first
    assert digest(value="age 40") == digest(value="age 41")
    assert digest("2026-11-10", value="2026-05-08..2026-11-10") == digest(
        "2026-11-24", value="2026-05-08..2026-11-24"
    )
    assert digest(value="2026-05-08..2026-11-10") != digest(value="2026-05-09..2026-11-10")
    assert evidence_sets(pd.DataFrame(), "2026-11-10") == {}


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("results/2026-11-24", "results"),
        ("results/2026-11-24/", "results"),
        ("out", "."),
        ("/data/screens/week-48", "/data/screens"),
    ],
)
def test_the_default_history_is_beside_the_out_folder(out: str, expected: str) -> None:
    assert default_history_path(out) == Path(expected) / HISTORY_NAME


def test_the_default_history_of_dot_is_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "week").mkdir()
    monkeypatch.chdir(tmp_path / "week")
    assert default_history_path(".") == tmp_path.resolve() / HISTORY_NAME
    assert default_history_path("..") == tmp_path.resolve().parent / HISTORY_NAME


def test_statuses_are_each_patients_status_in_one_run(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.sqlite") as history:
        first = record(history, "2026-11-10", patients={"p1": "eligible", "p2": "review"})
        second = record(history, "2026-11-17", patients={"p2": "ineligible", "p3": "eligible"})
        assert history.statuses(first) == {"p1": "eligible", "p2": "review"}
        assert history.statuses(second) == {"p2": "ineligible", "p3": "eligible"}
        with pytest.raises(HistoryError, match="no run 99"):
            history.statuses(99)
