"""engine/queries/window.py: where a window lies and whether a (partial) date is in it."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria.language import Window
from fhir_cohort.engine.evaluators.common import add_months, in_window, subtract_months
from fhir_cohort.engine.queries.window import (
    WindowRange,
    anchor_span,
    place,
    range_from,
    window_range,
)
from fhir_cohort.engine.rules import Result

S = dt.date(2025, 6, 30)
DAY = dt.timedelta(days=1)


class FakeScope:
    """S and one trial definition's result."""

    def __init__(self, value: bool | None = True, events: list[Any] | None = None) -> None:
        self.as_of = S
        self.ctx = SimpleNamespace(windows={})  # where window_range keeps S-anchored windows
        self.res = Result(value, "def", events=list(events or []))
        self.asked: list[str] = []

    def definition(self, name: str) -> Result:
        self.asked.append(name)
        return self.res


dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2030, 12, 31))
lengths = st.integers(min_value=0, max_value=800)
undated = st.sampled_from(["outside", "inside", "unknown"])


def _span(lo: dt.date, extra: int) -> tuple[dt.date, dt.date]:
    return lo, lo + dt.timedelta(days=extra)


spans = st.builds(_span, dates, st.integers(min_value=0, max_value=400))


# ------------------------------------------------------------------------------- anchored on S
@given(days=lengths, when=spans, und=undated)
def test_as_of_days_window_is_the_old_within(days, when, und):
    """[S - N days, S], three-valued exactly as the evaluators' in_window."""
    w = Window(days=days, undated=und)
    rng = window_range(w, FakeScope())
    assert tuple(rng) == (S - dt.timedelta(days=days), S)
    assert place(when, w, rng) == in_window(when, S - dt.timedelta(days=days), S)


@given(months=st.integers(min_value=0, max_value=60), when=spans)
def test_months_and_years_are_calendar_arithmetic(months, when):
    w = Window(months=months)
    assert tuple(window_range(w, FakeScope())) == (subtract_months(S, months), S)
    if months % 12 == 0:
        wy = Window(years=months // 12)
        assert tuple(window_range(wy, FakeScope())) == (subtract_months(S, months), S)
        assert place(when, wy, window_range(wy, FakeScope())) == place(
            when, w, window_range(w, FakeScope())
        )


def test_month_end_clamps():
    scope = FakeScope()
    scope.as_of = dt.date(2024, 3, 31)
    assert window_range(Window(months=1), scope)[0] == dt.date(2024, 2, 29)
    assert window_range(Window(years=1), scope)[0] == dt.date(2023, 3, 31)
    scope.as_of = dt.date(2024, 2, 29)
    assert window_range(Window(years=1), scope)[0] == dt.date(2023, 2, 28)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ((S, S), True),  # both ends inclusive
        ((S - 90 * DAY, S - 90 * DAY), True),
        ((S - 91 * DAY, S - 91 * DAY), False),
        ((S + DAY, S + DAY), False),  # after S: never inside
        ((S - 100 * DAY, S - 80 * DAY), None),  # partial date straddling the start
        ((S - 10 * DAY, S + 10 * DAY), None),  # partial date straddling S
        ((dt.date(2025, 6, 1), dt.date(2025, 6, 30)), True),  # "2025-06" wholly inside
    ],
)
def test_as_of_edges(when, expected):
    w = Window(days=90)
    assert place(when, w, window_range(w, FakeScope())) is expected


@pytest.mark.parametrize(
    ("und", "expected"), [("outside", False), ("inside", True), ("unknown", None)]
)
def test_undated_counts_per_the_window(und, expected):
    w = Window(days=30, undated=und)
    assert place(None, w, window_range(w, FakeScope())) is expected


# ------------------------------------------------------------------- anchored on a definition
def test_anchor_reads_the_definition_latest_or_earliest_event():
    ev = [(dt.date(2024, 1, 10),) * 2, (dt.date(2024, 3, 1),) * 2]
    scope = FakeScope(True, ev)
    w = Window(days=30, anchor="dx")
    assert tuple(window_range(w, scope)) == (dt.date(2024, 1, 31), dt.date(2024, 3, 1))
    assert scope.asked == ["dx"]
    w = Window(days=30, anchor="dx", anchor_event="earliest")
    assert tuple(window_range(w, scope)) == (dt.date(2023, 12, 11), dt.date(2024, 1, 10))
    w = Window(days=30, anchor="dx", after=True)
    assert tuple(window_range(w, scope)) == (dt.date(2024, 3, 1), dt.date(2024, 3, 31))


