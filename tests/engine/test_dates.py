"""Spec v1.1 "Dates and windows" and "Activity at S": partial dates are ranges, windows and the
after-S test are three-valued, abatementAge is dated from birthDate, undated abatements leave
activity unknown, records without a Patient are counted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria.models import ConditionStatusRules
from fhir_cohort.engine.evaluators.common import (
    after_as_of,
    age_date,
    condition_active,
    in_window,
    span,
    within,
)
from fhir_cohort.engine.flatten import Flattener
from fhir_cohort.engine.tables import (
    CONDITION_COLUMNS,
    OBSERVATION_COLUMNS,
    PATIENT_COLUMNS,
    Tables,
    records_without_patient,
)
from fhir_cohort.fhir.wire import date_bounds

# ------------------------------------------------------------------------- property tests

days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))


@st.composite
def fhir_dates(draw: Any) -> str:
    """A FHIR date at year, month or day precision."""
    d = draw(days)
    precision = draw(st.sampled_from(("year", "month", "day")))
    return {"year": f"{d.year:04d}", "month": f"{d.year:04d}-{d.month:02d}", "day": d.isoformat()}[
        precision
    ]


@st.composite
def windows(draw: Any) -> tuple[dt.date, dt.date]:
    a, b = draw(days), draw(days)
    return min(a, b), max(a, b)


def _day_in(d: dt.date, w: tuple[dt.date, dt.date]) -> bool:
    return w[0] <= d <= w[1]


@given(days, windows())
def test_a_full_date_always_decides(d: dt.date, w: tuple[dt.date, dt.date]) -> None:
    assert in_window((d, d), *w) is _day_in(d, w)


@given(fhir_dates(), windows())
def test_a_partial_date_decides_only_when_its_whole_range_agrees(
    raw: str, w: tuple[dt.date, dt.date]
) -> None:
    lo, hi = date_bounds(raw)  # type: ignore[misc]
    got = in_window((lo, hi), *w)
    if w[0] <= lo and hi <= w[1]:
        assert got is True  # entirely inside
    elif hi < w[0] or lo > w[1]:
        assert got is False  # entirely outside
    else:
        assert got is None  # straddles a boundary
        # some day of the range is inside and some outside: the answer really is open
        assert max(lo, w[0]) <= min(hi, w[1])  # a day inside
        assert lo < w[0] or hi > w[1]  # and a day outside
    if lo == hi:
        assert got is not None


@given(fhir_dates(), days, st.integers(min_value=0, max_value=2000))
def test_within_agrees_with_in_window(raw: str, as_of: dt.date, n: int) -> None:
    lo, hi = date_bounds(raw)  # type: ignore[misc]
    start = as_of - dt.timedelta(days=n)
    assert within(lo, as_of, n, hi) is in_window((lo, hi), start, as_of)
    # flatten stores no high for a full date: the same answer
    if lo == hi:
        assert within(lo, as_of, n, None) is within(lo, as_of, n, hi)


@given(fhir_dates(), days)
def test_after_as_of_is_three_valued(raw: str, as_of: dt.date) -> None:
    lo, hi = date_bounds(raw)  # type: ignore[misc]
    got = after_as_of(lo, as_of, hi)
    if lo > as_of:
        assert got is True  # even the earliest reading is after S: ignored
    elif hi <= as_of:
        assert got is False
    else:
        assert got is None  # the range holds S and later days
    assert after_as_of(None, as_of) is False


@given(days, st.one_of(st.none(), days))
def test_span_is_ordered(lo: dt.date, hi: dt.date | None) -> None:
    s = span(lo, hi)
    assert s is not None and s[0] == lo and s[0] <= s[1]
    assert span(None, None) is None


@given(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2000, 12, 31)),
    st.integers(min_value=0, max_value=99),
)
def test_age_in_years_is_the_birthday(birth: dt.date, years: int) -> None:
    got = age_date(birth, years, "a")
    assert got is not None and got.year == birth.year + years
    assert (got.month, got.day) == (birth.month, birth.day) or (birth.month, birth.day) == (2, 29)
    # every unit spelling of years gives the same day
    for unit in ("yr", "year", "years", "Years"):
        assert age_date(birth, years, unit) == got
    assert age_date(birth, years * 12, "mo") == got


def test_age_date_units() -> None:
    b = dt.date(2000, 1, 31)
    assert age_date(b, 1, "mo") == dt.date(2000, 2, 29)
    assert age_date(b, 2, "wk") == dt.date(2000, 2, 14)
    assert age_date(b, 10, "d") == dt.date(2000, 2, 10)
    assert age_date(b, 1, "parsec") is None
    assert age_date(b, -1, "a") is None


# ------------------------------------------------------------------------- activity at S

S = dt.date(2025, 6, 30)
RULES = ConditionStatusRules()


def row(**kw: Any) -> Any:
    base = dict(
        resource_type="Condition",
        clinical_status=None,
        abatement_date=None,
        abatement_high=None,
        abatement_age=None,
        has_abatement=False,
    )
    base.update(kw)
    if kw.get("abatement_date") is not None or kw.get("abatement_age") is not None:
        base["has_abatement"] = True
    return pd.Series(base)


@pytest.mark.parametrize(
    ("kw", "birth", "expected"),
    [
        ({}, None, True),
        ({"clinical_status": "active"}, None, True),
        *[({"clinical_status": cs}, None, False) for cs in ("inactive", "remission", "resolved")],
        ({"has_abatement": True}, None, None),  # abatementString/Boolean
        ({"clinical_status": "resolved", "has_abatement": True}, None, False),
        ({"abatement_date": dt.date(2025, 6, 30)}, None, False),  # abated on S
        ({"abatement_date": dt.date(2025, 7, 1)}, None, True),
        *[
            ({"clinical_status": cs, "abatement_date": dt.date(2025, 7, 1)}, None, True)
            for cs in ("inactive", "remission", "resolved")
        ],  # abated after S: active
        (
            {"abatement_date": dt.date(2025, 6, 1), "abatement_high": dt.date(2025, 6, 30)},
            None,
            False,
        ),
        (
            {"abatement_date": dt.date(2025, 6, 1), "abatement_high": dt.date(2025, 7, 31)},
            None,
            None,
        ),  # "2025-06/07" holds S
        (
            {
                "clinical_status": "resolved",
                "abatement_date": dt.date(2025, 1, 1),
                "abatement_high": dt.date(2025, 12, 31),
            },
            None,
            None,
        ),  # "2025": may be after S
        ({"abatement_age": (40, "a")}, "1980-03-04", False),  # 2020-03-04
        ({"abatement_age": (50, "a")}, "1980-03-04", True),  # 2030: after S
        ({"clinical_status": "resolved", "abatement_age": (50, "a")}, "1980-03-04", True),
        ({"abatement_age": (45, "a")}, "1980", None),  # 2025-01-01..2025-12-31
        ({"abatement_age": (45, "a")}, "1980-01", False),  # 2025-01-01..2025-01-31
        ({"abatement_age": (40, "a")}, None, None),  # no birthDate: undated
        ({"clinical_status": "inactive", "abatement_age": (40, "a")}, None, False),
        ({"clinical_status": "unknown-code", "has_abatement": True}, None, None),
    ],
)
def test_condition_active(kw: dict[str, Any], birth: str | None, expected: bool | None) -> None:
    assert condition_active(row(**kw), RULES, S, birth) is expected


# ------------------------------------------------------------------------- evaluators


def test_recorded_after_as_of_is_ignored_even_with_an_earlier_onset(run, b):
    sle = [b.cond(b.SLE, onset="2020-01-01", recorded="2025-07-15")]
    assert run.answer("sle", conditions=sle)[0] == "not_met"
    ln = [b.cond(b.LN_CLASS_IV, onset="2020-01-01", recorded="2025-07-15")]
    assert run.answer("lupus_nephritis", conditions=ln)[0] == "clear"


@pytest.mark.parametrize(
    ("field", "raw", "sle", "ln"),
    [
        ("recorded", "2025-07", "not_met", "clear"),  # entirely after S: ignored
        ("onset", "2025-07", "not_met", "clear"),
        ("recorded", "2025-06", "met", "excluded"),  # ends on S: wholly on or before S
        ("recorded", "2025", "unknown", "review"),  # holds S and later days
        ("onset", "2025", "unknown", "review"),
        ("recorded", "2024", "met", "excluded"),
    ],
)
def test_partial_date_at_s(run, b, field, raw, sle, ln):
    assert run.answer("sle", conditions=[b.cond(b.SLE, **{field: raw})])[0] == sle
    assert (
        run.answer("lupus_nephritis", conditions=[b.cond(b.LN_CLASS_IV, **{field: raw})])[0] == ln
    )


def test_other_records_decide_despite_a_straddling_one(run, b):
    rows = [b.cond(b.SLE, recorded="2025"), b.cond(b.SLE, recorded="2024-05-01")]
    assert run.answer("sle", conditions=rows)[0] == "met"
    rows = [b.cond(b.LN_CLASS_IV, recorded="2025"), b.cond(b.LN_CLASS_IV, onset="2024-05")]
    assert run.answer("lupus_nephritis", conditions=rows)[0] == "excluded"


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ("2025-03", "review"),  # straddles S - 90 = 2025-03-17: cannot decide, review anyway
        ("2025-04", "review"),  # inside
        ("2025-02", "clear"),  # entirely before the window
        ("2025-03-16", "clear"),
        ("2025-03-17", "review"),
    ],
)
def test_headache_window_with_partial_onset(run, b, onset, expected):
    as_of = dt.date(2025, 6, 15)
    res = run.answer("cns_lupus", conditions=[b.cond(b.HEADACHE, onset=onset)], as_of=as_of)
    assert res[0] == expected


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ("2024-09", "review"),  # straddles S - 300 = 2024-09-03: excluded becomes review
        ("2024-10", "excluded"),
        ("2024-08", "clear"),
        ("2024", "review"),
        ("2025", "review"),  # holds S and later days
        ("2025-07", "clear"),  # after S: ignored
    ],
)
def test_pregnancy_onset_window_with_partial_dates(run, b, onset, expected):
    as_of = dt.date(2025, 6, 30)
    res = run.answer(
        "pregnancy_lactation", conditions=[b.cond(b.PREGNANCY, onset=onset)], as_of=as_of
    )
    assert res[0] == expected


def test_pregnancy_straddle_does_not_hide_a_firm_exclusion(run, b):
    rows = [b.cond(b.PREGNANCY, onset="2024-09"), b.cond(b.LACTATION)]
    assert run.answer("pregnancy_lactation", conditions=rows)[0] == "excluded"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-06", "excluded"),  # 2025-06-01..30 lies inside [2025-05-31, 2025-06-30]
        ("2025-05", "review"),  # straddles S - 30 = 2025-05-31
        ("2025-04", "clear"),
        ("2025", "review"),
        ("2025-06-20", "excluded"),
    ],
)
def test_pregnancy_status_and_hcg_windows_with_partial_dates(run, b, date, expected):
    status = b.obs(
        b.PREG_STATUS, date, value_type="codeable", value_codes=(f"{b.LOINC}|{b.PREGNANT_ANSWER}",)
    )
    hcg = b.obs(b.HCG, date, value_type="string", value_string="positive")
    for rows in ([status], [hcg]):
        assert run.answer("pregnancy_lactation", observations=rows)[0] == expected


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # S = 2025-06-30, L starts 2024-06-30
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2024-06", value_type="string", value_string="positive")
            ],
            "unknown",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2025-03", value_type="string", value_string="positive")
            ],
            "met",
        ),
        (
            lambda b: [b.obs(b.ANTI_DSDNA, "2025", value_type="string", value_string="positive")],
            "unknown",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2025-07", value_type="string", value_string="positive")
            ],
            "unknown",
        ),  # after S: ignored
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2024-06", value_type="string", value_string="negative")
            ],
            "unknown",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2024-06", value_type="string", value_string="negative"),
                b.obs(b.ANTI_DSDNA, "2025-01-05", value_type="string", value_string="negative"),
            ],
            "not_met",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2024-06", value_type="string", value_string="positive"),
                b.obs(b.ANTI_DSDNA, "2025-01-05", value_type="string", value_string="negative"),
            ],
            "unknown",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2024-06", value_type="string", value_string="positive"),
                b.obs(b.ANTI_DSDNA, "2025-01-05", value_type="string", value_string="positive"),
            ],
            "met",
        ),
    ],
)
def test_lab_lookback_with_partial_dates(run, b, rows, expected):
    assert run.answer("autoantibody", observations=rows(b))[0] == expected


@pytest.mark.parametrize(
    ("kw", "birth", "expected"),
    [
        ({"abatement_age": (40, "a")}, "1980-01-01", "clear"),
        ({"abatement_age": (50, "a")}, "1980-01-01", "excluded"),
        ({"clinical": "resolved", "abatement_age": (50, "a")}, "1980-01-01", "excluded"),
        ({"abatement_age": (45, "a")}, "1980", "review"),
        ({"abatement_age": (40, "a")}, None, "review"),
        ({"clinical": "resolved", "abatement_age": (40, "a")}, None, "clear"),
    ],
)
def test_abatement_age_is_dated_from_birth_date(run, b, kw, birth, expected):
    kw = {"clinical": None, **kw}
    ans = run.answer(
        "lupus_nephritis", patients=[b.pat(birth=birth)], conditions=[b.cond(b.LN_CLASS_IV, **kw)]
    )
    assert ans[0] == expected


def test_undated_abatement_without_status(run, b):
    # exclusion: review; I2 does not need activity
    ln = [b.cond(b.LN_CLASS_IV, clinical=None, has_abatement=True)]
    assert run.answer("lupus_nephritis", conditions=ln) == (
        "review",
        "active lupus nephritis class III, IV or V (activity at as-of date unknown); "
        "active lupus nephritis, severity not recorded (activity at as-of date unknown)",
    )
    sle = [b.cond(b.SLE, clinical=None, has_abatement=True)]
    assert run.answer("sle", conditions=sle)[0] == "met"
    cns = [b.cond(b.CNS_LUPUS, clinical=None, has_abatement=True)]
    assert run.answer("cns_lupus", conditions=cns)[0] == "review"
    chronic = [b.cond(b.HEART_FAILURE, clinical=None, has_abatement=True)]
    assert run.answer("chronic_illness", conditions=chronic)[0] == "review"


@pytest.mark.parametrize("status", ["inactive", "remission", "resolved"])
@pytest.mark.parametrize("code", ["LN_CLASS_IV", "CNS_LUPUS", "HEART_FAILURE", "LACTATION"])
def test_inactive_without_abatement_date_is_not_active(run, b, status, code):
    rows = [b.cond(getattr(b, code), clinical=status)]
    for cid in ("lupus_nephritis", "cns_lupus", "pregnancy_lactation", "chronic_illness"):
        assert run.answer(cid, conditions=rows)[0] == "clear"


@pytest.mark.parametrize(
    ("deceased", "date", "high", "expected"),
    [
        (True, None, None, "not_met"),  # deceasedBoolean true, no date
        (False, None, None, "met"),
        (True, "2025-01-01", None, "not_met"),
        (True, "2025-07-01", None, "met"),
        (True, "2025-06-01", "2025-06-30", "not_met"),  # "2025-06": on or before S
        (True, "2025-01-01", "2025-12-31", "unknown"),  # "2025": may be after S
        (True, "2025-07-01", "2025-07-31", "met"),
    ],
)
def test_deceased(run, b, deceased, date, high, expected):
    p = b.pat(
        deceased=deceased,
        deceased_date=b.d(date) if date else None,
        deceased_high=b.d(high) if high else None,
    )
    assert run.answer("age", patients=[p])[0] == expected


def test_partial_death_date_with_a_failing_age_is_not_met(run, b):
    p = b.pat(
        birth="2015-01-01",
        deceased=True,
        deceased_date=b.d("2025-01-01"),
        deceased_high=b.d("2025-12-31"),
    )
    assert run.answer("age", patients=[p])[0] == "not_met"


# ------------------------------------------------------------------------- without a Patient


def test_records_without_patient_are_counted_per_type(b):
    tables = Tables.from_rows(
        [b.pat("p1")],
        [
            b.cond(b.SLE, "p1"),
            b.cond(b.SLE, "ghost", rid="c9"),
            b.cond(b.LN, "ghost", rid="c9"),  # two codings, one record
            b.cond(b.DELIVERY, "ghost", resource_type="Procedure"),
        ],
        [
            b.med(b.PREDNISONE, "2025-01-01", pid="ghost"),
            b.med(b.PREDNISONE, "2025-01-01", pid="ghost", resource_type="MedicationDispense"),
        ],
        [b.obs(b.ANTI_DSDNA, "2025-01-01", "ghost"), b.obs(b.ANTI_DSDNA, "2025-01-01", "p1")],
    )
    got = records_without_patient(tables)
    assert got == {
        "Condition": 1,
        "Procedure": 1,
        "Observation": 1,
        "MedicationStatement": 0,
        "MedicationRequest": 1,
        "MedicationDispense": 1,
        "MedicationAdministration": 0,
    }
    assert set(records_without_patient(Tables()).values()) == {0}


# ------------------------------------------------------------------------- flatten keeps ranges

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
SUBJ = {"reference": "Patient/p1"}
FLAT = Flattener({(SCT, "55464009"), (LOINC, "5130-0")}, ())


def _row(resource: dict[str, Any]) -> dict[str, Any]:
    (table, values), *_ = FLAT.flatten(resource, "t:1")
    cols = {"patients": PATIENT_COLUMNS, "conditions": CONDITION_COLUMNS,
            "observations": OBSERVATION_COLUMNS}[table]  # fmt: skip
    assert len(values) == len(cols)
    return dict(zip(cols, values, strict=True))


def _cond(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", "subject": SUBJ,
            "code": {"coding": [{"system": SCT, "code": "55464009"}]}, **fields}  # fmt: skip


def _pair(raw: str) -> tuple[dt.date, dt.date | None]:
    lo, hi = date_bounds(raw)  # type: ignore[misc]
    return lo, (hi if hi != lo else None)


@given(fhir_dates())
def test_flatten_keeps_every_partial_date_as_a_range(raw: str) -> None:
    c = _row(_cond(onsetDateTime=raw, recordedDate=raw, abatementDateTime=raw))
    for col in ("onset", "recorded"):
        assert (c[f"{col}_date"], c[f"{col}_high"]) == _pair(raw)
    assert (c["abatement_date"], c["abatement_high"]) == _pair(raw)
    proc = _row({"resourceType": "Procedure", "id": "pr", "subject": SUBJ, "status": "completed",
                 "code": {"coding": [{"system": SCT, "code": "55464009"}]},
                 "performedDateTime": raw})  # fmt: skip
    assert (proc["onset_date"], proc["onset_high"]) == _pair(raw)
    for key in ("effectiveDateTime", "issued"):
        o = _row({"resourceType": "Observation", "id": "o", "subject": SUBJ, "status": "final",
                  "code": {"coding": [{"system": LOINC, "code": "5130-0"}]}, key: raw})  # fmt: skip
        assert (o["date"], o["date_high"]) == _pair(raw)
    p = _row({"resourceType": "Patient", "id": "p", "deceasedDateTime": raw})
    assert (p["deceased"], p["deceased_date"], p["deceased_high"]) == (True, *_pair(raw))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"abatementPeriod": {"start": "2021-01", "end": "2021-03-15"}},
         (dt.date(2021, 1, 1), dt.date(2021, 3, 15), None)),
        ({"abatementPeriod": {"start": "2021-01-05"}}, (dt.date(2021, 1, 5), None, None)),
        ({"abatementPeriod": {"end": "2021"}},
         (dt.date(2021, 1, 1), dt.date(2021, 12, 31), None)),
        ({"abatementAge": {"value": 45, "unit": "years", "code": "a"}}, (None, None, (45.0, "a"))),
        ({"abatementAge": {"value": 3, "unit": "months"}}, (None, None, (3.0, "months"))),
        ({"abatementRange": {"low": {"value": 40, "code": "a"},
                             "high": {"value": 42, "code": "a"}}},
         (None, None, (40.0, "a"))),
        ({"abatementString": "in childhood"}, (None, None, None)),
        ({"abatementBoolean": True}, (None, None, None)),
    ],
)  # fmt: skip
def test_flatten_abatement(fields: dict[str, Any], expected: tuple[Any, ...]) -> None:
    c = _row(_cond(**fields))
    assert (c["abatement_date"], c["abatement_high"], c["abatement_age"]) == expected
    assert c["has_abatement"] is True


def test_flatten_deceased_boolean_without_date() -> None:
    p = _row({"resourceType": "Patient", "id": "p", "deceasedBoolean": True})
    assert (p["deceased"], p["deceased_date"], p["deceased_high"]) == (True, None, None)


def test_evidence_shows_the_range_of_a_partial_date(run, b):
    res = run(conditions=[b.cond(b.LN_CLASS_IV, onset="2024-09", clinical=None,
                                 abatement="2025")])  # fmt: skip
    ev = res.evidence[res.evidence.criterion_id == "lupus_nephritis"].iloc[0]
    assert ev.date == "2024-09-01"
    assert "dated 2024-09-01..2024-09-30" in ev.value
    assert "abated 2025-01-01..2025-12-31" in ev.value
