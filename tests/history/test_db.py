"""The history database: migrations, files, transactions, what a run records."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fhir_cohort.errors import HistoryError
from fhir_cohort.history import db
from fhir_cohort.history.db import (
    EVIDENCE_HASHED,
    HISTORY_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    History,
    SharedEvidence,
    default_history_path,
    evidence_sets,
    open_history,
)
from tests.history.conftest import CRITERIA, record, run_record, screening
from tests.history.legacy import record_v3

# Released steps never change: a database at version N already ran them. Adding a step is
# appending to MIGRATIONS (and a line here); editing one fails this test.
RELEASED = {
    1: "5105bb104cafa7fd076082a22ec5ad7d7f513e901768951e4cab2395fba68ebe",
    2: "68062c402c8ebdbeb726c9b34af16e61a26930fd244243428c4202679388668f",
    3: "a26ddb31c5e063cc957baa9a3f0588cafcb801492f5fddf8f25ab906acf8bc93",
    4: "540166f8ae2d29f3ab5f8c5b328a8f17a60f73ed813fb50da4367054cfc06210",
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
        write = record_v3 if old < 4 else record
        write(history, "2026-11-10", patients={"p1": "eligible", "p2": "ineligible"})
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
        for table in ("run_patients", "run_answers", "answer_sets", "evidence_sets"):
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


# Week 3 after test_diff's two weeks: a decided patient's answer changes on a new record
# (re-review), another's without one (kept), and the criteria gain one (compared on the
# criteria both runs have).
NEWER_LAB = {"resource_type": "Observation", "resource_id": "o3", "date": "2026-11-30"}


def _weeks() -> list[dict[str, Any]]:
    from tests.history.test_diff import WEEK1, WEEK2

    week3 = {
        "patients": {**WEEK2["patients"], "same-eligible-new-lab": "review"},
        "evidence": {
            **WEEK2["evidence"],
            ("same-eligible-new-lab", "sle"): [LAB_1, NEWER_LAB],
            ("unchanged", "age"): [{"resource_type": "Patient", "resource_id": "unchanged"}],
        },
        "answers": {
            **WEEK2["answers"],
            ("same-eligible-new-lab", "sle"): "unknown",
            ("unchanged", "pregnancy"): "review",
        },
    }
    return [WEEK1, WEEK2, week3]


LAB_1 = {"resource_type": "Observation", "resource_id": "o1", "date": "2026-11-01"}
AS_OF = ("2026-11-10", "2026-11-24", "2026-12-01")


def _decide(history: History) -> None:
    for pid, fields in {
        "same-eligible-new-lab": {"decision": "eligible"},
        "unchanged": {"decision": "ineligible", "reason": "r"},
        "was-ineligible": {"contact_status": "declined"},
        "still-ineligible-new-lab": {"decision": "needs_information"},
    }.items():
        history.save_decision("T-1", pid, who="ana", expected_version=0, when="2026-11-12",
                              **fields)  # fmt: skip


def _everything(history: History) -> dict[str, Any]:
    """What every reader says about every run: comparisons both ways, worklists, each
    patient's answers and evidence, statuses, and the run_answers rows."""
    from fhir_cohort.history.diff import diff_runs

    runs = [r.run_id for r in history.runs()]
    pids = [r[0] for r in history.conn.execute("SELECT patient_id FROM patients")]
    seen: dict[str, Any] = {}
    for old, new in [(None, runs[0]), *itertools.permutations(runs, 2)]:
        diff = diff_runs(history, old, new)
        seen[f"diff {old} {new}"] = (diff.changes, diff.counts, diff.new_patients, diff.withheld)
    for run in runs:
        seen[f"worklist {run}"] = history.worklist("T-1", run).entries
        seen[f"statuses {run}"] = history.statuses(run)
        seen[f"answers {run}"] = {p: history.patient_answers(run, p) for p in pids}
    seen["rows"] = _answer_rows(history)
    return seen


def _answer_rows(history: History) -> list[tuple[Any, ...]]:
    return history.conn.execute(
        "SELECT a.run_id, p.patient_id, a.criterion_id, a.answer, r.text, a.evidence_sha256 "
        "FROM run_answers a JOIN patients p USING (patient_key) "
        "LEFT JOIN reasons r USING (reason_id) ORDER BY 1, 2, 3"
    ).fetchall()


