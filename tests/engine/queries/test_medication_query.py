"""The medication query: washouts (any exposure in a window) and eras, three-valued at window
edges, partial dates, unknown durations, per-dose coverage, grouping, counts; every agent of the
shipped medication value sets by code, name and product."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fhir_cohort.criteria.io import parse_criteria
from fhir_cohort.criteria.language import AllOf, MedicationQuery
from fhir_cohort.criteria.models import Trial
from fhir_cohort.engine.evaluate import evaluate
from fhir_cohort.engine.tables import Tables
from tests.criteria_variants import shorthand

WORD = {"met": True, "not_met": False, "unknown": None}
NDC = "http://hl7.org/fhir/sid/ndc"
SCT = "http://snomed.info/sct"


def query_trial(define: dict[str, Any] | None = None, **query: Any) -> Trial:
    rule = {"type": "medication", "value_sets": ["immunosuppressants"], **query}
    return parse_criteria(
        {
            "id": "t",
            "title": "t",
            "version": "1",
            "source": "test",
            "define": define or {},
            "criteria": [{"id": "q", "kind": "inclusion", "title": "q", "rule": rule}],
        }
    )


def value(run: Any, meds: list[tuple], **query: Any) -> bool | None:
    define = query.pop("define", None)
    ans, _ = run.answer("q", medications=meds, trial=query_trial(define, **query))
    return WORD[ans]


WASHOUT_28 = {"within": {"days": 28}}  # S = 2025-06-30: W = [2025-06-02, 2025-06-30]


# --------------------------------------------------------------------------- washouts
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2025-05-01", "2025-06-02", True),  # ends on W's first day
        ("2025-05-01", "2025-06-01", False),  # ends the day before
        ("2025-06-30", "2025-06-30", True),  # on S
        ("2025-07-01", "2025-07-30", False),  # after S: never read
        ("2020-01-01", "2026-01-01", True),  # spans the whole window
    ],
)
def test_washout_window_edges(run, b, start, end, expected):
    assert value(run, [b.med(b.METHOTREXATE, start, end)], **WASHOUT_28) is expected


def test_washout_partial_end_straddling_window_start_is_unknown(run, b):
    # Ends "2025-06": June 1 (outside) .. June 30 (inside).
    row = b.med(b.METHOTREXATE, "2025-05-01", "2025-06-30", end_early="2025-06-01")
    assert value(run, [row], **WASHOUT_28) is None
    # Ends "2025-05": every reading is before W.
    row = b.med(b.METHOTREXATE, "2025-04-01", "2025-05-31", end_early="2025-05-01")
    assert value(run, [row], **WASHOUT_28) is False


def test_washout_partial_dose_date_straddling_window_start_is_unknown(run, b):
    # Given "2025-06" (flattened as its range, start and end alike).
    dose = b.med(b.METHOTREXATE, "2025-06-01", "2025-06-30", rule="per_dose",
                 resource_type="MedicationAdministration", status="completed",
                 start_late="2025-06-30", end_early="2025-06-01")  # fmt: skip
    assert value(run, [dose], **WASHOUT_28) is None
    assert value(run, [dose], within={"days": 60}) is True  # every reading inside


@pytest.mark.parametrize(
    ("start", "runs_to_s", "expected"),
    [
        ("2025-01-01", True, None),  # began before W, could still run into it
        ("2025-01-01", False, False),  # unknown durations not run to S: start day only
        ("2025-06-10", True, True),  # began inside W: exposed on its start day at least
        ("2025-06-10", False, True),
    ],
)
def test_washout_unknown_duration(run, b, start, runs_to_s, expected):
    row = b.med(b.METHOTREXATE, start, None, rule="unknown")
    got = value(run, [row], unknown_duration_runs_to_as_of=runs_to_s, **WASHOUT_28)
    assert got is expected


@pytest.mark.parametrize(
    ("coverage", "expected"),
    [({}, False), ({"rituximab": 182}, True), ({"RITUXIMAB": 182}, True)],
)
def test_washout_per_dose_coverage(run, b, coverage, expected):
    # "No anti-CD20 within 6 months": one infusion on 2025-01-02 covers 182 days with the
    # table (through 2025-07-02), only its day without it.
    dose = b.med(b.RITUXIMAB, "2025-01-02", "2025-01-02", rule="per_dose",
                 resource_type="MedicationAdministration", status="completed")  # fmt: skip
    got = value(run, [dose], within={"months": 3}, coverage_per_dose_days=coverage)
    assert got is expected


def test_default_coverage_days(run, b):
    dose = b.med(b.METHOTREXATE, "2025-05-20", None, rule="per_dose",
                 resource_type="MedicationAdministration", status="completed")  # fmt: skip
    assert value(run, [dose], **WASHOUT_28) is False
    assert value(run, [dose], default_coverage_days=14, **WASHOUT_28) is True  # to Jun 2


def test_washout_records_that_do_not_count(run, b):
    cancelled = b.med(b.METHOTREXATE, "2025-06-10", "2025-06-20", status="cancelled")
    topical = b.med(b.METHOTREXATE, "2025-06-10", "2025-06-20", form_text="Topical Cream")
    undated = b.med(b.METHOTREXATE, None, None)
    for row in (cancelled, topical, undated):
        assert value(run, [row], **WASHOUT_28) is False
    assert value(run, [topical], systemic_only=False, **WASHOUT_28) is True


def test_no_window_is_the_whole_history_up_to_s(run, b):
    old = b.med(b.METHOTREXATE, "2001-01-01", "2001-02-01")
    assert value(run, [old]) is True
    assert value(run, [b.med(b.METHOTREXATE, "2025-07-01", "2025-08-01")]) is False


# --------------------------------------------------------------------------- common fields
def test_missing_match_min_count_and_reason(run, b):
    inside = b.med(b.METHOTREXATE, "2025-06-10", "2025-06-20")
    outside = b.med(b.METHOTREXATE, "2024-01-01", "2024-02-01")
    assert value(run, [], missing="unknown", **WASHOUT_28) is None
    assert value(run, [outside], missing="unknown", **WASHOUT_28) is None
    assert value(run, [inside], missing="unknown", **WASHOUT_28) is True
    assert value(run, [inside], match="possible", **WASHOUT_28) is None
    assert value(run, [], match="possible", **WASHOUT_28) is False
    second = b.med(b.METHOTREXATE, "2025-06-21", "2025-06-25")
    assert value(run, [inside], min_count=2, **WASHOUT_28) is False
    assert value(run, [inside, second], min_count=2, **WASHOUT_28) is True
    trial = query_trial(reason="methotrexate in the last 4 weeks", **WASHOUT_28)
    assert run.answer("q", medications=[inside], trial=trial) == (
        "met",
        "methotrexate in the last 4 weeks",
    )


def test_min_agents_and_grouping(run, b):
    mtx = b.med(b.METHOTREXATE, "2025-06-10", "2025-06-20")
    aza = b.med(b.AZATHIOPRINE, "2025-06-10", "2025-06-20")
    mmf = b.med(b.MMF, "2025-06-10", "2025-06-20")
    mpa = b.med(b.MPA, "2025-06-10", "2025-06-20")
    assert value(run, [mtx, aza], min_agents=2, **WASHOUT_28) is True
    assert value(run, [mtx], min_agents=2, **WASHOUT_28) is False
    # mycophenolate mofetil and mycophenolic acid are one moiety
    assert value(run, [mmf, mpa], min_agents=2, **WASHOUT_28) is False
    # class grouping: every agent of the value sets is one agent
    assert value(run, [mtx, aza], min_agents=2, agent_grouping="class", **WASHOUT_28) is False
    assert value(run, [mtx, aza], agent_grouping="class", **WASHOUT_28) is True


def test_not_counted_value_sets_are_shown_not_counted(run, b):
    hcq = b.med(b.HCQ, "2025-06-10", "2025-06-20")
    trial = query_trial(not_counted_value_sets=["antimalarials"], not_counted_reason="off",
                        **WASHOUT_28)  # fmt: skip
    res = run(medications=[hcq], trial=trial)
    assert res.answers.answer[0] == "not_met"
    assert "antimalarials not counted (off)" in b.notes(res, "q")


def test_window_anchored_on_a_definition(run, b):
    # An immunosuppressant within 90 days after the first glucocorticoid.
    define = {"gc": {"type": "medication", "value_sets": ["glucocorticoids"]}}
    within = {"days": 90, "anchor": "gc", "anchor_event": "earliest", "after": True}
    gc = b.med(b.PREDNISONE, "2025-01-01", "2025-01-31")
    soon = b.med(b.METHOTREXATE, "2025-02-01", "2025-02-10")
    late = b.med(b.METHOTREXATE, "2025-05-01", "2025-05-10")
    assert value(run, [gc, soon], define=define, within=within) is True
    assert value(run, [gc, late], define=define, within=within) is False
    assert value(run, [soon], define=define, within=within) is False  # no anchor event


# --------------------------------------------------------------------------- eras
ERA = {"within": {"months": 24}, "min_era_days": 84}


@pytest.mark.parametrize(
    ("end", "expected"), [("2024-03-24", True), ("2024-03-23", False)]
)  # Jan 1 .. Mar 24 2024 = 84 days inclusive
def test_era_boundary(run, b, end, expected):
    assert value(run, [b.med(b.METHOTREXATE, "2024-01-01", end)], **ERA) is expected


@pytest.mark.parametrize(("second", "expected"), [("2024-03-12", True), ("2024-03-13", False)])
def test_era_persistence_gap(run, b, second, expected):
    meds = [b.med(b.METHOTREXATE, "2024-01-01", "2024-02-10"),
            b.med(b.METHOTREXATE, second, "2024-03-25")]  # fmt: skip
    assert value(run, meds, **ERA) is expected
    assert value(run, meds, persistence_gap_days=31, **ERA) is True


def test_era_unknown_duration_and_partial_dates(run, b):
    assert value(run, [b.med(b.METHOTREXATE, "2025-01-01", None, rule="unknown")], **ERA) is None
    assert value(run, [b.med(b.METHOTREXATE, "2025-05-01", None, rule="unknown")], **ERA) is False
    # v1.1: an end "2024-03" inside W runs through Mar 31 (91 days); "2024-02" through Feb 29.
    row = b.med(b.METHOTREXATE, "2024-01-01", "2024-03-31", end_early="2024-03-01")
    assert value(run, [row], **ERA) is True
    row = b.med(b.METHOTREXATE, "2024-01-01", "2024-02-29", end_early="2024-02-01")
    assert value(run, [row], **ERA) is False
    # W starts 2023-06-30: a course ending "2023-06" joins a later one (gap 24 days) into an
    # 84-day era only when it ends on Jun 30, so the straddle makes it unknown.
    first = b.med(b.METHOTREXATE, "2023-03-01", "2023-06-30", end_early="2023-06-01")
    second = b.med(b.METHOTREXATE, "2023-07-25", "2023-09-21")
    assert value(run, [first, second], **ERA) is None


# --------------------------------------------------------------------------- the shorthand
def test_medication_history_expands_to_one_query_per_requirement():
    from fhir_cohort.criteria.shorthands import expand

    crit = shorthand("therapy")
    rule = expand(crit).rule
    assert isinstance(rule, AllOf) and rule.note == crit.review_note
    gc, others = rule.of
    assert isinstance(gc, MedicationQuery) and isinstance(others, MedicationQuery)
    assert (gc.label, gc.value_sets, gc.agent_grouping, gc.min_agents) == (
        "glucocorticoids", ["glucocorticoids"], "class", 1)  # fmt: skip
    assert (others.value_sets, others.not_counted_value_sets, others.min_agents) == (
        ["immunosuppressants"], ["antimalarials"], 2)  # fmt: skip
    for q in rule.of:
        assert q.within is not None and q.within.months == crit.window_months
        assert q.min_era_days == crit.min_era_days
        assert q.coverage_per_dose_days == crit.coverage_per_dose_days
    switched = crit.model_copy(update={"switches": {"count_antimalarials": True}})
    _, others = expand(switched).rule.of
    assert others.value_sets == ["immunosuppressants", "antimalarials"]
    assert others.not_counted_value_sets == []


# --------------------------------------------------------------------------- sweeps
def _sweep(terminology: Any, b: Any, vs_id: str, rows: list[tuple]) -> dict[str, str]:
    trial = query_trial(value_sets=[vs_id], systemic_only=False)
    pats = [b.pat(r[0]) for r in rows]
    res = evaluate(trial, Tables.from_rows(pats, [], rows, []), terminology, b.AS_OF)
    return dict(zip(res.answers.patient_id, res.answers.answer, strict=True))


@pytest.mark.parametrize("vs_id", ["glucocorticoids", "immunosuppressants", "antimalarials"])
def test_every_code_of_a_medication_value_set_counts(terminology, b, vs_id):
    """Every member (RxNorm ingredient or product, NDC package, SNOMED substance) as a record's
    code, and every RxNorm member's name as an uncoded record's text, is an exposure."""
    vs = terminology.value_set(vs_id)
    rows: list[tuple] = []
    for i, (system, code) in enumerate(sorted(vs.concepts)):
        rows.append(b.med(code, "2025-06-01", "2025-06-10", pid=f"c{i}", system=system))
        name = vs.display(system, code)
        if system == b.RXNORM and name:
            rows.append(b.med(None, "2025-06-01", "2025-06-10", pid=f"t{i}", text=name))
    got = _sweep(terminology, b, vs_id, rows)
    assert len(got) == len(rows) > len(vs.concepts)
    assert {pid for pid, a in got.items() if a != "met"} == set()


def test_every_name_and_brand_of_an_agent_counts(terminology, b):
    """Names the terminology reads in text (ingredients, salts, brands, synonyms, name-only
    agents) each give an exposure for a value set of their agent."""
    for vs_id in terminology.medication_value_sets():
        rows = []
        for i, name in enumerate(sorted(terminology.medication_names())):
            [m] = terminology.agents_for_text(name) or [None]
            if m is not None and vs_id in terminology.agent_value_sets(m.agent):
                rows.append(b.med(None, "2025-06-01", "2025-06-10", pid=f"n{i}", text=name))
        assert rows
        got = _sweep(terminology, b, vs_id, rows)
        assert {pid for pid, a in got.items() if a != "met"} == set(), vs_id


def test_day_arithmetic_is_inclusive():
    from fhir_cohort.engine.medication import Bounds

    w = Bounds.everything(dt.date(2025, 6, 30))
    assert w.start == dt.date.min and w.end == w.sure_end == dt.date(2025, 6, 30)
