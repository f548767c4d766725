"""The patient query: age at S from (partial) birth dates, sex, death on or before S."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria.io import parse_criteria
from fhir_cohort.engine.queries.patient import age_on, birth_range

VALUE = {"met": True, "not_met": False, "unknown": None}


def _trial(rule: dict[str, Any]) -> Any:
    return parse_criteria(
        {
            "id": "T",
            "title": "t",
            "version": "1",
            "source": "https://example.org",
            "criteria": [{"id": "q", "kind": "inclusion", "title": "q", "rule": rule}],
        }
    )


def ask(run: Any, rule: dict[str, Any], patient: tuple, as_of: str = "2025-06-30") -> Any:
    ans, reason = run.answer(
        "q", patients=[patient], trial=_trial(rule), as_of=dt.date.fromisoformat(as_of)
    )
    return VALUE[ans], reason


AGE = {"type": "patient", "min_age": 18}


@pytest.mark.parametrize(
    ("birth", "as_of", "expected"),
    [
        ("2007-06-30", "2025-06-30", True),  # 18th birthday on S
        ("2007-07-01", "2025-06-30", False),
        ("2007-05", "2025-06-30", True),  # every day of May 2007 gives 18
        ("2007-06", "2025-06-30", True),  # the last day of June is S
        ("2007-06", "2025-06-15", None),  # straddles the birthday
        ("2007", "2025-06-30", None),
        ("2007", "2025-12-31", True),
        ("2004-02-29", "2022-02-28", False),  # a leap-day birthday completes on 1 March
        ("2004-02-29", "2022-03-01", True),
        ("1950-01-01T00:00:00Z", "2025-06-30", True),
        (None, "2025-06-30", None),
        ("garbage", "2025-06-30", None),
        ("2030-01-01", "2025-06-30", False),  # born after S
    ],
)
def test_min_age(run, b, birth, as_of, expected):
    assert ask(run, AGE, b.pat(birth=birth), as_of)[0] is expected


@pytest.mark.parametrize(
    ("rule", "birth", "expected"),
    [
        ({"max_age": 65}, "1950-01-01", False),
        ({"max_age": 65}, "1970-01-01", True),
        ({"max_age": 65}, "1960-06-30", True),  # 65 on S: still <= 65
        ({"max_age": 65}, "1960-06-29", True),
        ({"max_age": 65}, "1959-06-30", False),  # 66 on S
        ({"max_age": 65}, "1960", True),  # 64 or 65: both <= 65
        ({"max_age": 64}, "1960", None),  # 64 or 65
        ({"min_age": 18, "max_age": 65}, "2000-01-01", True),
        ({"min_age": 18, "max_age": 65}, "2010-01-01", False),
        ({"min_age": 18, "max_age": 65}, "1940-01-01", False),
    ],
)
def test_age_bounds(run, b, rule, birth, expected):
    got, reason = ask(run, {"type": "patient", **rule}, b.pat(birth=birth))
    rng = birth_range(birth)
    ages = {age_on(rng[0], dt.date(2025, 6, 30)), age_on(rng[1], dt.date(2025, 6, 30))}
    lo, hi = rule.get("min_age", -1), rule.get("max_age", 999)
    oks = {lo <= a <= hi for a in ages}
    assert got is (oks.pop() if len(oks) == 1 else None)
    assert got is expected
    assert "at screening" in reason


def test_reasons_name_the_age(run, b):
    assert ask(run, AGE, b.pat(birth="2000-01-01")) == (True, "age 25 at screening")
    assert ask(run, AGE, b.pat(birth="2010-01-01")) == (
        False,
        "age 15 at screening, not >= 18",
    )
    assert ask(run, AGE, b.pat(birth="2007")) == (
        None,
        "age 17-18 at screening: partial birth date is ambiguous",
    )
    assert ask(run, AGE, b.pat(birth=None)) == (None, "birth date missing")
    # A rule's own reason replaces the generated one when it is true.
    assert ask(run, {**AGE, "reason": "adult"}, b.pat(birth="2000-01-01")) == (True, "adult")


@pytest.mark.parametrize(
    ("deceased", "date", "high", "expected"),
    [
        (True, "2025-01-01", None, False),  # before S
        (True, "2025-06-30", None, False),  # on S
        (True, "2025-07-01", None, True),  # after S: ignored
        (True, None, None, False),  # deceasedBoolean true without a date
        (True, "2025-06-01", "2025-07-31", None),  # a partial date holding S
        (False, None, None, True),
        (None, None, None, True),
    ],
)
def test_deceased(run, b, deceased, date, high, expected):
    p = b.pat(
        birth="1980-01-01",
        deceased=deceased,
        deceased_date=b.d(date) if date else None,
        deceased_high=b.d(high) if high else None,
    )
    assert ask(run, AGE, p)[0] is expected
    # deceased_is_false: false reads no death at all.
    assert ask(run, {**AGE, "deceased_is_false": False}, p)[0] is True


def test_death_decides_before_the_age(run, b):
    dead = {"deceased": True, "deceased_date": b.d("2025-01-01")}
    assert ask(run, AGE, b.pat(birth=None, **dead)) == (
        False,
        "deceased on or before the screening date",
    )
    unsure = {
        "deceased": True,
        "deceased_date": b.d("2025-06-01"),
        "deceased_high": b.d("2025-07-31"),
    }
    # A death that may be before S: unknown when the age holds, false when it fails.
    got = ask(run, AGE, b.pat(birth="1980-01-01", **unsure))
    assert got[0] is None and "age 45 at screening" in got[1] and "death date" in got[1]
    assert ask(run, AGE, b.pat(birth="2010-01-01", **unsure))[0] is False
    assert ask(run, AGE, b.pat(birth=None, **unsure))[0] is None


@pytest.mark.parametrize(
    ("field", "values", "gender", "expected"),
    [
        ("sexes", ["female"], "female", True),
        ("sexes", ["female"], "male", False),
        ("sexes", ["female", "other"], "other", True),
        ("sexes", ["female"], None, None),  # not recorded: unknown
        ("sexes_not", ["male"], "male", False),
        ("sexes_not", ["male"], "female", True),
        ("sexes_not", ["male"], None, True),  # not recorded: not excluded by sex
        ("sexes_not", ["male"], "unknown", True),
    ],
)
def test_sex(run, b, field, values, gender, expected):
    rule = {"type": "patient", field: values}
    assert ask(run, rule, b.pat(gender=gender, birth=None))[0] is expected


def test_tests_combine_with_kleene_and(run, b):
    rule = {"type": "patient", "min_age": 18, "sexes": ["female"]}
    assert ask(run, rule, b.pat(birth="2000-01-01", gender="female"))[0] is True
    assert ask(run, rule, b.pat(birth="2000-01-01", gender="male"))[0] is False
    assert ask(run, rule, b.pat(birth=None, gender="male"))[0] is False  # false beats unknown
    assert ask(run, rule, b.pat(birth=None, gender="female"))[0] is None
    assert ask(run, rule, b.pat(birth="2010-01-01", gender=None))[0] is False


def test_match_possible_turns_true_into_unknown(run, b):
    rule = {**AGE, "match": "possible"}
    assert ask(run, rule, b.pat(birth="2000-01-01"))[0] is None
    assert ask(run, rule, b.pat(birth="2010-01-01"))[0] is False


@given(
    birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31)),
    precision=st.sampled_from(["day", "month", "year"]),
    as_of=st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2040, 12, 31)),
)
def test_partial_birth_date_decides_only_when_every_birthday_agrees(birth, precision, as_of):
    from fhir_cohort.engine.queries.patient import _age_ok

    raw = {"day": birth.isoformat(), "month": birth.isoformat()[:7], "year": str(birth.year)}[
        precision
    ]
    lo, hi = birth_range(raw)
    node = type("N", (), {"min_age": 18, "max_age": None})()
    first, last = _age_ok(age_on(lo, as_of), node), _age_ok(age_on(hi, as_of), node)
    # Completed years only fall as the birthday moves later: the two ends bound every day.
    day = lo
    while day <= hi:
        assert age_on(hi, as_of) <= age_on(day, as_of) <= age_on(lo, as_of)
        day += dt.timedelta(days=29)
    assert (first == last) or precision != "day"


@pytest.mark.parametrize("extra", [{"within": {"days": 30}}, {"min_count": 2}])
def test_window_and_count_are_refused(extra):
    from fhir_cohort.errors import CriteriaError

    with pytest.raises(CriteriaError, match="patient query"):
        _trial({**AGE, **extra})
