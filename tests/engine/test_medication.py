"""I3 medication eras: day arithmetic, agents, classes, statuses, systemic use, unknown."""

from __future__ import annotations

import datetime as dt
import itertools

import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fhir_cohort.engine.evaluate import medication_eras, rule_queries
from fhir_cohort.engine.medication import clipped_days, merge_intervals
from fhir_cohort.engine.tables import Tables
from tests.criteria_variants import variant

D = dt.date


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    ("second_start", "merged"),
    [
        (D(2024, 2, 9), True),  # gap 29
        (D(2024, 2, 10), True),  # gap 30 (Jan 11 .. Feb 9): merges
        (D(2024, 2, 11), False),  # gap 31
        (D(2024, 1, 11), True),  # adjacent
        (D(2024, 1, 5), True),  # overlapping
    ],
)
def test_gap_boundary(second_start, merged):
    eras = merge_intervals(
        [(D(2024, 1, 1), D(2024, 1, 10)), (second_start, second_start + dt.timedelta(days=5))], 30
    )
    assert (len(eras) == 1) is merged


def test_clipping_inclusive():
    assert clipped_days((D(2024, 1, 1), D(2024, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 1
    assert clipped_days((D(2023, 1, 1), D(2023, 7, 9)), D(2023, 6, 30), D(2025, 6, 30)) == 10
    assert clipped_days((D(2025, 6, 1), D(2026, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 30
    assert clipped_days((D(2020, 1, 1), D(2021, 1, 1)), D(2023, 6, 30), D(2025, 6, 30)) == 0


intervals = st.lists(
    st.tuples(st.dates(D(2020, 1, 1), D(2025, 1, 1)), st.integers(0, 120)).map(
        lambda t: (t[0], t[0] + dt.timedelta(days=t[1]))
    ),
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
    return [
        b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"),
        b.med(b.AZATHIOPRINE, "2024-04-01", "2025-01-01"),
    ]


def therapy(run, b, meds, **kw):
    return run.answer("therapy", medications=meds, **kw)


def test_met_and_review_note(run, b, trial):
    ans, reason = therapy(run, b, [_gc(b), *_two_others(b)])
    assert ans == "met"
    assert "glucocorticoids: 1/1" in reason and "other immunosuppressants: 2/2" in reason


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("2024-03-24", "met"),  # Jan 1 .. Mar 24 2024 = 84 days inclusive
        ("2024-03-23", "not_met"),  # 83 days
    ],
)
def test_min_era_boundary(run, b, end, expected):
    assert therapy(run, b, [_gc(b, end=end), *_two_others(b)])[0] == expected


def test_era_shorter_than_min_is_noted(run, b):
    res = run(medications=[_gc(b, end="2024-02-29"), *_two_others(b)])
    assert any("era 60 days < 84" in n for n in b.notes(res, "therapy"))


@pytest.mark.parametrize(
    ("second_start", "expected"),
    [
        ("2024-03-12", "met"),  # gap 30 days after Feb 10: one era of 84+ days
        ("2024-03-13", "not_met"),  # gap 31: two short eras
    ],
)
def test_persistence_gap_boundary(run, b, second_start, expected):
    meds = [_gc(b, "2024-01-01", "2024-02-10"), _gc(b, second_start, "2024-03-25"), *_two_others(b)]
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
    meds = [
        _gc(b),
        b.med(b.MMF, "2024-01-01", "2024-06-30"),
        b.med(b.MPA, "2024-07-01", "2024-12-31"),
    ]
    ans, reason = therapy(run, b, meds)
    assert ans == "not_met"
    assert "other immunosuppressants: 1/2" in reason


def test_glucocorticoids_are_one_class(run, b):
    # 50 days prednisone then 50 days methylprednisolone (different moieties) form one era
    meds = [
        _gc(b, "2024-01-01", "2024-02-19"),
        b.med("6902", "2024-02-20", "2024-04-09"),
        *_two_others(b),
    ]
    assert therapy(run, b, meds)[0] == "met"


def test_text_only_medication_low_confidence(run, b):
    meds = [b.med(None, "2024-01-01", "2024-06-30", text="Prednisone 5 mg daily"), *_two_others(b)]
    res = run(medications=meds)
    assert b.notes(res, "therapy") and res.answers.answer[2] == "met"
    assert any("low confidence" in n for n in b.notes(res, "therapy"))


@pytest.mark.parametrize(
    "kw",
    [
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
        {"route_codes": ("http://snomed.info/sct|6064005",)},  # topical route
    ],
)
def test_records_that_do_not_count(run, b, kw):
    assert therapy(run, b, [_gc(b, **kw), *_two_others(b)])[0] == "not_met"


@pytest.mark.parametrize(
    "kw",
    [
        {"resource_type": "MedicationDispense", "status": "completed"},
        {"resource_type": "MedicationDispense", "status": None},
        {"resource_type": "MedicationStatement", "status": "completed"},
        {"resource_type": "MedicationRequest", "status": "stopped"},
        {"route_text": "Oral"},
    ],
)
def test_records_that_count(run, b, kw):
    assert therapy(run, b, [_gc(b, **kw), *_two_others(b)])[0] == "met"


def test_topical_product_name_not_counted(run, b):
    # hydrocortisone 25 MG/ML Topical Cream [Procto-Med]: a glucocorticoid product, not systemic
    res = run(medications=[b.med("1790684", "2024-01-01", "2024-12-31"), *_two_others(b)])
    assert res.answers.answer[2] == "not_met"
    assert any("topical/inhaled form not counted" in n for n in b.notes(res, "therapy"))


def test_open_end_runs_to_as_of(run, b):
    meds = [_gc(b, "2025-04-01", None, rule="to_asof"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "met"  # Apr 1 .. Jun 30 = 91 days
    meds = [_gc(b, "2025-04-10", None, rule="to_asof"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "not_met"  # 82 days


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
    admin = b.med(
        b.RITUXIMAB,
        "2024-06-01",
        "2024-06-01",
        rule="per_dose",
        resource_type="MedicationAdministration",
        status="completed",
    )
    meds = [_gc(b), b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"), admin]
    assert therapy(run, b, meds)[0] == "met"
    # prednisone doses cover 1 day each: 84 daily doses make an 84-day era, 83 do not
    daily = [
        b.med(
            b.PREDNISONE,
            (D(2024, 1, 1) + dt.timedelta(days=i)).isoformat(),
            None,
            rule="per_dose",
            resource_type="MedicationAdministration",
            status=None,
        )
        for i in range(84)
    ]
    assert therapy(run, b, [*daily, *_two_others(b)])[0] == "met"
    assert therapy(run, b, [*daily[:83], *_two_others(b)])[0] == "not_met"
    weekly = [
        b.med(
            b.PREDNISONE,
            (D(2024, 1, 1) + dt.timedelta(days=7 * i)).isoformat(),
            None,
            rule="per_dose",
            resource_type="MedicationAdministration",
            status="in-progress",
        )
        for i in range(20)
    ]
    assert therapy(run, b, [*weekly, *_two_others(b)])[0] == "met"  # gaps of 6 days merge
    # status "active" is not a counted MedicationAdministration status
    weekly_active = [(*w[:3], "active", *w[4:]) for w in weekly]
    assert therapy(run, b, [*weekly_active, *_two_others(b)])[0] == "not_met"


def test_per_dose_coverage_is_data(run, b, trial):
    t2 = variant("therapy", coverage_per_dose_days={"rituximab": 30})
    admin = b.med(
        b.RITUXIMAB,
        "2024-06-01",
        "2024-06-01",
        rule="per_dose",
        resource_type="MedicationAdministration",
        status="completed",
    )
    meds = [_gc(b), b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"), admin]
    assert therapy(run, b, meds, trial=t2)[0] == "not_met"


def test_antimalarial_switch(run, b, trial):
    meds = [
        _gc(b),
        b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01"),
        b.med(b.HCQ, "2024-01-01", "2025-01-01"),
    ]
    res = run(medications=meds)
    assert res.answers.answer[2] == "not_met"
    assert any("count_antimalarials is false" in n for n in b.notes(res, "therapy"))
    t2 = variant("therapy", count_antimalarials=True)
    assert therapy(run, b, meds, trial=t2)[0] == "met"


def test_after_as_of_ignored(run, b):
    meds = [_gc(b, "2025-07-01", "2025-12-31"), *_two_others(b)]
    res = run(medications=meds)
    assert res.answers.answer[2] == "not_met"
    assert "after as-of date" in b.notes(res, "therapy")


def test_era_table(b, trial, terminology):
    tables = Tables.from_rows(
        [b.pat()], [], [_gc(b), *_two_others(b), b.med(b.MMF, "2020-01-01", "2020-02-01")], []
    )
    # One table per medication query of the expanded criterion (one query per requirement).
    queries = rule_queries(trial, "medication")
    assert [(cid, q.label) for cid, q in queries] == [
        ("therapy", "glucocorticoids"),
        ("therapy", "other immunosuppressants"),
    ]
    eras = pd.concat([medication_eras(q, tables, terminology, b.AS_OF) for _, q in queries])
    assert list(eras.columns) == [
        "patient_id",
        "requirement",
        "agent",
        "value_set",
        "start",
        "end",
        "days",
    ]
    by_agent = {r.agent: r.days for r in eras.itertuples()}
    assert by_agent == {
        "glucocorticoids": 182,
        "methotrexate": 183,
        "azathioprine": 276,
        "mycophenolic acid": 0,
    }


# ----------------------------------------------------------------------------- spec v1.1
# Partial dates are ranges: a row carries its widest reading (start, end) and its narrowest
# (start_late, end_early). The spec reads a partial start as its first day and a partial end as
# its last; only a partial date that straddles a window boundary (W's first day, or S) cannot
# decide: there `met` needs the narrowest reading and the widest alone gives `unknown`.


@pytest.mark.parametrize(
    ("end", "end_early", "expected"),
    [
        ("2024-03-31", "2024-03-01", "met"),  # ends "2024-03": through Mar 31, 91 days
        ("2024-04-30", "2024-04-01", "met"),  # ends "2024-04": 121 days
        ("2024-02-29", "2024-02-01", "not_met"),  # ends "2024-02": through Feb 29, 60 days
    ],
)
def test_month_precision_end_runs_through_its_last_day(run, b, end, end_early, expected):
    # v1.1: "a period ending 2026-04 runs through 2026-04-30"; the 84 days are no window
    # boundary, so a month-precision end inside W decides by its last day.
    ans, _ = therapy(run, b, [_gc(b, "2024-01-01", end, end_early=end_early), *_two_others(b)])
    assert ans == expected


def test_month_precision_end_straddling_window_start(run, b):
    # W starts 2023-06-30. A course ending "2023-06" ends inside W only on Jun 30; then it merges
    # (gap 24 days) with a course from Jul 25 into an 84-day era; ending Jun 1 it does not.
    first = _gc(b, "2023-03-01", "2023-06-30", end_early="2023-06-01")
    second = _gc(b, "2023-07-25", "2023-09-21")
    assert therapy(run, b, [first, second, *_two_others(b)])[0] == "unknown"
    # Other records decide it: a full-date course meets it anyway.
    assert therapy(run, b, [first, second, _gc(b), *_two_others(b)])[0] == "met"


def test_month_precision_start_straddling_as_of(run, b):
    # An open order started "2025-04" starts Apr 1 (v1.1): Apr 1 .. Jun 30 = 91 days, met.
    meds = [_gc(b, "2025-04-01", None, rule="to_asof", start_late="2025-04-30"), *_two_others(b)]
    assert therapy(run, b, meds)[0] == "met"
    # Started "2023-06" while W starts Jun 30: every reading is clipped to Jun 30, so the
    # straddle cannot change the answer (Jun 30 .. Sep 21 = 84 days).
    clipped = _gc(b, "2023-06-01", "2023-09-21", start_late="2023-06-30")
    assert therapy(run, b, [clipped, *_two_others(b)])[0] == "met"
    # Started "2025-06" .. a day after S is possible: the late reading is not on record at S.
    late = _gc(b, "2025-06-01", "2025-09-30", start_late="2025-07-31", end_early="2025-09-01")
    res = run(medications=[late, *_two_others(b)])
    assert res.answers.answer[2] == "not_met"


def test_partial_dispense_without_certain_day(run, b):
    # Handed over "2024" with 30 days of supply: no day is covered under every reading.
    row = _gc(b, "2024-01-01", "2025-01-29", resource_type="MedicationDispense",
              status="completed", start_late="2024-12-31", end_early="2024-01-30")  # fmt: skip
    # Read from its first day the supply covers Jan 1-30 only; the widest reading (supply from
    # the year's last day) is kept as a doubt, so the answer is unknown rather than not_met.
    res = run(medications=[row, *_two_others(b)])
    assert res.answers.answer[2] == "unknown"


# Readings of one record: the days it covers under each choice of its partial dates.
_partial = st.dates(D(2022, 1, 1), D(2025, 12, 31)).flatmap(
    lambda d: st.sampled_from([d.isoformat(), d.isoformat()[:7], d.isoformat()[:4]])
)


@given(_partial, _partial, st.data())
def test_certain_and_widest_bracket_every_reading(start, end, data):
    from fhir_cohort.engine.medication import certain_interval, exposure_interval
    from fhir_cohort.fhir.wire import date_bounds

    (s0, s1), (e0, e1) = date_bounds(start), date_bounds(end)
    row = flatten_rows(
        {"resourceType": "MedicationStatement", "status": "completed",
         "effectivePeriod": {"start": start, "end": end}}
    )[0]  # fmt: skip
    assume(s0 <= e1)  # some reading ends after it starts (else the record is inconsistent)
    s = data.draw(st.dates(s0, min(s1, e1)))
    e = data.draw(st.dates(max(s, e0), e1))
    reading = (s, e)
    wide = exposure_interval(row, AS_OF_FAR, 1)
    assert wide[0] <= reading[0] and reading[1] <= wide[1]
    sure = certain_interval(row, AS_OF_FAR, 1)
    if sure is not None:
        assert reading[0] <= sure[0] and sure[1] <= reading[1]


@given(intervals, st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=12))
def test_more_coverage_never_shortens_eras(ivs, grow):
    # Why the certain reading is pessimistic: eras are monotone in the days covered.
    w0, s = D(2021, 1, 1), D(2024, 12, 31)
    pads = (grow + [(0, 0)] * len(ivs))[: len(ivs)]
    wider = [(a - dt.timedelta(days=g[0]), z + dt.timedelta(days=g[1]))
             for (a, z), g in zip(ivs, pads, strict=True)]  # fmt: skip

    def best(xs):
        return max((clipped_days(e, w0, s) for e in merge_intervals(xs, 30)), default=0)

    assert best(wider) >= best(ivs)


AS_OF_FAR = D(2030, 1, 1)


def flatten_rows(*resources, medications=()):
    """Flatten resources for patient p1 into medication rows (Medication resources first)."""
    from fhir_cohort.engine.flatten import Flattener
    from fhir_cohort.engine.tables import MEDICATION_COLUMNS

    f = Flattener(FLAT_RELEVANT, FLAT_WORDS)
    for m in medications:
        f.add_medication(m)
    out = []
    for i, r in enumerate(resources):
        r = {"id": f"r{i}", "subject": {"reference": "Patient/p1"},
             "medicationCodeableConcept": _coded(PREDNISONE_RXN), **r}  # fmt: skip
        out.extend(row for _, row in f.flatten(r, "test:1"))
    out.extend(row for _, row in f.finish())
    import collections

    row_type = collections.namedtuple("MedRow", MEDICATION_COLUMNS)
    return [row_type(*row) for row in out]


RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
PREDNISONE_RXN = "8640"
FLAT_RELEVANT = {(RXN, c) for c in ("8640", "6851", "1256")}
FLAT_WORDS = {"prednisone", "methotrexate", "azathioprine"}


def _coded(code, display=None):
    c = {"system": RXN, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c]}


def _steps(*days, **extra):
    return [{"sequence": i + 1, "timing": {"repeat": {"boundsDuration": {"value": n, "code": "d"}}},
             **extra} for i, n in enumerate(days)]  # fmt: skip


def _flat_run(run, b, *resources, medications=()):
    rows = [tuple(r) for r in flatten_rows(*resources, medications=medications)]
    return run(medications=[*rows, *_two_others(b)])


def test_taper_of_three_steps_counts_whole_course(run, b):
    # 14 + 35 + 35 days from Jan 1 2024 = 84 days: met only when every step counts.
    taper = {"resourceType": "MedicationRequest", "status": "completed", "intent": "order",
             "authoredOn": "2024-01-01", "dosageInstruction": _steps(14, 35, 35)}  # fmt: skip
    res = _flat_run(run, b, taper)
    assert res.answers.answer[2] == "met"
    short = {**taper, "dosageInstruction": _steps(14, 35, 34)}
    assert _flat_run(run, b, short).answers.answer[2] == "not_met"


@pytest.mark.parametrize(("third_start", "expected"), [("2024-03-02", "met"),
                                                        ("2024-03-03", "not_met")])  # fmt: skip
def test_gap_between_instructions_merges_by_persistence(run, b, third_start, expected):
    def period(a, z):
        return {"timing": {"repeat": {"boundsPeriod": {"start": a, "end": z}}}}

    # Jan 1 .. Jan 31, then after a gap of 30 (Feb 1 .. Mar 1) or 31 days .. Mar 26: 86 days.
    st_ = {
        "resourceType": "MedicationStatement",
        "status": "completed",
        "effectiveDateTime": "2024-01-01",
        "dosage": [period("2024-01-01", "2024-01-31"), period(third_start, "2024-03-26")],
    }
    assert _flat_run(run, b, st_).answers.answer[2] == expected


INPATIENT = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
            "code": "inpatient",
        }
    ]
}
ACUTE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
            "code": "acute",
        }
    ]
}


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, "met"),
    ({"category": [INPATIENT]}, "unknown"),
    ({"courseOfTherapyType": ACUTE}, "unknown"),
])  # fmt: skip
def test_open_inpatient_or_acute_order(run, b, extra, expected):
    order = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
             "authoredOn": "2024-06-01", **extra}  # fmt: skip
    res = _flat_run(run, b, order)
    assert res.answers.answer[2] == expected
    if expected == "unknown":
        assert "unknown duration" in res.answers.reason[2]
    # Its documented administrations still count on their own.
    admins = [{"resourceType": "MedicationAdministration", "status": "completed",
               "effectiveDateTime": (D(2024, 6, 1) + dt.timedelta(days=i)).isoformat()}
              for i in range(84)]  # fmt: skip
    assert _flat_run(run, b, order, *admins).answers.answer[2] == "met"