def test_runs_recorded_before_answer_sets_migrate_to_the_same_answers(tmp_path: Path) -> None:
    """Two weeks recorded one row per answer (schema 3), migrated, a third week on top: every
    reader gives what it gives for the same weeks recorded as answer sets, and run_answers
    (now a view) holds the rows the old table held."""
    weeks = _weeks()
    old = tmp_path / "v3.sqlite"
    _old_database(old, 3)
    conn = sqlite3.connect(old, isolation_level=None)
    conn.row_factory = sqlite3.Row
    v3 = History(old, conn)
    record_v3(v3, AS_OF[0], **weeks[0])
    _decide(v3)
    record_v3(v3, AS_OF[1], **weeks[1])
    before = [tuple(r) for r in _answer_rows(v3)]
    conn.close()
    with open_history(old) as migrated:
        assert [tuple(r) for r in _answer_rows(migrated)] == before
        assert "run_answers_v3" not in {
            r[0] for r in migrated.conn.execute("SELECT name FROM sqlite_master")
        }
        record(migrated, AS_OF[2], **weeks[2])
        got = _everything(migrated)
    with open_history(tmp_path / "v4.sqlite") as fresh:
        record(fresh, AS_OF[0], **weeks[0])
        _decide(fresh)
        for as_of, week in zip(AS_OF[1:], weeks[1:], strict=True):
            record(fresh, as_of, **week)
        want = _everything(fresh)
        sets = fresh.conn.execute("SELECT count(*) FROM answer_sets").fetchone()[0]
    got["rows"] = [tuple(r) for r in got["rows"]]
    want["rows"] = [tuple(r) for r in want["rows"]]
    assert got == want
    # what the weeks exercise: every kind of change, a re-review, a withheld candidate
    assert set(want["diff 1 2"][1].values()) - {0} and want["diff 1 2"][3] == 1
    assert [e.patient_id for e in want["worklist 3"] if e.re_review] == ["same-eligible-new-lab"]
    assert sets < len(want["rows"]) / 3  # patients share sets: fewer sets than answers


