"""The screening history: an SQLite database (stdlib ``sqlite3``, WAL) of every run.

One file holds every trial's runs: per run the as-of date, the data cut, the criteria file and
its SHA-256, the tool version; per patient the status; per patient and criterion the answer,
its reason and the SHA-256 of the evidence behind it. The schema grows only by migrations
(``MIGRATIONS``, applied in order, each in its own transaction, recorded in
``schema_version``); an applied step is never edited. docs/history.md describes the tables.

No pandas import: ``fhir-cohort history`` lists runs without loading it. The frames
:meth:`History.record_run` takes are read through their columns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fhir_cohort.errors import HistoryError
from fhir_cohort.files import open_private, private_dir, warn_if_exposed
from fhir_cohort.history.decisions import DecisionStore

__all__ = [
    "EVIDENCE_HASHED",
    "HISTORY_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "History",
    "RecordedAnswer",
    "RunInfo",
    "default_history_path",
    "evidence_sets",
    "open_history",
]

# The default file sits in the folder that holds --out, not in it: a coordinator re-screens
# weekly into a new folder (results/2026-11-24, results/2026-12-01), and each week must find
# the same history (results/fhir-cohort-history.sqlite).
HISTORY_NAME = "fhir-cohort-history.sqlite"

# The evidence hash covers the records behind an answer, not the engine's note: notes read
# the records relative to the as-of date ("era 301 days" grows every week while a medication
# stays active), and a hash that changed weekly would flag every candidate.
EVIDENCE_HASHED: tuple[str, ...] = (
    "resource_type",
    "resource_id",
    "system",
    "code",
    "display",
    "date",
    "value",
)
# Stored (for the changes' "new evidence" and a later worklist): the hashed fields and the note.
EVIDENCE_STORED: tuple[str, ...] = (*EVIDENCE_HASHED, "note")

# Each step: (version, what it adds, statements). Append only: a database at version N gets
# steps N+1.. on its next open. Never edit a step that was released.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "runs, patients, statuses, answers and evidence hashes",
        (
            """CREATE TABLE runs (
                run_id INTEGER PRIMARY KEY,
                trial_id TEXT NOT NULL,
                trial_title TEXT,
                trial_version TEXT,
                as_of TEXT NOT NULL,
                data_cut TEXT,
                data_cut_kind TEXT,
                started TEXT NOT NULL,
                recorded_at TEXT NOT NULL,
                criteria_file TEXT,
                criteria_sha256 TEXT,
                criterion_ids TEXT NOT NULL,
                tool_version TEXT NOT NULL,
                source TEXT,
                out_dir TEXT,
                pass_id TEXT,
                previous_run_id INTEGER REFERENCES runs (run_id),
                patients INTEGER NOT NULL,
                eligible INTEGER NOT NULL,
                review INTEGER NOT NULL,
                ineligible INTEGER NOT NULL
            )""",
            "CREATE INDEX runs_by_trial ON runs (trial_id, run_id)",
            # FHIR ids once per database; the per-run tables hold the small integer key.
            """CREATE TABLE patients (
                patient_key INTEGER PRIMARY KEY,
                patient_id TEXT NOT NULL UNIQUE
            )""",
            """CREATE TABLE run_patients (
                run_id INTEGER NOT NULL REFERENCES runs (run_id),
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                status TEXT NOT NULL,
                PRIMARY KEY (run_id, patient_key)
            ) WITHOUT ROWID""",
            # Reasons repeat across patients and runs (148 distinct in 15,872 demo answers):
            # stored once, which more than halves the answers table.
            """CREATE TABLE reasons (
                reason_id INTEGER PRIMARY KEY,
                text TEXT NOT NULL UNIQUE
            )""",
            """CREATE TABLE run_answers (
                run_id INTEGER NOT NULL,
                patient_key INTEGER NOT NULL,
                criterion_id TEXT NOT NULL,
                answer TEXT NOT NULL,
                reason_id INTEGER REFERENCES reasons (reason_id),
                evidence_sha256 BLOB,
                PRIMARY KEY (run_id, patient_key, criterion_id),
                FOREIGN KEY (run_id, patient_key) REFERENCES run_patients (run_id, patient_key)
            ) WITHOUT ROWID""",
            # Content-addressed: a week whose records did not change adds nothing here.
            """CREATE TABLE evidence_sets (
                evidence_sha256 BLOB PRIMARY KEY,
                rows TEXT NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    (
        2,
        "chart-review decisions and their audit log (the worklist, issue 12 item 3)",
        (
            # One current decision per trial and patient; `revision` lets a save name the
            # revision it read, so a concurrent edit is a conflict, not a lost update.
            """CREATE TABLE decisions (
                trial_id TEXT NOT NULL,
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                decision TEXT,
                reason TEXT,
                contact_status TEXT,
                note TEXT,
                decided_by TEXT NOT NULL,
                decided_at TEXT NOT NULL,
                run_id INTEGER REFERENCES runs (run_id),
                revision INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (trial_id, patient_key)
            ) WITHOUT ROWID""",
            """CREATE TABLE decision_log (
                entry_id INTEGER PRIMARY KEY,
                trial_id TEXT NOT NULL,
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                field TEXT NOT NULL,
                previous_value TEXT,
                value TEXT,
                changed_by TEXT NOT NULL,
                changed_at TEXT NOT NULL,
                run_id INTEGER REFERENCES runs (run_id)
            )""",
            "CREATE INDEX decision_log_by_patient ON decision_log (trial_id, patient_key)",
        ),
    ),
    (
        3,
        "the decision version each audit row belongs to",
        # One save writes one row per changed field: the version groups them (and says which
        # save a conflict lost to).
        ("ALTER TABLE decision_log ADD COLUMN revision INTEGER",),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
_AGE = re.compile(r"age \d+")
_BUSY_TIMEOUT_S = 30.0  # another screen writing the same history: wait, do not fail
_STATUSES = ("eligible", "review", "ineligible")


def default_history_path(out_dir: str | Path) -> Path:
    """Where ``screen`` keeps the history by default: ``HISTORY_NAME`` in the folder that
    holds ``out_dir`` (``results/2026-11-24`` -> ``results/fhir-cohort-history.sqlite``), so
    a new output folder each week still finds the previous weeks' runs.

    >>> default_history_path("results/2026-11-24").as_posix()
    'results/fhir-cohort-history.sqlite'
    """
    out = Path(out_dir)
    if out.name in ("", ".."):  # "." or "..": name the folder, so its parent is the right one
        out = out.resolve()
    return out.parent / HISTORY_NAME


@dataclass(frozen=True)
class RunInfo:
    """One row of ``runs``: what a screening ran on, and its counts."""

    run_id: int
    trial_id: str
    trial_title: str | None
    trial_version: str | None
    as_of: str
    data_cut: str | None
    data_cut_kind: str | None
    started: str
    recorded_at: str
    criteria_file: str | None
    criteria_sha256: str | None
    criterion_ids: tuple[str, ...]
    tool_version: str
    source: str | None
    out_dir: str | None
    pass_id: str | None
    previous_run_id: int | None
    patients: int
    eligible: int
    review: int
    ineligible: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunInfo:
        values = dict(row)
        values["criterion_ids"] = tuple(json.loads(values["criterion_ids"]))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def _texts(frame: Any, column: str) -> list[str]:
    """A frame's column as text, missing values empty (vectorised: a history records every
    patient and criterion of a hospital)."""
    if column not in frame:
        return [""] * len(frame)
    col = frame[column]
    return col.astype(object).where(col.notna(), "").astype(str).tolist()


def _as_of_free(value: str, open_end: str) -> str:
    """A value without what the engine computed from the as-of date: an age ("age 77": the
    birth date is the fact) or an exposure open to S ("2026-05-08..<as-of>")."""
    if _AGE.fullmatch(value):
        return "age"
    if open_end and value.endswith(open_end):
        return value[: -len(open_end)] + "..S"
    return value


def evidence_sets(
    evidence: Any, as_of: str | None = None
) -> dict[tuple[str, str], tuple[bytes, str]]:
    """(patient id, criterion id) -> (SHA-256 of its evidence records, the rows as JSON).

    The hash reads ``EVIDENCE_HASHED`` of each row in the table's order (evidence.csv's,
    sorted by the pipeline), values without what ``as_of`` alone changes
    (:func:`_as_of_free`); the JSON keeps the rows as shown, note too. No key: no evidence.

    >>> import pandas as pd
    >>> ev = pd.DataFrame({"patient_id": ["p"], "criterion_id": ["age"],
    ...                    "resource_type": ["Patient"], "value": ["age 40"]})
    >>> evidence_sets(ev)["p", "age"][0] == evidence_sets(ev.assign(value="age 41"))["p", "age"][0]
    True
    """
    if evidence is None or len(evidence) == 0:
        return {}
    columns = [_texts(evidence, c) for c in ("patient_id", "criterion_id", *EVIDENCE_STORED)]
    grouped: dict[tuple[str, str], list[list[str]]] = {}
    for pid, cid, *fields in zip(*columns, strict=True):
        grouped.setdefault((pid, cid), []).append(fields)
    n = len(EVIDENCE_HASHED)
    value = EVIDENCE_HASHED.index("value")
    open_end = f"..{as_of}" if as_of else ""
    out: dict[tuple[str, str], tuple[bytes, str]] = {}
    for key, rows in grouped.items():
        facts = [
            [_as_of_free(v, open_end) if i == value else v for i, v in enumerate(r[:n])]
            for r in rows
        ]
        out[key] = (hashlib.sha256(orjson.dumps(facts)).digest(), orjson.dumps(rows).decode())
    return out


def _data_cut(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The data cut and what it is: a server run's (export transactionTime, or when the
    search fetch started); for a folder, the transactionTime of a Bulk manifest.json in it."""
    if run.get("data_cut"):
        fetch = (run.get("source") or {}).get("fetch") or {}
        kind = "export transactionTime" if fetch.get("strategy") == "bulk" else "fetch started"
        return str(run["data_cut"]), kind
    path = (run.get("source") or {}).get("path")
    if path:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
            when = manifest.get("transactionTime")
            if isinstance(when, str) and when:
                return when, "export transactionTime (manifest.json)"
    return None, None


@dataclass(frozen=True)
class RecordedAnswer:
    """One patient's answer to one criterion in a run, as recorded."""

    criterion_id: str
    answer: str
    reason: str
    evidence: tuple[dict[str, str], ...]  # EVIDENCE_STORED fields per record, in order


class History(DecisionStore):
    """An open history database. Use :func:`open_history`; close it (or use ``with``).

    The chart-review decisions' methods (``decision``, ``decisions``, ``save_decision``,
    ``decision_log``, ``worklist``) are :class:`~fhir_cohort.history.decisions.DecisionStore`'s."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._depth = 0

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, so two screens
        writing one history wait for each other instead of failing half-way). Nested use
        joins the outer transaction. Rolled back on any exception."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    # ----------------------------------------------------------------------------------------
    # Schema

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, target: int | None = None) -> int:
        """Apply the missing steps up to ``target`` (default: all), each in one transaction
        with its ``schema_version`` row. Returns the version reached."""
        with self.transaction():
            self.conn.execute(_VERSION_TABLE)
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.path}: written by a newer fhir-cohort (history schema {current}; "
                f"this version knows up to {SCHEMA_VERSION}): upgrade fhir-cohort"
            )
        goal = SCHEMA_VERSION if target is None else target
        for version, description, statements in MIGRATIONS:
            if current < version <= goal:
                with self.transaction() as conn:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)",
                        (version, description, _now()),
                    )
                current = version
        return current

    # ----------------------------------------------------------------------------------------
    # Writing

    def record_run(
        self,
        run: Mapping[str, Any],
        *,
        status: Any,
        answers: Any,
        evidence: Any,
        out_dir: str | Path | None = None,
        pass_id: str | None = None,
    ) -> RunInfo:
        """Record one trial's screening: ``run`` is its run.json record, ``status`` the
        evaluation's ``patient_id, status`` table, ``answers`` its ``patient_id, criterion_id,
        answer, reason`` table, ``evidence`` the evidence table. In one transaction (joins
        the caller's). The previous run of the same trial is the one recorded last before."""
        trial = run.get("trial") or {}
        criteria = run.get("criteria") or {}
        counts = (run.get("counts") or {}).get("status") or {}
        source = run.get("source") or {}
        data_cut, data_cut_kind = _data_cut(run)
        pids, statuses = _texts(status, "patient_id"), _texts(status, "status")
        sets = evidence_sets(evidence, str(run.get("as_of")))
        with self.transaction() as conn:
            trial_id = str(trial.get("id"))
            previous = conn.execute(
                "SELECT max(run_id) FROM runs WHERE trial_id = ?", (trial_id,)
            ).fetchone()[0]
            cursor = conn.execute(
                "INSERT INTO runs (trial_id, trial_title, trial_version, as_of, data_cut, "
                "data_cut_kind, started, recorded_at, criteria_file, criteria_sha256, "
                "criterion_ids, tool_version, source, out_dir, pass_id, previous_run_id, "
                "patients, eligible, review, ineligible) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    trial_id,
                    trial.get("title"),
                    trial.get("version"),
                    str(run.get("as_of")),
                    data_cut,
                    data_cut_kind,
                    str(run.get("started") or _now()),
                    _now(),
                    criteria.get("file"),
                    criteria.get("sha256"),
                    json.dumps(list(criteria.get("criterion_ids") or [])),
                    str((run.get("tool") or {}).get("version")),
                    source.get("url") or source.get("path"),
                    str(out_dir) if out_dir is not None else None,
                    pass_id,
                    previous,
                    len(pids),
                    *(int(counts.get(s, statuses.count(s))) for s in _STATUSES),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            keys = self._patient_keys(pids)
            reason_ids = self._reason_ids(answers)
            conn.executemany(
                "INSERT INTO run_patients VALUES (?, ?, ?)",
                ((run_id, keys[p], s) for p, s in zip(pids, statuses, strict=True)),
            )
            conn.executemany(
                "INSERT INTO run_answers VALUES (?, ?, ?, ?, ?, ?)",
                self._answer_rows(run_id, keys, reason_ids, answers, sets),
            )
            # Same records, new note text: keep the latest wording (it is only shown).
            conn.executemany(
                "INSERT INTO evidence_sets VALUES (?, ?) ON CONFLICT (evidence_sha256) "
                "DO UPDATE SET rows = excluded.rows WHERE rows != excluded.rows",
                dict(sets.values()).items(),
            )
        return self.run(run_id)

    def _patient_keys(self, pids: Sequence[str]) -> dict[str, int]:
        self.conn.executemany(
            "INSERT OR IGNORE INTO patients (patient_id) VALUES (?)", ((p,) for p in pids)
        )
        wanted = set(pids)
        return {
            pid: key
            for pid, key in self.conn.execute("SELECT patient_id, patient_key FROM patients")
            if pid in wanted
        }

    def _reason_ids(self, answers: Any) -> dict[str, int]:
        if "reason" not in answers:
            return {}
        texts = set(_texts(answers, "reason")) - {""}
        self.conn.executemany(
            "INSERT OR IGNORE INTO reasons (text) VALUES (?)", ((t,) for t in sorted(texts))
        )
        return {
            text: rid
            for rid, text in self.conn.execute("SELECT reason_id, text FROM reasons")
            if text in texts
        }

    @staticmethod
    def _answer_rows(
        run_id: int,
        keys: Mapping[str, int],
        reason_ids: Mapping[str, int],
        answers: Any,
        sets: Mapping[tuple[str, str], tuple[bytes, str]],
    ) -> Iterable[tuple[Any, ...]]:
        columns = [_texts(answers, c) for c in ("patient_id", "criterion_id", "answer", "reason")]
        for p, c, answer, reason in zip(*columns, strict=True):
            found = sets.get((p, c))
            yield (run_id, keys[p], c, answer, reason_ids.get(reason), found and found[0])

    # ----------------------------------------------------------------------------------------
    # Reading

    def runs(self, trial_id: str | None = None) -> list[RunInfo]:
        """Every recorded run (of ``trial_id``), oldest first."""
        sql = "SELECT * FROM runs" + (" WHERE trial_id = ?" if trial_id else "")
        rows = self.conn.execute(sql + " ORDER BY run_id", (trial_id,) if trial_id else ())
        return [RunInfo.from_row(r) for r in rows]

    def run(self, run_id: int) -> RunInfo:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"{self.path}: no run {run_id} (fhir-cohort history lists them)")
        return RunInfo.from_row(row)

    def statuses(self, run_id: int) -> dict[str, str]:
        """Each patient's status in run ``run_id`` (patient id -> eligible | review |
        ineligible): what the recruitment-over-time plots read (fhir_cohort/plots.py)."""
        self.run(run_id)  # an unknown run is an error, not an empty run
        rows = self.conn.execute(
            "SELECT p.patient_id, rp.status FROM run_patients rp "
            "JOIN patients p ON p.patient_key = rp.patient_key WHERE rp.run_id = ?",
            (run_id,),
        )
        return dict(rows.fetchall())

    def evidence_rows(self, digest: bytes | None) -> list[dict[str, str]]:
        """The stored evidence records of one hash (field -> text), in their order."""
        if digest is None:
            return []
        row = self.conn.execute(
            "SELECT rows FROM evidence_sets WHERE evidence_sha256 = ?", (digest,)
        ).fetchone()
        if row is None:
            return []
        return [dict(zip(EVIDENCE_STORED, r, strict=False)) for r in json.loads(row[0])]

    def patient_answers(self, run_id: int, patient_id: str) -> list[RecordedAnswer]:
        """One patient's answers in run ``run_id``, in the run's criteria order, each with its
        reason and evidence records (the worklist's patient page). Empty: not in the run."""
        order = {c: i for i, c in enumerate(self.run(run_id).criterion_ids)}
        rows = self.conn.execute(
            "SELECT a.criterion_id, a.answer, r.text, a.evidence_sha256 FROM run_answers a "
            "JOIN patients p ON p.patient_key = a.patient_key "
            "LEFT JOIN reasons r ON r.reason_id = a.reason_id "
            "WHERE a.run_id = ? AND p.patient_id = ?",
            (run_id, patient_id),
        ).fetchall()
        answers = [
            RecordedAnswer(cid, answer, reason or "", tuple(self.evidence_rows(digest)))
            for cid, answer, reason, digest in rows
        ]
        return sorted(
            answers, key=lambda a: (order.get(a.criterion_id, len(order)), a.criterion_id)
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_history(path: str | Path, *, create: bool = True) -> History:
    """Open (``create``: or create, 0600, missing folders 0700) the history at ``path`` and
    bring its schema up to date. A file others can read is warned about, never chmod-ed.

    Raises :class:`HistoryError` for a file that is not a fhir-cohort history (another
    SQLite database, not SQLite, damaged) or was written by a newer version; without
    ``create``, for a missing file too."""
    path = Path(path)
    if path.is_dir():
        raise HistoryError(f"history {path}: is a folder, not a file")
    if not path.exists():
        if not create:
            raise HistoryError(f"no screening history at {path} (a screen creates it)")
        try:
            private_dir(path.parent)
            # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
            # database file's mode.
            with contextlib.suppress(FileExistsError):
                open_private(path, "xb").close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise HistoryError(f"history {path}: cannot create it ({reason})") from None
    else:
        warn_if_exposed(path, "history file")
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryError(f"history {path}: cannot open ({exc})") from None
    conn.row_factory = sqlite3.Row
    history = History(path, conn)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_version" not in tables:
            raise HistoryError(f"history {path}: an SQLite database, but not a fhir-cohort history")
        history.migrate()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise HistoryError(f"history {path}: not a usable SQLite database ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return history
