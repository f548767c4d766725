"""Decisions to and from CSV, for sites that keep chart-review decisions elsewhere.

``export_decisions`` writes a trial's current decisions (one row per patient, 0600, cells a
spreadsheet would run as formulas quoted: the CSV writer of every output). ``import_decisions``
reads such a file back, edited or produced elsewhere: every row is checked first (unknown
columns or values, patients no run of the trial screened, duplicate rows, a version older
than the history's), every problem reported as ``FILE:LINE``; only a file without problems is
saved, in one transaction, so nothing is ever half-imported. A row equal to the saved decision
is skipped (no new version); a row whose ``version`` is not the saved one is stale: someone
saved the patient after the export, and the import would overwrite that unseen.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_cohort.errors import DecisionConflict, DecisionError
from fhir_cohort.history.decisions import (
    DECISION_FIELDS,
    Decision,
    _text,
    _when,
    check_decision,
)

if TYPE_CHECKING:
    from fhir_cohort.history.db import History

__all__ = ["DECISIONS_CSV_COLUMNS", "ImportSummary", "export_decisions", "import_decisions"]

DECISIONS_CSV_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "patient_id",
    "decision",
    "reason",
    "contact_status",
    "note",
    "decided_by",
    "decided_at",
    "version",
)
_REQUIRED = ("patient_id", "decision", "contact_status")
_MAX_PROBLEMS = 20  # a file with more is reported by its first ones (and the count)


@dataclass(frozen=True)
class ImportSummary:
    rows: int
    saved: int
    unchanged: int
    dry_run: bool


def export_decisions(history: History, trial_id: str, path: str | Path) -> int:
    """Write ``trial_id``'s current decisions to ``path`` (``DECISIONS_CSV_COLUMNS``); returns
    the number of rows. Raises DecisionError when the history has no run of the trial."""
    import pandas as pd

    from fhir_cohort.report.outputs import write_csv

    known = history.conn.execute(
        "SELECT 1 FROM runs WHERE trial_id = ? LIMIT 1", (trial_id,)
    ).fetchone()
    if known is None:
        raise DecisionError(f"trial {trial_id!r}: no run of it in this history")
    rows = [
        {k: ("" if v is None else v) for k, v in d.as_dict().items() if k != "run_id"}
        for d in history.decisions(trial_id)
    ]
    frame = pd.DataFrame(rows, columns=list(DECISIONS_CSV_COLUMNS))
    write_csv(frame.astype({"version": "int64"}), Path(path))
    return len(rows)


def _cell(value: str | None) -> str:
    """A cell as our writer wrote it, without the quote that kept it from being a formula."""
    from fhir_cohort.report.outputs import restore_cell

    return str(restore_cell(value or ""))


def import_decisions(
    history: History,
    trial_id: str,
    path: str | Path,
    *,
    who: str,
    dry_run: bool = False,
) -> ImportSummary:
    """Check every row of ``path``, then save the changed ones in one transaction (``who``
    is the person importing; a filled ``decided_at`` that differs from the saved one is the
    decision's time, else the import's). ``dry_run``: check only. Raises DecisionError
    listing the problems as ``FILE:LINE: ...`` (no patient data), and nothing is saved."""
    path = Path(path)
    name = path.name
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DecisionError(f"{name}: cannot read it ({reason})") from None
    problems: list[str] = []
    unknown = [c for c in header if c not in DECISIONS_CSV_COLUMNS]
    missing = [c for c in _REQUIRED if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if unknown:
            detail.append(f"unknown {', '.join(repr(c) for c in unknown)}")
        if len(set(header)) != len(header):
            detail.append("a column twice")
        raise DecisionError(
            f"{name}:1: columns: {'; '.join(detail)} (expected {', '.join(DECISIONS_CSV_COLUMNS)})"
        )
    screened = {
        pid
        for (pid,) in history.conn.execute(
            "SELECT DISTINCT p.patient_id FROM run_patients rp JOIN runs r USING (run_id) "
            "JOIN patients p ON p.patient_key = rp.patient_key WHERE r.trial_id = ?",
            (trial_id,),
        )
    }
    if not screened:
        raise DecisionError(f"trial {trial_id!r}: no run of it in this history")
    current = {d.patient_id: d for d in history.decisions(trial_id)}
    seen: dict[str, int] = {}
    plans: list[tuple[str, dict[str, str | None], int, str | None]] = []
    unchanged = 0
    for line, raw in rows:
        where = f"{name}:{line}"
        if None in raw:  # more cells than columns
            problems.append(f"{where}: more cells than the header has columns")
            continue
        row = {k: _cell(v) for k, v in raw.items()}
        try:
            plan = _check_row(row, trial_id, screened, current, seen, line)
        except DecisionError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if plan is None:
            unchanged += 1
        else:
            plans.append(plan)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise DecisionError(
            f"{name}: {len(problems)} problems, nothing imported:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )
    if not dry_run:
        try:
            with history.transaction():
                for pid, fields, version, when in plans:
                    history.save_decision(
                        trial_id,
                        pid,
                        decision=fields["decision"],
                        reason=fields["reason"],
                        contact_status=fields["contact_status"] or "not_contacted",
                        note=fields["note"],
                        who=who,
                        expected_version=version,
                        when=when,
                    )
        except DecisionConflict as exc:  # saved by someone while the import ran
            raise DecisionError(f"{name}: nothing imported: {exc}") from None
    return ImportSummary(rows=len(rows), saved=len(plans), unchanged=unchanged, dry_run=dry_run)


def _check_row(
    row: dict[str, str],
    trial_id: str,
    screened: set[str],
    current: dict[str, Decision],
    seen: dict[str, int],
    line: int,
) -> tuple[str, dict[str, str | None], int, str | None] | None:
    """One row checked: what to save (patient, fields, expected version, when), or None when
    it equals the saved decision. Raises DecisionError naming the problem."""
    if row.get("trial_id") and row["trial_id"] != trial_id:
        raise DecisionError(f"trial_id {row['trial_id']!r} is not --trial {trial_id!r}")
    pid = row.get("patient_id", "").strip()
    if not pid:
        raise DecisionError("patient_id is empty")
    if pid not in screened:
        raise DecisionError("patient not screened in any run of this trial in this history")
    if pid in seen:
        raise DecisionError(f"the same patient as line {seen[pid]}")
    seen[pid] = line
    fields = {f: _text(f.replace("_", " "), row.get(f)) for f in DECISION_FIELDS}
    contact = fields["contact_status"] or "not_contacted"
    check_decision(fields["decision"], fields["reason"], contact)
    saved = current.get(pid)
    actual = saved.version if saved else 0
    text = (row.get("version") or "").strip()
    if text:
        try:
            version = int(text)
        except ValueError:
            raise DecisionError(f"version {text!r}: not a whole number") from None
    else:
        version = 0
    ours = (fields["decision"], fields["reason"], contact, fields["note"])
    if saved is not None and ours == (
        saved.decision,
        saved.reason,
        saved.contact_status,
        saved.note,
    ):
        return None  # nothing to save (even from an older export: it says the same)
    if version != actual:
        raise DecisionError(
            f"stale: the history holds version {actual} of this decision, the row version "
            f"{version or 'none'} (saved since the export: export again and redo the change)"
        )
    when = (row.get("decided_at") or "").strip() or None
    if when is not None:
        when = _when(when)
        if saved is not None and when == saved.decided_at:
            when = None  # the exported time, unchanged: the change is made now
    return pid, fields, version, when