@pytest.mark.parametrize(("chunk_rows", "write_bytes"), [(16_384, 16 << 20), (2, 1), (3, 200)])
def test_each_evidence_set_keeps_the_wording_recorded_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, write_bytes: int
) -> None:
    """Runs of two trials in turn cite the same records with other notes (and, in one run,
    one record set under two criteria with two notes): after every run each stored set has
    the text of the last group recorded with its hash, as if every set were rewritten each
    run, though a run rewrites only the sets whose text the latest run did not store. Also
    with groups hashed a few at a time and the buffered writes flushed at every chunk or
    every few (a digest met again in a later chunk or flush: its later text still wins)."""
    import random

    monkeypatch.setattr(db, "_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(db, "_WRITE_BYTES", write_bytes)
    rng = random.Random(13)
    records = [{"resource_type": "Condition", "resource_id": f"c{i}"} for i in range(3)]
    expected: dict[bytes, str] = {}
    with open_history(tmp_path / "h.sqlite") as history, history.transaction():  # one fsync
        for week in range(20):
            evidence = {
                (pid, cid): [
                    {**r, "note": rng.choice(["a", "b"])}
                    for r in rng.sample(records, rng.randint(1, 2))
                ]
                for pid in ("p1", "p2", "p3")
                for cid in CRITERIA
                if rng.random() < 0.6
            }
            as_of = f"{2026 + week // 12}-{week % 12 + 1:02d}-01"
            patients = dict.fromkeys(("p1", "p2", "p3"), "review")
            record(history, as_of, rng.choice(["T-1", "T-2"]), patients=patients, evidence=evidence)
            frame = screening(patients={"p1": "review"}, evidence=evidence)["evidence"]
            expected.update(evidence_sets(frame, as_of).values())  # in order: the last wins
            stored = dict(history.conn.execute("SELECT * FROM evidence_sets").fetchall())
            assert stored == expected, week
        sets = history.conn.execute("SELECT count(*) FROM evidence_sets").fetchone()[0]
        assert 0 < sets < 3 * 20  # sets were shared across runs, not one per group


@pytest.mark.parametrize(
    ("status", "answers", "message"),
    [
        (["p1", "p1"], [("p1", "age")], "lists a patient twice"),
        (["p1"], [("p1", "age"), ("p2", "age")], "patient the status table does not list"),
        (["p1"], [("p1", "age"), ("p1", "age")], "two answers of one patient"),
    ],
)
def test_tables_that_do_not_fit_are_refused_and_record_nothing(
    tmp_path: Path, status: list[str], answers: list[tuple[str, str]], message: str
) -> None:
    with open_history(tmp_path / "h.sqlite") as history:
        with pytest.raises(HistoryError, match=message):
            history.record_run(
                run_record("2026-11-10"),
                status=pd.DataFrame({"patient_id": status, "status": "review"}),
                answers=pd.DataFrame(answers, columns=["patient_id", "criterion_id"]).assign(
                    answer="met", reason=""
                ),
                evidence=pd.DataFrame(),
            )
        assert history.runs() == []


def _contents(history: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows but the clock's (recorded_at): what two recordings must share."""
    out = {}
    tables = history.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    for (table,) in tables.fetchall():
        columns = [r[1] for r in history.conn.execute(f"PRAGMA table_info({table})")]
        keep = ",".join(c for c in columns if c not in ("recorded_at", "applied_at"))
        out[table] = history.conn.execute(f"SELECT {keep} FROM {table} ORDER BY {keep}").fetchall()
    return out


@pytest.mark.parametrize("reorder", [False, True])
def test_a_pass_sharing_evidence_digests_records_what_separate_records_do(
    tmp_path: Path, reorder: bool
) -> None:
    """SharedEvidence: a trial of a pass takes an earlier trial's digests for a criterion both
    ask identically (same key) instead of hashing its rows again. Over weeks of passes (a
    digest met again, wordings changed, a key shared by the first and third trial only, a
    shared key whose rows differ after all, the patients listed in another order) every
    table of the history is what recording each trial without sharing gives."""
    rng = random.Random(7)
    records = [{"resource_type": "Condition", "resource_id": f"c{i}"} for i in range(4)]
    pids = ("p1", "p2", "p3", "p4")
    # per trial, one key per criterion (CRITERIA's order): equal keys = asked identically
    keys = {"T-1": ["a", "s", "p"], "T-2": ["a2", "s", "p"], "T-3": ["a", "s2", "p"]}
    paths = {"shared": tmp_path / "shared.sqlite", "separate": tmp_path / "separate.sqlite"}
    with open_history(paths["shared"]) as shared, open_history(paths["separate"]) as separate:
        for week in range(12):
            as_of = f"2026-{week + 1:02d}-01"
            base = {
                (pid, cid): [
                    {**r, "note": rng.choice(["x", "y"])}
                    for r in rng.sample(records, rng.randint(1, 2))
                ]
                for pid in pids
                for cid in CRITERIA
                if rng.random() < 0.7
            }
            share = SharedEvidence(keys.values())
            for n, (trial_id, trial_keys) in enumerate(keys.items()):
                evidence = {}
                for (pid, cid), rows in base.items():
                    own = keys["T-1"][CRITERIA.index(cid)] != trial_keys[CRITERIA.index(cid)]
                    if own or (n and rng.random() < 0.1):  # its own rows, or a note changed
                        rows = [{**r, "note": rng.choice(["x", "y", "z"])} for r in rows]
                    evidence[pid, cid] = rows
                order = list(reversed(pids)) if reorder and n == 2 else list(pids)
                frames = screening(patients=dict.fromkeys(order, "review"), evidence=evidence)
                for history, kwargs in (
                    (shared, {"shared": share, "same_keys": trial_keys}),
                    (separate, {}),
                ):
                    history.record_run(
                        run_record(as_of, trial_id),
                        status=frames["status"],
                        answers=frames["answers"],
                        evidence=frames["evidence"],
                        **kwargs,
                    )
            assert not share.sharing  # each key let go after the last trial asking it
            assert _contents(shared) == _contents(separate), week


def test_a_pass_reuses_its_patients_keys_only_while_they_hold(tmp_path: Path) -> None:
    """A connection reuses the keys of the patients it recorded last (a pass's next trial
    lists the same patients), but not after a rollback: the keys it inserted are gone, and
    another writer may have taken them."""
    path = tmp_path / "h.sqlite"
    patients = {"p1": "eligible", "p2": "review", "p3": "ineligible"}
    with open_history(path) as history, open_history(path) as other:
        record(history, "2026-11-10", patients={"p1": "eligible"})
        with pytest.raises(RuntimeError), history.transaction():
            record(history, "2026-11-17", patients=patients)  # p2, p3 inserted, then rolled back
            raise RuntimeError("the outputs could not be written")
        record(other, "2026-11-17", "T-2", patients={"p9": "review"})  # takes p2's old key
        run_id = record(history, "2026-11-17", patients=patients)
        assert history.statuses(run_id) == patients
        again = record(history, "2026-11-24", "T-3", patients=patients)  # the same keys
        assert history.statuses(again) == patients
        assert other.statuses(run_id - 1) == {"p9": "review"}
        keys = dict(history.conn.execute("SELECT patient_id, patient_key FROM patients"))
        assert len(set(keys.values())) == 4
        rows = history.conn.execute(
            "SELECT run_id, patient_key FROM run_patients WHERE run_id >= ?", (run_id,)
        ).fetchall()
        assert sorted(map(tuple, rows)) == sorted(
            (r, keys[p]) for r in (run_id, again) for p in patients
        )


def test_wordings_another_writer_recorded_since_are_read_again(tmp_path: Path) -> None:
    """The latest run's wordings are what this connection recorded last only while no other
    run was recorded since: a set another screen rewrote is written again."""
    path = tmp_path / "h.sqlite"
    cited = [{"resource_type": "Condition", "resource_id": "c1", "note": "x"}]
    other_note = [{**cited[0], "note": "y"}]
    with open_history(path) as history, open_history(path) as other:
        for writer, rows in ((history, cited), (other, other_note), (history, cited)):
            record(writer, "2026-11-10", patients={"p1": "review"}, evidence={("p1", "sle"): rows})
        frame = screening(patients={"p1": "review"}, evidence={("p1", "sle"): cited})["evidence"]
        expected = dict(evidence_sets(frame, "2026-11-10").values())
        assert dict(history.conn.execute("SELECT * FROM evidence_sets").fetchall()) == expected


def test_latest_wordings_lookup_is_a_dictionary_lookup() -> None:
    """_LatestWordings finds digests by their first 8 bytes, or by all 32 when two digests
    share those: each answer is that of a plain look-up (a digest the run had with two
    wordings is never "the same")."""
    rng = random.Random(5)
    for shared_prefix in (False, True):
        digests = [rng.randbytes(32) for _ in range(200)]
        digests += [rng.randbytes(30) + b"\0\0" for _ in range(5)]  # trailing zero bytes
        if shared_prefix:
            digests += [d[:8] + rng.randbytes(24) for d in digests[:5]]
        run = [(d, rng.choice([b"w1wordin", b"w2wordin"])) for d in digests for _ in range(2)]
        rng.shuffle(run)
        latest = db._LatestWordings(b"".join(d for d, _ in run), b"".join(w for _, w in run))
        assert (latest.prefix is None) == shared_prefix
        wordings: dict[bytes, set[bytes]] = {}
        for d, w in run:
            wordings.setdefault(d, set()).add(w)
        query = [rng.choice(digests) for _ in range(300)] + [rng.randbytes(32) for _ in range(50)]
        words = [rng.choice([b"w1wordin", b"w2wordin"]) for _ in query]
        known, same = latest.lookup(query, words)
        assert known.tolist() == [d in wordings for d in query]
        assert same.tolist() == [wordings.get(d) == {w} for d, w in zip(query, words, strict=True)]


def test_the_sets_to_write_are_those_of_the_row_by_row_rule() -> None:
    """_to_write (vectorised) against the rule it replaces, on random chunks: a set the latest
    run stored with this text is skipped unless this run wrote its digest before."""
    import numpy as np

    rng = random.Random(11)
    for _ in range(300):
        pool = [bytes([i]) * 32 for i in range(rng.randint(1, 6))]
        rewritten = set(rng.sample(pool, rng.randint(0, len(pool))))
        expected_rewritten = set(rewritten)
        chunk = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        known = [rng.random() < 0.7 for _ in chunk]
        same = [k and rng.random() < 0.6 for k in known]
        expected = []
        for k, (digest, is_known, is_same) in enumerate(zip(chunk, known, same, strict=True)):
            if is_same and digest not in expected_rewritten:
                continue
            if is_known:
                expected_rewritten.add(digest)
            expected.append(k)
        got = db._to_write(chunk, np.array(known), np.array(same), rewritten)
        assert got == expected
        assert rewritten == expected_rewritten


def test_answer_sets_are_numbered_alike_whatever_order_the_patients_come_in(
    tmp_path: Path,
) -> None:
    """The read's workers hand patients over in the order they finish: two histories of the
    same weeks, patients shuffled, hold the very same tables (answer set ids included)."""
    weeks = _weeks()
    contents = []
    for name, seed in (("a", 1), ("b", 2)):
        with open_history(tmp_path / f"{name}.sqlite") as history:
            for week, as_of in zip(weeks, AS_OF, strict=True):
                order = list(week["patients"])
                random.Random(seed).shuffle(order)
                patients = {pid: week["patients"][pid] for pid in order}
                record(history, as_of, **{**week, "patients": patients})
            contents.append(
                {
                    table: rows
                    for table, rows in _contents(history).items()
                    if table not in ("runs", "schema_version")
                }
            )
    assert contents[0] == contents[1]
    assert contents[0]["answer_sets"]
