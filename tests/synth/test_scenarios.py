"""Scenario declarations and the answer helpers they rely on."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.synth import SCENARIOS, age_answer, status_of
from fhir_cohort.synth.codes import CRITERIA, EXCLUSION_ANSWERS, INCLUSION_ANSWERS, INCLUSIONS
from fhir_cohort.synth.generator import build_scenario
from fhir_cohort.synth.scenarios import birth_bounds, by_name

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
dates = st.dates(min_value=date(1920, 1, 1), max_value=date(2090, 12, 31))


@given(birth=dates, as_of=dates)
def test_age_answer_full_dates(birth: date, as_of: date) -> None:
    years = as_of.year - birth.year - ((as_of.month, as_of.day) < (birth.month, birth.day))
    assert age_answer(birth.isoformat(), None, as_of) == ("met" if years >= 18 else "not_met")


@given(year=st.integers(1920, 2080), as_of=dates)
def test_age_answer_partial_year_decides_only_when_both_ends_agree(year: int, as_of: date) -> None:
    lo = age_answer(f"{year}-01-01", None, as_of)
    hi = age_answer(f"{year}-12-31", None, as_of)
    assert age_answer(str(year), None, as_of) == (lo if lo == hi else "unknown")


@given(birth=dates, as_of=dates, days=st.integers(-400, 400))
def test_deceased_on_or_before_as_of_is_not_met(birth: date, as_of: date, days: int) -> None:
    deceased = as_of + timedelta(days=days)
    got = age_answer(birth.isoformat(), deceased, as_of)
    if days <= 0:
        assert got == "not_met"
    else:
        assert got == age_answer(birth.isoformat(), None, as_of)


def test_birth_bounds() -> None:
    assert birth_bounds("2000") == (date(2000, 1, 1), date(2000, 12, 31))
    assert birth_bounds("2000-02") == (date(2000, 2, 1), date(2000, 2, 29))
    assert birth_bounds("2001-12") == (date(2001, 12, 1), date(2001, 12, 31))
    assert birth_bounds("2001-12-05") == (date(2001, 12, 5), date(2001, 12, 5))


def test_status_rule() -> None:
    ok = dict.fromkeys(CRITERIA[:4], "met") | dict.fromkeys(CRITERIA[4:], "clear")
    assert status_of(ok) == "eligible"
    assert status_of(ok | {"therapy": "unknown"}) == "review"
    assert status_of(ok | {"cns_lupus": "review"}) == "review"
    assert status_of(ok | {"therapy": "unknown", "age": "not_met"}) == "ineligible"
    assert status_of(ok | {"pregnancy_lactation": "excluded", "sle": "unknown"}) == "ineligible"


def test_scenarios_are_well_formed() -> None:
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    for sc in SCENARIOS:
        assert FHIR_ID.match(sc.patient_id), sc.name
        answers = sc.answers(date(2026, 11, 24))
        assert set(answers) == set(CRITERIA), sc.name
        for crit, ans in answers.items():
            allowed = INCLUSION_ANSWERS if crit in INCLUSIONS else EXCLUSION_ANSWERS
            assert ans in allowed, (sc.name, crit)
        assert answers["chronic_illness"] != "excluded"  # spec E4: never decided automatically


@pytest.mark.parametrize(
    "as_of", [date(2026, 11, 24), date(2028, 2, 29), date(2027, 12, 31), date(2030, 1, 1)]
)
def test_scenarios_build_for_any_as_of(as_of: date) -> None:
    for sc in SCENARIOS:
        rec = build_scenario(sc, as_of)
        assert rec.resources[0]["resourceType"] == "Patient"
        for r in rec.resources:
            assert FHIR_ID.match(r["id"]), r["id"]
    straddle = by_name()["age-partial-year-straddle"].answers(as_of)["age"]
    # A year-only birth straddles the 18th birthday unless S is the last day of the year.
    assert straddle == ("met" if (as_of.month, as_of.day) == (12, 31) else "unknown")
    assert by_name()["age-17"].answers(as_of)["age"] == "not_met"


def test_after_as_of_scenarios_really_are_after_as_of() -> None:
    as_of = date(2026, 11, 24)
    rec = build_scenario(by_name()["sle-after-as-of"], as_of)
    (sle,) = [r for r in rec.resources if r["resourceType"] == "Condition"]
    assert sle["onsetDateTime"] > as_of.isoformat() and sle["recordedDate"] > as_of.isoformat()
    rec = build_scenario(by_name()["therapy-after-as-of"], as_of)
    late = [
        r
        for r in rec.resources
        if r["resourceType"] == "MedicationStatement"
        and r["effectivePeriod"]["start"] > as_of.isoformat()
    ]
    assert len(late) == 1


def test_threshold_scenarios_encode_exact_days() -> None:
    as_of = date(2026, 11, 24)

    def supplies(name: str) -> list[tuple[str, int]]:
        rec = build_scenario(by_name()[name], as_of)
        return [
            (r["whenHandedOver"], r["daysSupply"]["value"])
            for r in rec.resources
            if r["resourceType"] == "MedicationDispense"
        ]

    assert [d for _, d in supplies("eligible-exactly-84-days")] == [84]
    assert [d for _, d in supplies("therapy-83-days")] == [83]
    for name, gap in (("eligible-merge-gap-30", 30), ("therapy-gap-31-no-merge", 31)):
        (h1, s1), (h2, _) = supplies(name)
        uncovered = (date.fromisoformat(h2) - date.fromisoformat(h1)).days - s1
        assert uncovered == gap
