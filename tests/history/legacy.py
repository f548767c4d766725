"""A run recorded as fhir-cohort wrote it up to history schema 3: one ``run_answers`` row per
patient and criterion (what migration 4 turns into answer sets). Only the tests write this
layout now: they migrate it and compare with runs recorded by today's code."""

from __future__ import annotations

import json
from typing import Any

from fhir_cohort.history.db import History, evidence_sets
from tests.history.conftest import run_record, screening


def record_v3(history: History, as_of: str, trial_id: str = "T-1", **tables: Any) -> int:
    """``conftest.record`` into a database at schema 1 to 3, through the tables of then."""
    run = run_record(as_of, trial_id)
    frames = screening(**tables)
    status, answers = frames["status"], frames["answers"]
    sets = evidence_sets(frames["evidence"], as_of)
    statuses = dict(zip(status["patient_id"], status["status"], strict=True))
    with history.transaction() as conn:
        previous = conn.execute(
            "SELECT max(run_id) FROM runs WHERE trial_id = ?", (trial_id,)
        ).fetchone()[0]
        counts = [sum(s == k for s in statuses.values()) for k in _STATUSES]
        run_id = conn.execute(
            "INSERT INTO runs (trial_id, trial_title, trial_version, as_of, started, "
            "recorded_at, criteria_file, criteria_sha256, criterion_ids, tool_version, source, "
            "previous_run_id, patients, eligible, review, ineligible) "
            "VALUES (?, 'A trial', '1', ?, ?, ?, 't.yaml', 'abc', ?, '0.1.0', ?, ?, ?, ?, ?, ?)",
            (
                trial_id,
                as_of,
                run["started"],
                run["started"],
                json.dumps(run["criteria"]["criterion_ids"]),
                run["source"]["path"],
                previous,
                len(statuses),
                *counts,
            ),
        ).lastrowid
        conn.executemany(
            "INSERT OR IGNORE INTO patients (patient_id) VALUES (?)", ((p,) for p in statuses)
        )
        keys = dict(conn.execute("SELECT patient_id, patient_key FROM patients").fetchall())
        conn.executemany(
            "INSERT OR IGNORE INTO reasons (text) VALUES (?)",
            ((t,) for t in sorted(set(answers["reason"]) - {""})),
        )
        reasons = dict(conn.execute("SELECT text, reason_id FROM reasons").fetchall())
        conn.executemany(
            "INSERT INTO run_patients VALUES (?, ?, ?)",
            ((run_id, keys[p], s) for p, s in statuses.items()),
        )
        conn.executemany(
            "INSERT INTO run_answers VALUES (?, ?, ?, ?, ?, ?)",
            (
                (run_id, keys[p], c, a, reasons.get(r), sets[p, c][0] if (p, c) in sets else None)
                for p, c, a, r in answers[
                    ["patient_id", "criterion_id", "answer", "reason"]
                ].itertuples(index=False, name=None)
            ),
        )
        conn.executemany(
            "INSERT INTO evidence_sets VALUES (?, ?) ON CONFLICT (evidence_sha256) "
            "DO UPDATE SET rows = excluded.rows WHERE rows != excluded.rows",
            dict(sets.values()).items(),
        )
    return int(run_id or 0)


_STATUSES = ("eligible", "review", "ineligible")
