"""What changed between two runs: every kind of change on tiny generated screenings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fhir_cohort.history.db import History, open_history
from fhir_cohort.history.diff import CHANGE_KINDS, CHANGES_COLUMNS, diff_runs
from fhir_cohort.report.outputs import restore_frame, write_csv
from tests.history.conftest import record

LAB = {"resource_type": "Observation", "resource_id": "o1", "date": "2026-11-01"}
NEW_LAB = {"resource_type": "Observation", "resource_id": "o2", "date": "2026-11-20"}

# Week 1 -> week 2, one patient per kind of change (and some that must not show).
WEEK1 = {
    "patients": {
        "was-ineligible": "ineligible",  # -> eligible: new candidate
        "eligible-to-review": "eligible",  # status change
        "review-to-ineligible": "review",  # status change (a candidate dropped)
        "same-review-new-answer": "review",  # same status, another answer
        "same-eligible-new-lab": "eligible",  # same answers, new evidence
        "unchanged": "eligible",
        "still-ineligible-new-lab": "ineligible",  # not a candidate: not listed
        "deleted": "review",  # no longer in the source
        "deleted-ineligible": "ineligible",
    },
    "evidence": {
        ("same-eligible-new-lab", "sle"): [LAB],
        ("still-ineligible-new-lab", "sle"): [LAB],
        ("unchanged", "sle"): [{**LAB, "note": "week 1 wording"}],
    },
    "answers": {("same-review-new-answer", "pregnancy"): "review"},
}
WEEK2 = {
    "patients": {
        "was-ineligible": "eligible",
        "eligible-to-review": "review",
        "review-to-ineligible": "ineligible",
        "same-review-new-answer": "review",
        "same-eligible-new-lab": "eligible",
        "unchanged": "eligible",
        "still-ineligible-new-lab": "ineligible",
        "brand-new": "review",  # new in the source and a candidate
        "brand-new-ineligible": "ineligible",  # new, only counted
    },
    "evidence": {
        ("same-eligible-new-lab", "sle"): [LAB, NEW_LAB],
        ("still-ineligible-new-lab", "sle"): [LAB, NEW_LAB],
        ("unchanged", "sle"): [{**LAB, "note": "week 2 wording"}],  # notes are not facts
        ("eligible-to-review", "sle"): [NEW_LAB],
    },
    "answers": {
        ("same-review-new-answer", "sle"): "met",
        ("same-review-new-answer", "pregnancy"): "clear",
    },
}


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> tuple[History, int, int]:
    history = open_history(tmp_path_factory.mktemp("diff") / "h.sqlite")
    first = record(history, "2026-11-10", **WEEK1)
    second = record(history, "2026-11-24", **WEEK2)
    yield history, first, second
    history.close()


def test_every_kind_of_change_is_found_and_nothing_else(weeks: tuple[History, int, int]) -> None:
    history, first, second = weeks
    diff = diff_runs(history, first, second)
    by_patient = {}
    for c in diff.changes:
        by_patient.setdefault(c.patient_id, set()).add(c.change)
    assert by_patient == {
        "was-ineligible": {"new_candidate"},
        "brand-new": {"new_candidate"},
        "eligible-to-review": {"status_changed"},
        "review-to-ineligible": {"status_changed"},
        "same-review-new-answer": {"answer_changed"},
        "same-eligible-new-lab": {"evidence_changed"},
        "deleted": {"no_longer_in_source"},
        "deleted-ineligible": {"no_longer_in_source"},
    }
    assert diff.counts == {
        "new_candidate": 2,
        "status_changed": 2,
        "answer_changed": 1,
        "evidence_changed": 1,
        "no_longer_in_source": 2,
    }
    assert diff.new_patients == 2 and not diff.criteria_changed
    assert [c.change for c in diff.changes] == sorted(
        (c.change for c in diff.changes), key=CHANGE_KINDS.index
    )


def test_a_change_names_the_criterion_and_its_new_evidence(
    weeks: tuple[History, int, int],
) -> None:
    history, first, second = weeks
    rows = {(c.patient_id, c.criterion_id): c for c in diff_runs(history, first, second).changes}
    moved = rows["eligible-to-review", "sle"]
    assert (moved.previous_status, moved.status) == ("eligible", "review")
    assert (moved.previous_answer, moved.answer, moved.reason) == ("met", "unknown", "sle reason")
    assert moved.evidence == "Observation/o2 2026-11-20"
    # one row per changed criterion, in the criteria's order
    answered = [c.criterion_id for c in rows.values() if c.patient_id == "same-review-new-answer"]
    assert answered == ["sle", "pregnancy"]
    lab = rows["same-eligible-new-lab", "sle"]
    assert lab.previous_answer == lab.answer == "met"
    assert lab.evidence == "Observation/o1 2026-11-01 | Observation/o2 2026-11-20"
    assert rows["brand-new", ""].previous_status == ""
    assert rows["deleted", ""].status == ""


def test_the_first_run_and_the_reverse_comparison(weeks: tuple[History, int, int]) -> None:
    history, first, second = weeks
    assert diff_runs(history, None, first).changes == []
    assert "the first of T-1" in diff_runs(history, None, first).summary()
    back = diff_runs(history, second, first)  # comparing backwards is a comparison too
    assert {c.patient_id for c in back.changes if c.change == "no_longer_in_source"} == {
        "brand-new",
        "brand-new-ineligible",
    }
    assert diff_runs(history, first, first).changes == []


def test_changes_csv_cells_are_quoted_against_formula_injection(tmp_path: Path) -> None:
    evil = '=HYPERLINK("http://x")'
    with open_history(tmp_path / "h.sqlite") as history:
        first = record(history, "2026-11-10", patients={evil: "ineligible"})
        second = record(
            history,
            "2026-11-24",
            patients={evil: "eligible"},
            evidence={(evil, "sle"): [{"resource_type": "Condition", "resource_id": "@c"}]},
        )
        diff = diff_runs(history, first, second)
    path = write_csv(diff.frame(), tmp_path / "changes.csv")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(CHANGES_COLUMNS)
    assert {r[1] for r in rows[1:]} == {"'" + evil}
    import pandas as pd

    back = restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False))
    assert set(back["patient_id"]) == {evil}
