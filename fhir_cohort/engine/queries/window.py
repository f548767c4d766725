"""Windows of the criteria language: where a window lies for one patient, and whether a record's
(possibly partial) date lies in it, three-valued.

A window is ``days`` / ``months`` / ``years`` before its anchor (or after it with ``after:
true``), both ends inclusive. The anchor is S, or the event date of a trial definition: its
latest (or earliest) qualifying record. Months and years are calendar arithmetic (the day
clamped to the month's length). Nothing after S is ever inside a window.

A partial anchor date (a definition's record dated "2024-05") leaves each end of the window
uncertain: :class:`WindowRange` keeps the widest window (``start``, ``end``: what may be
inside) and the narrowest (``sure_start``, ``sure_end``: what is inside under every reading).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fhir_cohort.engine.evaluators.common import Span, add_months, subtract_months


class WindowRange(tuple):  # type: ignore[type-arg]
    """``(start, end)``: the widest reading of the window (unpacks as a pair).

    ``sure_start`` / ``sure_end`` bound what lies inside under every reading of a partial
    anchor date (equal to start/end for a full date; sure_start > sure_end when no day is
    surely inside). ``uncertain``: the anchor definition itself is unknown, so a record inside
    is only possibly in the window.
    """

    sure_start: dt.date
    sure_end: dt.date
    uncertain: bool

    def __new__(
        cls,
        start: dt.date,
        end: dt.date,
        sure_start: dt.date | None = None,
        sure_end: dt.date | None = None,
        uncertain: bool = False,
    ) -> WindowRange:
        self = super().__new__(cls, (start, end))
        self.sure_start = start if sure_start is None else sure_start
        self.sure_end = end if sure_end is None else sure_end
        self.uncertain = uncertain
        return self

    @property
    def start(self) -> dt.date:
        return self[0]  # type: ignore[no-any-return]

    @property
    def end(self) -> dt.date:
        return self[1]  # type: ignore[no-any-return]

    @property
    def empty(self) -> bool:
        return self.start > self.end

    def __repr__(self) -> str:
        return (
            f"WindowRange({self.start}, {self.end}, sure={self.sure_start}..{self.sure_end}"
            f"{', uncertain' if self.uncertain else ''})"
        )


Unknown = Literal["unknown"]
UNKNOWN: Unknown = "unknown"


def shift(d: dt.date, window: Any, sign: int) -> dt.date:
    """``d`` moved by the window's length, back (sign -1) or forward (+1); calendar months and
    years. Saturates at the ends of the calendar instead of overflowing."""
    try:
        if window.days is not None:
            return d + dt.timedelta(days=sign * window.days)
        months = window.months if window.months is not None else 12 * window.years
        return add_months(d, months) if sign > 0 else subtract_months(d, months)
    except (OverflowError, ValueError):
        return dt.date.max if sign > 0 else dt.date.min


def anchor_span(events: list[Span], which: str) -> Span | None:
    """Bounds of the latest (or earliest) event date: the latest of several partial dates is at
    least the largest earliest-reading and at most the largest latest-reading."""
    if not events:
        return None
    if which == "earliest":
        return min(lo for lo, _ in events), min(hi for _, hi in events)
    return max(lo for lo, _ in events), max(hi for _, hi in events)


def range_from(anchor: Span, window: Any, as_of: dt.date, uncertain: bool = False) -> WindowRange:
    """The window around an anchor date range, cut at S."""
    alo, ahi = anchor
    if window.after:
        start, end = alo, shift(ahi, window, +1)
        sure_start, sure_end = ahi, shift(alo, window, +1)
    else:
        start, end = shift(alo, window, -1), ahi
        sure_start, sure_end = shift(ahi, window, -1), alo
    return WindowRange(start, min(end, as_of), sure_start, min(sure_end, as_of), uncertain)


def window_range(window: Any, scope: Any) -> WindowRange | Unknown | None:
    """Where ``window`` lies for the patient in ``scope``.

    Anchored on S: ``[S - N, S]``. Anchored on a definition: around its event date; None when
    the definition is false with no event (no window: nothing is in it); ``"unknown"`` when it
    is not false but gives no date to anchor on. An unknown definition with events gives a
    window whose matches are only possible (``uncertain``).
    """
    as_of = scope.as_of
    if window.anchor == "as_of":
        # The same for every patient: computed once per window length (a hot path of a pass).
        key = (as_of, window.days, window.months, window.years, window.after)
        windows = scope.ctx.windows
        hit = windows.get(key)
        if hit is None:
            hit = windows[key] = range_from((as_of, as_of), window, as_of)
        return hit
    res = scope.definition(window.anchor)
    anchor = anchor_span(list(res.events), window.anchor_event)
    if anchor is None:
        return None if res.value is False else UNKNOWN
    return range_from(anchor, window, as_of, uncertain=res.value is not True)


def place(when: Span | None, window: Any, rng: WindowRange | Unknown | None) -> bool | None:
    """Whether a record dated ``when`` (None: undated) lies in the window, three-valued.

    True when every reading of its date (and of the window) is inside, False when none is,
    None when a partial date straddles an end. An undated record counts per
    ``window.undated``. Nothing dated after S is inside.
    """
    if rng is None or (not isinstance(rng, str) and rng.empty):
        return False
    if when is None:
        if window.undated == "outside":
            return False
        if window.undated == "unknown" or isinstance(rng, str) or rng.uncertain:
            return None
        return True
    if isinstance(rng, str):
        return None
    lo, hi = when
    if hi < rng.start or lo > rng.end:
        return False
    if rng.sure_start <= lo and hi <= rng.sure_end:
        return None if rng.uncertain else True
    return None
