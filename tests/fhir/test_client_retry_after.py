"""``parse_retry_after``: delta-seconds and HTTP-dates, swept with Hypothesis."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.fhir.client import parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("1.5", 1.5),
        ("-5", 0.0),  # a negative delay means now
        ("Sun, 01 Mar 2026 12:00:10 GMT", 10.0),
        ("Sun, 01 Mar 2026 13:00:00 GMT", 3600.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # a date in the past means now
        ("Sunday, 01-Mar-26 12:01:00 GMT", 60.0),  # RFC 850, obsolete but allowed
        ("Sun Mar  1 12:00:05 2026", 5.0),  # asctime, read as GMT
        (None, None),
        ("", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("Sun, 99 Mar 2026 12:00:00 GMT", None),
    ],
)
def test_examples(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@given(st.integers(min_value=0, max_value=10**9))
def test_delta_seconds_are_read_as_given(n: int) -> None:
    assert parse_retry_after(str(n), NOW) == float(n)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 1, 1)))
def test_an_http_date_is_the_time_until_it_or_zero(when: datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    value = email.utils.format_datetime(when, usegmt=True)
    assert parse_retry_after(value, NOW) == max(0.0, (when - NOW).total_seconds())
    # the same date seen one minute later waits one minute less, never below zero
    later = parse_retry_after(value, NOW + timedelta(minutes=1))
    assert later == max(0.0, (when - NOW).total_seconds() - 60)


@given(st.text(max_size=40))
def test_any_text_is_a_finite_non_negative_wait_or_none(value: str) -> None:
    got = parse_retry_after(value, NOW)
    assert got is None or 0.0 <= got < float("inf")