def test_after_window_never_passes_s():
    scope = FakeScope(True, [(S - 10 * DAY, S - 10 * DAY)])
    w = Window(days=30, anchor="dx", after=True)
    rng = window_range(w, scope)
    assert tuple(rng) == (S - 10 * DAY, S)
    assert place((S + DAY, S + DAY), w, rng) is False
    assert place((S, S), w, rng) is True


@pytest.mark.parametrize(
    ("value", "expected"), [(False, None), (None, "unknown"), (True, "unknown")]
)
def test_no_anchor_event(value, expected):
    """A false definition: no window, nothing in it; otherwise the window cannot be placed."""
    w = Window(days=30, anchor="dx", undated="inside")
    rng = window_range(w, FakeScope(value, []))
    assert rng == expected
    assert place((S, S), w, rng) is (False if value is False else None)
    assert place(None, w, rng) is (False if value is False else None)
    # undated: outside never counts, whatever the window.
    assert place(None, Window(days=30, anchor="dx"), rng) is False


def test_unknown_definition_with_events_only_possibly_places():
    w = Window(days=30, anchor="dx")
    rng = window_range(w, FakeScope(None, [(S - 5 * DAY, S - 5 * DAY)]))
    assert place((S - 10 * DAY,) * 2, w, rng) is None
    assert place((S - 100 * DAY,) * 2, w, rng) is False


def test_partial_anchor_date_makes_the_ends_uncertain():
    # Anchor "2024-05": the latest event lies somewhere in May 2024.
    anchor = (dt.date(2024, 5, 1), dt.date(2024, 5, 31))
    w = Window(days=10, anchor="dx")
    rng = window_range(w, FakeScope(True, [anchor]))
    assert tuple(rng) == (dt.date(2024, 4, 21), dt.date(2024, 5, 31))
    assert (rng.sure_start, rng.sure_end) == (dt.date(2024, 5, 21), dt.date(2024, 5, 1))
    assert place((dt.date(2024, 4, 25),) * 2, w, rng) is None
    assert place((dt.date(2024, 4, 20),) * 2, w, rng) is False
    assert place((dt.date(2024, 6, 1),) * 2, w, rng) is False


@given(
    events=st.lists(spans, min_size=1, max_size=4),
    n=st.integers(min_value=0, max_value=120),
    unit=st.sampled_from(["days", "months"]),
    after=st.booleans(),
    which=st.sampled_from(["latest", "earliest"]),
    when=spans,
)
def test_place_agrees_with_every_reading(events, n, unit, after, which, when):
    """True only if every reading of the anchor and the record puts it inside; False only if
    none does. Checked against the extreme readings (the ends are monotone in both)."""
    events = [e for e in events if e[0] <= S] or [(S, S)]
    w = Window(**{unit: n}, anchor="dx", after=after, anchor_event=which)
    rng = window_range(w, FakeScope(True, events))
    got = place(when, w, rng)
    a_lo, a_hi = anchor_span(events, which)
    readings = []
    for a in {a_lo, a_hi}:
        single = range_from((a, a), w, S)
        for d in {when[0], when[1]}:
            readings.append(single.start <= d <= single.end and d <= S)
    if got is True:
        assert all(readings)
    if got is False:
        assert not any(readings)
    if all(readings) and when[0] <= S and when[1] <= S and (a_lo == a_hi):
        # A full anchor and a record wholly inside at both of its ends is inside.
        assert got is True


@given(d=dates, n=st.integers(min_value=0, max_value=240))
def test_months_round_trip_never_passes_the_day(d, n):
    assert subtract_months(add_months(d, n), n) <= d


def test_window_range_is_a_pair():
    rng = WindowRange(S - DAY, S)
    start, end = rng
    assert (start, end) == (S - DAY, S)
    assert (rng.sure_start, rng.sure_end, rng.uncertain) == (S - DAY, S, False)
    assert not rng.empty