@pytest.mark.parametrize("display", ["Inhalation", "Topical", "Ophthalmic", "Rectal",
                                     "Nasal", "Cutaneous", "Otic"])  # fmt: skip
def test_display_only_route_or_form_is_not_systemic(run, b, display):
    local = {"coding": [{"system": "http://example.org/routes", "code": "L1",
                         "display": display}]}  # fmt: skip
    course = {"resourceType": "MedicationStatement", "status": "completed",
              "effectivePeriod": {"start": "2024-01-01", "end": "2024-12-31"}}  # fmt: skip
    assert _flat_run(run, b, course).answers.answer[2] == "met"
    routed = {**course, "dosage": [{"route": local}]}
    assert _flat_run(run, b, routed).answers.answer[2] == "not_met"
    med = {"resourceType": "Medication", "id": "f1", "code": _coded(PREDNISONE_RXN),
           "form": local}  # fmt: skip
    formed = {**course, "medicationReference": {"reference": "Medication/f1"}}
    formed.pop("medicationCodeableConcept", None)
    res = _flat_run(run, b, {**formed, "medicationCodeableConcept": None}, medications=[med])
    assert res.answers.answer[2] == "not_met"


def test_route_per_instruction(run, b):
    inhaled = {"coding": [{"system": "http://snomed.info/sct", "code": "X",
                           "display": "Inhalation"}]}  # fmt: skip
    oral = {"text": "by mouth"}

    def step(a, z, route):
        return {"route": route, "timing": {"repeat": {"boundsPeriod": {"start": a, "end": z}}}}

    both = {"resourceType": "MedicationStatement", "status": "completed",
            "effectiveDateTime": "2024-01-01",
            "dosage": [step("2024-01-01", "2024-12-31", inhaled),
                       step("2024-01-01", "2024-03-23", oral)]}  # fmt: skip
    assert _flat_run(run, b, both).answers.answer[2] == "not_met"  # oral 83 days only
    both["dosage"][1] = step("2024-01-01", "2024-03-24", oral)
    assert _flat_run(run, b, both).answers.answer[2] == "met"


