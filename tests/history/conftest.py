"""Tiny generated screenings for the history tests: tables shaped like the evaluation's
(status, answers, evidence) and the run.json record, without running the engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from fhir_cohort.history.db import History

CRITERIA = ("age", "sle", "pregnancy")
# An answer per criterion, by the status it leads to (inclusions met / exclusions clear pass).
ANSWERS = {
    "eligible": ("met", "met", "clear"),
    "review": ("met", "unknown", "clear"),
    "ineligible": ("met", "not_met", "clear"),
}


def run_record(
    as_of: str, trial_id: str = "T-1", criteria: tuple[str, ...] = CRITERIA, sha: str = "abc"
) -> dict[str, Any]:
    return {
        "tool": {"name": "fhir-cohort", "version": "0.1.0"},
        "started": f"{as_of}T08:00:00+00:00",
        "as_of": as_of,
        "source": {"kind": "disk", "path": "/nowhere/export"},
        "trial": {"id": trial_id, "title": "A trial", "version": "1"},
        "criteria": {"file": "t.yaml", "sha256": sha, "criterion_ids": list(criteria)},
        "counts": {"status": {}},
    }


def screening(
    patients: Mapping[str, str],
    evidence: Mapping[tuple[str, str], list[dict[str, str]]] | None = None,
    answers: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, pd.DataFrame]:
    """status, answers and evidence frames: ``patients`` maps id -> status; ``answers``
    overrides single answers; ``evidence`` gives rows per (patient, criterion)."""
    status = pd.DataFrame(
        [(pid, st, "") for pid, st in patients.items()], columns=["patient_id", "status", "reasons"]
    )
    rows = []
    for pid, st in patients.items():
        for cid, answer in zip(CRITERIA, ANSWERS[st], strict=True):
            rows.append((pid, cid, (answers or {}).get((pid, cid), answer), f"{cid} reason"))
    ev_rows = [
        {"patient_id": pid, "criterion_id": cid, **r}
        for (pid, cid), records in (evidence or {}).items()
        for r in records
    ]
    columns = ["patient_id", "criterion_id", "resource_type", "resource_id", "date", "note"]
    return {
        "status": status,
        "answers": pd.DataFrame(rows, columns=["patient_id", "criterion_id", "answer", "reason"]),
        "evidence": pd.DataFrame(ev_rows).reindex(columns=columns)
        if ev_rows
        else pd.DataFrame(columns=columns),
    }


def record(history: History, as_of: str, trial_id: str = "T-1", **tables: Any) -> int:
    frames = screening(**tables)
    info = history.record_run(
        run_record(as_of, trial_id),
        status=frames["status"],
        answers=frames["answers"],
        evidence=frames["evidence"],
    )
    return info.run_id
