"""Wire helpers: examples plus Hypothesis properties."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.fhir.wire import (
    SEARCH_PREFIXES,
    add_days,
    date_bounds,
    duration_days,
    format_prefixed,
    format_token,
    normalize_code,
    normalize_system,
    parse_date,
    parse_prefixed,
    reference_id,
    split_token,
)

dates = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05", date(2024, 3, 5)),
        ("2024-03-05T23:30:00-05:00", date(2024, 3, 5)),  # date as written, not UTC
        ("2024-03-05T00:10:00+14:00", date(2024, 3, 5)),
        ("2024-03-05T12:00:00.123Z", date(2024, 3, 5)),
        ("2024-03-05T12:00:00Z", date(2024, 3, 5)),
        ("1990-02", date(1990, 2, 1)),
        ("1990", date(1990, 1, 1)),
        ("2023-02-29", None),
        ("2023-13", None),
        ("05/03/2024", None),
        ("2024-03-05T", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_date_examples(text: str | None, expected: date | None) -> None:
    assert parse_date(text) == expected


@given(dates, st.sampled_from(["", "T00:00:00Z", "T23:59:59.999+14:00", "T10:00:00-12:00"]))
def test_parse_date_keeps_calendar_date(d: date, suffix: str) -> None:
    assert parse_date(d.isoformat() + suffix) == d


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [
        ("1990-02", date(1990, 2, 1), date(1990, 2, 28)),
        ("1992-02", date(1992, 2, 1), date(1992, 2, 29)),
        ("1990", date(1990, 1, 1), date(1990, 12, 31)),
        ("1990-02-03T04:05:06Z", date(1990, 2, 3), date(1990, 2, 3)),
    ],
)
def test_date_bounds_examples(text: str, lo: date, hi: date) -> None:
    assert date_bounds(text) == (lo, hi)


def test_date_bounds_rejects_garbage() -> None:
    assert date_bounds("1990-00") is None
    assert date_bounds(None) is None


@given(dates)
def test_date_bounds_of_partials_contain_the_date(d: date) -> None:
    for partial in (d.isoformat()[:4], d.isoformat()[:7], d.isoformat()):
        bounds = date_bounds(partial)
        assert bounds is not None
        lo, hi = bounds
        assert lo <= d <= hi
        assert parse_date(partial) == lo
        # Tight: lo and hi spell the partial, the days just outside them do not.
        assert lo.isoformat().startswith(partial) and hi.isoformat().startswith(partial)
        if lo > date.min:
            assert not (lo - timedelta(days=1)).isoformat().startswith(partial)
        if hi < date.max:
            assert not (hi + timedelta(days=1)).isoformat().startswith(partial)


@pytest.mark.parametrize(
    ("ref", "expected_type", "expected"),
    [
        ("Patient/123", None, "123"),
        ("Patient/123", "Patient", "123"),
        ("Group/123", "Patient", None),
        ("https://x/fhir/Patient/123/_history/2", "Patient", "123"),
        ("http://x/fhir/Patient/abc", None, "abc"),
        ("Patient/123/_history/7", None, "123"),
        ("urn:uuid:8c6d7b9e-0000-4000-8000-000000000001", "Patient",
         "8c6d7b9e-0000-4000-8000-000000000001"),
        ("#med1", None, "med1"),
        ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99", None, None),
        ("urn:oid:1.2.3", None, None),
        ("123", None, None),
        ("", None, None),
        (None, None, None),
        ({"reference": "Patient/9"}, "Patient", "9"),
        ({"display": "no reference"}, None, None),
    ],
)  # fmt: skip
def test_reference_id_examples(ref: object, expected_type: str | None, expected: str) -> None:
    assert reference_id(ref, expected_type) == expected  # type: ignore[arg-type]


ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
types = st.sampled_from(["Patient", "Medication", "Condition"])


@given(types, ids, st.sampled_from(["", "https://ehr.example/fhir/", "http://h/r4/"]))
def test_reference_id_round_trip(rtype: str, rid: str, base: str) -> None:
    assert reference_id(f"{base}{rtype}/{rid}", rtype) == rid
    assert reference_id(f"{base}{rtype}/{rid}/_history/3", rtype) == rid
    other = "Group" if rtype != "Group" else "Patient"
    assert reference_id(f"{base}{rtype}/{rid}", other) is None


def test_token_examples() -> None:
    assert split_token("http://loinc.org|82810-3") == ("http://loinc.org", "82810-3")
    assert split_token("82810-3") == (None, "82810-3")
    assert split_token("|x") == ("", "x")
    assert split_token("a\\|b|c") == ("a|b", "c")
    assert format_token("a|b", "c,d") == "a\\|b|c\\,d"
    assert format_token(None, "x") == "x"


@given(st.one_of(st.none(), st.text()), st.text())
def test_token_round_trip(system: str | None, code: str) -> None:
    assert split_token(format_token(system, code)) == (system, code)


def test_prefix_examples() -> None:
    assert parse_prefixed("ge2024-01-01") == ("ge", "2024-01-01")
    assert parse_prefixed("lt-5") == ("lt", "-5")
    assert parse_prefixed("2024") == ("eq", "2024")
    assert parse_prefixed("eb") == ("eq", "eb")
    assert format_prefixed("eq", "5", omit_eq=True) == "5"
    with pytest.raises(ValueError):
        format_prefixed("xx", "5")


@given(st.sampled_from(sorted(SEARCH_PREFIXES)), st.one_of(dates.map(date.isoformat),
       st.floats(allow_nan=False, allow_infinity=False).map(repr)))  # fmt: skip
def test_prefix_round_trip(prefix: str, value: str) -> None:
    assert parse_prefixed(format_prefixed(prefix, value)) == (prefix, value)
    assert parse_prefixed(format_prefixed(prefix, value, omit_eq=True)) == (prefix, value)


@pytest.mark.parametrize(
    ("quantity", "days"),
    [
        ({"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}, 30),
        ({"value": 2, "code": "wk"}, 14),
        ({"value": 3, "code": "mo"}, 90),
        ({"value": 1, "code": "a"}, 365),
        ({"value": 36, "code": "h"}, 1.5),
        ({"value": 2880, "code": "min"}, 2),
        ({"value": 10, "unit": "day"}, 10),
        ({"value": 10, "code": "furlong"}, None),
        ({"value": -1, "code": "d"}, None),
        ({"unit": "d"}, None),
    ],
)
def test_duration_days(quantity: dict, days: float | None) -> None:
    assert duration_days(quantity) == days


def test_duration_default_unit_and_add_days() -> None:
    assert duration_days({"value": 28}) is None
    assert duration_days({"value": 28}, default_unit="d") == 28
    assert add_days(date(2024, 1, 1), 1.5) == date(2024, 1, 3)  # a partial day counts
    assert add_days(date(9999, 12, 30), 10) is None


def test_normalisation_matches_the_contract() -> None:
    icd10 = "http://hl7.org/fhir/sid/icd-10-cm"
    assert normalize_system(icd10) == icd10
    assert normalize_code(icd10, "m32.14") == normalize_code(icd10, "M3214") == "M3214"
    assert normalize_code("http://snomed.info/sct", "55464009") == "55464009"