def test_text_match_evidence_keeps_record_code(run, b):
    ndc = "http://hl7.org/fhir/sid/ndc"
    course = {
        "resourceType": "MedicationStatement",
        "status": "completed",
        "effectivePeriod": {"start": "2024-01-01", "end": "2024-12-31"},
        "medicationCodeableConcept": {
            "coding": [{"system": ndc, "code": "0000-0000-00", "display": "PredniSONE 5 MG Tab"}]
        },
    }
    res = _flat_run(run, b, course)
    assert res.answers.answer[2] == "met"
    ev = res.evidence[(res.evidence.criterion_id == "therapy")
                      & res.evidence.note.str.contains("low confidence")]  # fmt: skip
    assert set(zip(ev.system, ev.code, ev.display, strict=True)) == {
        (ndc, "00000000000", "PredniSONE 5 MG Tab")
    }


@pytest.mark.parametrize(
    "kw",
    [
        {"route_text": "Inhalation"},
        {"form_text": "Topical; cream"},
        {"display": "budesonide 0.25 MG/ML Inhalation Suspension"},
    ],
)
def test_terminology_decides_non_systemic_too(run, b, trial, kw):
    # With the criterion's own word list emptied, Terminology.is_non_systemic still decides.
    t2 = variant("therapy", non_systemic_words=[])
    res = run(medications=[_gc(b, **kw), *_two_others(b)], trial=t2)
    assert res.answers.answer[2] == "not_met"
    assert any("non-systemic route/form not counted" in n for n in b.notes(res, "therapy"))
