"""I3 medication eras: day arithmetic, agents, classes, statuses, systemic use, unknown."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.engine.evaluate import medication_eras
from fhir_cohort.engine.medication import clipped_days, merge_intervals
from fhir_cohort.engine.tables import Tables

D = dt.date


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(("second_start", "merged"), [
    (D(2024, 2, 9), True),    # gap 29
    (D(2024, 2, 10), True),   # gap 30 (Jan 11 .. Feb 9): merges
    (D(2024, 2, 11), False),  # gap 31
    (D(2024, 1, 11), True),   # adjacent
    (D(2024, 1, 5), True),    # overlapping
])
def test_gap_boundary(second_start, merged):
    eras = merge_intervals([(D(2024, 1, 1), D(2024, 1, 10)),
                            (second_start, second_start + dt.timedelta(days=5))], 30)
    assert (len(eras) == 1) is merged


def test_clipping_inclusive():
    assert clipped_days((D(2024, 1, 1), D(2024, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 1
    assert clipped_days((D(2023, 1, 1), D(2023, 7, 9)), D(2023, 6, 30), D(2025, 6, 30)) == 10
    assert clipped_days((D(2025, 6, 1), D(2026, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 30
    assert clipped_days((D(2020, 1, 1), D(2021, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 0


intervals = st.lists(
    st.tuples(st.dates(D(2020, 1, 1), D(2025, 1, 1)), st.integers(0, 120)).map(
        lambda t: (t[0], t[0] + dt.timedelta(days=t[1]))),
    max_size=12,
)


@given(intervals, st.integers(0, 60))
def test_merge_properties(ivs, gap):
    eras = merge_intervals(ivs, gap)
    # every input day is covered by exactly one era; eras are separated by more than gap
    for s, e in ivs:
        assert sum(1 for es, ee in eras if es <= s and e <= ee) == 1
    for (_, e0), (s1, _) in itertools.pairwise(eras):
        assert (s1 - e0).days - 1 > gap
    assert merge_intervals(eras, gap) == eras


# ----------------------------------------------------------------------------- criterion
def _gc(b, start="2024-01-01", end="2024-06-30", **kw):
    return b.med(b.PREDNISONE, start, end, **kw)


def _two_others(b):
    return [b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"),
            b.med(b.AZATHIOPRINE, "2024-04-01", "2025-01-01")]


def therapy(run, b, meds, **kw):
    return run.answer("therapy", medications=meds, **kw)


def test_met_and_review_note(run, b, trial):
    ans, reason = therapy(run, b, [_gc(b), *_two_others(b)])
    assert ans == "met"
    assert "glucocorticoids: 1/1" in reason and "other immunosuppressants: 2/2" in reason


@pytest.mark.parametrize(("end", "expected"), [
    ("2024-03-24", "met"),      # Jan 1 .. Mar 24 2024 = 84 days inclusive
    ("2024-03-23", "not_met"),  # 83 days
])
def test_min_era_boundary(run, b, end, expected):
    assert therapy(run, b, [_gc(b, end=end), *_two_others(b)])[0] == expected


def test_era_shorter_than_min_is_noted(run, b):
    res = run(medications=[_gc(b, end="2024-02-29"), *_two_others(b)])
    assert any("era 60 days < 84" in n for n in b.notes(res, "therapy"))


@pytest.mark.parametrize(("second_start", "expected"), [
    ("2024-03-12", "met"),       # gap 30 days after Feb 10: one era of 84+ days
    ("2024-03-13", "not_met"),   # gap 31: two short eras
])
def test_persistence_gap_boundary(run, b, second_start, expected):
    meds = [_gc(b, "2024-01-01", "2024-02-10"), _gc(b, second_start, "2024-03-25"),
            *_two_others(b)]
    assert therapy(run, b, meds)[0] == expected


def test_clipped_to_window(run, b):
    # S = 2025-06-30, W starts 2023-06-30: an era Apr 1 .. Sep 21 2023 has 84 days inside W only
    # when it ends on or after Sep 21; here it ends Sep 20 (83 days in W).
    meds = [_gc(b, "2023-04-01", "2023-09-20"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "not_met"
    meds = [_gc(b, "2023-04-01", "2023-09-21"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "met"


def test_moiety_not_product(run, b):
    # mycophenolate mofetil and mycophenolic acid are ONE agent
    meds = [_gc(b), b.med(b.MMF, "2024-01-01", "2024-06-30"),
            b.med(b.MPA, "2024-07-01", "2024-12-31")]
    ans, reason = therapy(run, b, meds)
    assert ans == "not_met"
    assert "other immunosuppressants: 1/2" in reason


def test_glucocorticoids_are_one_class(run, b):
    # 50 days prednisone then 50 days methylprednisolone (different moieties) form one era
    meds = [_gc(b, "2024-01-01", "2024-02-19"),
            b.med("6902", "2024-02-20", "2024-04-09"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "met"


def test_text_only_medication_low_confidence(run, b):
    meds = [b.med(None, "2024-01-01", "2024-06-30", text="Prednisone 5 mg daily"),
            *_two_others(b)]
    res = run(medications=meds)
    assert b.notes(res, "therapy") and res.answers.answer[2] == "met"
    assert any("low confidence" in n for n in b.notes(res, "therapy"))


@pytest.mark.parametrize("kw", [
    {"resource_type": "MedicationRequest", "status": "cancelled"},
    {"resource_type": "MedicationRequest", "status": "draft"},
    {"resource_type": "MedicationRequest", "status": "entered-in-error"},
    {"resource_type": "MedicationRequest", "intent": "proposal"},
    {"resource_type": "MedicationRequest", "do_not_perform": True},
    {"resource_type": "MedicationStatement", "status": "not-taken"},
    {"resource_type": "MedicationStatement", "status": "intended"},
    {"resource_type": "MedicationDispense", "status": "in-progress"},
    {"resource_type": "MedicationAdministration", "status": "not-done"},
    {"form_text": "Topical Cream"},
    {"route_text": "Inhalation"},
    {"route_codes": ("http://snomed.info/sct|6064005",)},   # topical route
])
def test_records_that_do_not_count(run, b, kw):
    assert therapy(run, b, [_gc(b, **kw), *_two_others(b)])[0] == "not_met"


@pytest.mark.parametrize("kw", [
    {"resource_type": "MedicationDispense", "status": "completed"},
    {"resource_type": "MedicationDispense", "status": None},
    {"resource_type": "MedicationStatement", "status": "completed"},
    {"resource_type": "MedicationRequest", "status": "stopped"},
    {"route_text": "Oral"},
])
def test_records_that_count(run, b, kw):
    assert therapy(run, b, [_gc(b, **kw), *_two_others(b)])[0] == "met"


def test_topical_product_name_not_counted(run, b):
    # hydrocortisone 25 MG/ML Topical Cream [Procto-Med]: a glucocorticoid product, not systemic
    res = run(medications=[b.med("1790684", "2024-01-01", "2024-12-31"), *_two_others(b)])
    assert res.answers.answer[2] == "not_met"
    assert any("topical/inhaled form not counted" in n for n in b.notes(res, "therapy"))


def test_open_end_runs_to_as_of(run, b):
    meds = [_gc(b, "2025-04-01", None, rule="to_asof"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "met"        # Apr 1 .. Jun 30 = 91 days
    meds = [_gc(b, "2025-04-10", None, rule="to_asof"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "not_met"    # 82 days


def test_unknown_duration(run, b):
    meds = [_gc(b, "2025-01-01", None, rule="unknown"), *_two_others(b)]
    ans, reason = therapy(run, b, meds)
    assert ans == "unknown"
    assert "unknown duration" in reason
    # an unknown-duration record that could not reach 84 days even running to S: not_met
    meds = [_gc(b, "2025-05-01", None, rule="unknown"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "not_met"


def test_per_dose_coverage(run, b):
    # rituximab covers 182 days per dose, so one administration is an era of 182 days
    admin = b.med(b.RITUXIMAB, "2024-06-01", "2024-06-01", rule="per_dose",
                  resource_type="MedicationAdministration", status="completed")
    meds = [_gc(b), b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"), admin]
    assert therapy(run, b, meds)[0] == "met"
    # prednisone doses cover 1 day each: 84 daily doses make an 84-day era, 83 do not
    daily = [b.med(b.PREDNISONE, (D(2024, 1, 1) + dt.timedelta(days=i)).isoformat(), None,
                   rule="per_dose", resource_type="MedicationAdministration", status=None)
             for i in range(84)]
    assert therapy(run, b, [*daily, *_two_others(b)])[0] == "met"
    assert therapy(run, b, [*daily[:83], *_two_others(b)])[0] == "not_met"
    weekly = [b.med(b.PREDNISONE, (D(2024, 1, 1) + dt.timedelta(days=7 * i)).isoformat(), None,
                    rule="per_dose", resource_type="MedicationAdministration", status="in-progress")
              for i in range(20)]
    assert therapy(run, b, [*weekly, *_two_others(b)])[0] == "met"  # gaps of 6 days merge
    # status "active" is not a counted MedicationAdministration status
    weekly_active = [(*w[:3], "active", *w[4:]) for w in weekly]
    assert therapy(run, b, [*weekly_active, *_two_others(b)])[0] == "not_met"


def test_per_dose_coverage_is_data(run, b, trial):
    crits = [c.model_copy(update={"coverage_per_dose_days": {"rituximab": 30}})
             if c.id == "therapy" else c for c in trial.criteria]
    t2 = trial.model_copy(update={"criteria": crits})
    admin = b.med(b.RITUXIMAB, "2024-06-01", "2024-06-01", rule="per_dose",
                  resource_type="MedicationAdministration", status="completed")
    meds = [_gc(b), b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"), admin]
    assert therapy(run, b, meds, trial=t2)[0] == "not_met"


def test_antimalarial_switch(run, b, trial):
    meds = [_gc(b), b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"),
            b.med(b.HCQ, "2024-01-01", "2025-01-01")]
    res = run(medications=meds)
    assert res.answers.answer[2] == "not_met"
    assert any("count_antimalarials is false" in n for n in b.notes(res, "therapy"))
    crits = [c.model_copy(update={"count_antimalarials": True}) if c.id == "therapy" else c
             for c in trial.criteria]
    t2 = trial.model_copy(update={"criteria": crits})
    assert therapy(run, b, meds, trial=t2)[0] == "met"


def test_after_as_of_ignored(run, b):
    meds = [_gc(b, "2025-07-01", "2025-12-31"), *_two_others(b)]
    res = run(medications=meds)
    assert res.answers.answer[2] == "not_met"
    assert "after as-of date" in b.notes(res, "therapy")


def test_era_table(b, trial, terminology):
    tables = Tables.from_rows([b.pat()], [], [_gc(b), *_two_others(b),
                                              b.med(b.MMF, "2020-01-01", "2020-02-01")], [])
    eras = medication_eras(trial.criterion("therapy"), tables, terminology, b.AS_OF)
    assert list(eras.columns) == ["patient_id", "requirement", "agent", "value_set", "start",
                                  "end", "days"]
    by_agent = {r.agent: r.days for r in eras.itertuples()}
    assert by_agent == {"glucocorticoids": 182, "methotrexate": 183, "azathioprine": 276,
                        "mycophenolic acid": 0}
