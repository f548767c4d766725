"""Screening history: every run, each patient's status and answers, what changed since the
previous run of the same trial (docs/history.md).

``db.py`` holds the SQLite database (schema, ordered migrations, recording a run); ``diff.py``
compares two runs; ``decisions.py`` keeps the chart-review decisions and builds a run's
worklist. Imported lazily: the CLI's ``history`` command loads no pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

_EXPORTS = {
    "HISTORY_NAME": "fhir_cohort.history.db",
    "SCHEMA_VERSION": "fhir_cohort.history.db",
    "History": "fhir_cohort.history.db",
    "RunInfo": "fhir_cohort.history.db",
    "default_history_path": "fhir_cohort.history.db",
    "open_history": "fhir_cohort.history.db",
    "CHANGES_COLUMNS": "fhir_cohort.history.diff",
    "Diff": "fhir_cohort.history.diff",
    "diff_runs": "fhir_cohort.history.diff",
    "CONTACT_STATUSES": "fhir_cohort.history.decisions",
    "DECISIONS": "fhir_cohort.history.decisions",
    "WORKLIST_COLUMNS": "fhir_cohort.history.decisions",
    "Decision": "fhir_cohort.history.decisions",
    "DecisionLogEntry": "fhir_cohort.history.decisions",
    "Worklist": "fhir_cohort.history.decisions",
    "WorklistEntry": "fhir_cohort.history.decisions",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fhir_cohort.history.db import (
        HISTORY_NAME,
        SCHEMA_VERSION,
        History,
        RunInfo,
        default_history_path,
        open_history,
    )
    from fhir_cohort.history.decisions import (
        CONTACT_STATUSES,
        DECISIONS,
        WORKLIST_COLUMNS,
        Decision,
        DecisionLogEntry,
        Worklist,
        WorklistEntry,
    )
    from fhir_cohort.history.diff import CHANGES_COLUMNS, Diff, diff_runs

__all__ = [
    "CHANGES_COLUMNS",
    "CONTACT_STATUSES",
    "DECISIONS",
    "HISTORY_NAME",
    "SCHEMA_VERSION",
    "WORKLIST_COLUMNS",
    "Decision",
    "DecisionLogEntry",
    "Diff",
    "History",
    "RunInfo",
    "Worklist",
    "WorklistEntry",
    "default_history_path",
    "diff_runs",
    "open_history",
]
