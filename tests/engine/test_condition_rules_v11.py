"""Spec v1.1 for E1 (class named in the display) and E4 (dialysis Procedures by date window)."""

from __future__ import annotations

import datetime as dt

import pytest

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RENAL_DIALYSIS = "265764009"  # Synthea's dialysis Procedure code (VSAC Dialysis Services)
CPT = "http://www.ama-assn.org/go/cpt"
S = dt.date(2025, 6, 30)


# ----------------------------------------------------------------------------------- E1
@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("Lupus nephritis class IV", "excluded"),
        ("Lupus nephritis, ISN/RPS IV-G (A)", "excluded"),
        ("lupus nephritis class III+V", "excluded"),
        ("Lupus nephritis WHO class V", "excluded"),
        ("Lupus nephritis, class II/V", "excluded"),  # V is named
        ("Lupus nephritis class I", "review"),
        ("Lupus nephritis class II", "review"),
        ("Lupus nephritis class VI", "review"),
        ("Lupus nephritis", "review"),
    ],
)
def test_class_named_in_the_display_counts_like_a_class_code(run, b, display, expected):
    for code, system in ((b.LN, b.SNOMED), ("M32.14", ICD10)):
        row = b.cond(code, system=system, display=display)
        ans, reason = run.answer("lupus_nephritis", conditions=[row])
        assert ans == expected, (code, display)
        if expected == "excluded":
            assert "class III, IV or V" in reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lupus nephritis ISN/RPS class IV-G (A/C)", "excluded"),
        ("SLE nephritis, biopsy: class V", "excluded"),
        ("Lupus nephritis class II", "review"),
        (None, "review"),
    ],
)
def test_class_named_only_in_the_code_text_counts(run, b, text, expected):
    # v1.1: "a class named in the code's display or text"; the coding's display says nothing.
    row = b.cond(b.LN, display="Lupus nephritis", text=text)
    assert run.answer("lupus_nephritis", conditions=[row])[0] == expected


def test_code_text_reaches_the_table_from_condition_and_procedure() -> None:
    from fhir_cohort.engine.flatten import Flattener
    from fhir_cohort.engine.tables import CONDITION_COLUMNS

    code = {"coding": [{"system": "http://snomed.info/sct", "code": "1"}], "text": "class IV"}
    f = Flattener({("http://snomed.info/sct", "1")}, ())
    for rtype in ("Condition", "Procedure"):
        r = {"resourceType": rtype, "id": "x", "subject": {"reference": "Patient/p"}, "code": code}
        [(_, row)] = f.flatten(r, "f:1")
        assert dict(zip(CONDITION_COLUMNS, row, strict=True))["code_text"] == "class IV"


def test_named_class_needs_an_active_record(run, b):
    row = b.cond(
        b.LN, display="Lupus nephritis class IV", clinical="resolved", abatement="2020-01-01"
    )
    assert run.answer("lupus_nephritis", conditions=[row])[0] == "clear"


def test_named_class_on_a_provisional_record_is_review(run, b):
    row = b.cond(b.LN, display="Lupus nephritis class IV", verification="provisional")
    assert run.answer("lupus_nephritis", conditions=[row])[0] == "review"


# ----------------------------------------------------------------------------------- E4
def _proc(b, code=RENAL_DIALYSIS, *, system=None, status="completed", performed=None):
    return b.cond(
        code,
        system=system or b.SNOMED,
        resource_type="Procedure",
        clinical=f"procedure:{status}" if status else None,
        verification=None,
        onset=performed,
    )


@pytest.mark.parametrize(
    ("days_before_s", "expected"),
    [
        (0, "review"),
        (1, "review"),
        (90, "review"),
        (91, "clear"),
        (400, "clear"),
        (-1, "clear"),
    ],  # after S: ignored
)
def test_dialysis_procedure_counts_within_90_days(run, b, days_before_s, expected):
    when = (S - dt.timedelta(days=days_before_s)).isoformat()
    ans, reason = run.answer("chronic_illness", conditions=[_proc(b, performed=when)])
    assert ans == expected
    if expected == "review":
        assert "dialysis" in reason


# "preparation" (planned) counts too: for an exclusion, imminent dialysis is worth a review.
@pytest.mark.parametrize("status", ["completed", "in-progress", "stopped", "preparation", None])
def test_dialysis_procedure_counts_regardless_of_active_status(run, b, status):
    row = _proc(b, status=status, performed="2025-06-01")
    assert run.answer("chronic_illness", conditions=[row])[0] == "review"


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_dialysis_procedure_never_performed_does_not_count(run, b, status):
    row = _proc(b, status=status, performed="2025-06-01")
    assert run.answer("chronic_illness", conditions=[row])[0] == "clear"


def test_dialysis_course_ending_within_90_days_counts() -> None:
    # A performedPeriod that started long ago and ended 10 days before S: in the window.
    from fhir_cohort.engine.flatten import Flattener
    from fhir_cohort.engine.tables import CONDITION_COLUMNS

    f = Flattener({("http://snomed.info/sct", RENAL_DIALYSIS)}, ())
    r = {
        "resourceType": "Procedure", "id": "d", "status": "completed",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": RENAL_DIALYSIS}]},
        "performedPeriod": {"start": "2024-01-01", "end": "2025-06-20"},
    }  # fmt: skip
    [(_, row)] = f.flatten(r, "f:1")
    got = dict(zip(CONDITION_COLUMNS, row, strict=True))
    assert (got["onset_date"], got["onset_high"]) == (dt.date(2024, 1, 1), dt.date(2025, 6, 20))


def test_dialysis_course_spanning_the_window_is_review(run, b):
    row = b.cond(
        RENAL_DIALYSIS, resource_type="Procedure", clinical="procedure:completed",
        verification=None, onset="2024-01-01",
    )  # fmt: skip
    # The table's range for a period 2024-01-01..2025-06-20 (what flatten writes, above).
    row = (*row[:9], dt.date(2025, 6, 20), *row[10:])
    assert run.answer("chronic_illness", conditions=[row])[0] == "review"


def test_undated_dialysis_procedure_is_review(run, b):
    assert run.answer("chronic_illness", conditions=[_proc(b)])[0] == "review"


def test_dialysis_procedure_by_cpt(run, b):
    row = _proc(b, "90935", system=CPT, performed="2025-05-01")
    assert run.answer("chronic_illness", conditions=[row])[0] == "review"


def test_dialysis_conditions_are_serious_comorbidity(run, b):
    for code, system in (("Z99.2", ICD10), ("N18.6", ICD10), ("46177005", b.SNOMED)):
        row = b.cond(code, system=system)
        assert run.answer("chronic_illness", conditions=[row])[0] == "review", code
        old = b.cond(code, system=system, clinical="resolved", abatement="2020-01-01")
        assert run.answer("chronic_illness", conditions=[old])[0] == "clear", code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("C44.91", "clear"),
        ("C44.01", "clear"),
        ("C4A.9", "review"),
        ("C7A.00", "review"),
        ("C7B.00", "review"),
        ("C43.9", "review"),
        ("C50.911", "review"),
    ],
)
def test_skin_bcc_scc_is_not_a_major_chronic_illness(run, b, code, expected):
    assert run.answer("chronic_illness", conditions=[b.cond(code, system=ICD10)])[0] == expected
