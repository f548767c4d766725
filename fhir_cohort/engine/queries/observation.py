"""The ``observation`` query: results of tests in value sets, read one of four ways.

``result: positive`` reads positivity by the lab precedence of engine/labs.py (interpretation,
coded result, words, number or titer against the reference range); ``answer_value_sets`` /
``answer_texts`` read a coded, boolean or text answer; ``value`` compares a number with a
UCUM threshold (engine/units.py converts); with no test, a result on record is the finding
(unless its valueBoolean says false). Each counted result gets a three-valued place in the
window and a three-valued verdict; the query is Kleene ``at_least min_count`` over distinct
resources of (place and verdict), or with ``pick: latest`` (``earliest``) the verdict of the
latest (first) result in the window. ``missing`` answers when no result is (surely) in the window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fhir_cohort.criteria.language import ObservationQuery
from fhir_cohort.engine.evaluators.common import Evidence, after_as_of, iso, span
from fhir_cohort.engine.labs import (
    EQUIVOCAL,
    NEGATIVE,
    POSITIVE,
    Reading,
    counted_rows,
    interpret,
    observation_evidence,
    observation_high,
    observation_value,
)
from fhir_cohort.engine.queries import QueryType, register
from fhir_cohort.engine.queries.window import place, window_range
from fhir_cohort.engine.rules import Result, Scope
from fhir_cohort.engine.units import compare_quantity


def _and(a: bool | None, b: bool | None) -> bool | None:
    """Kleene and."""
    if a is False or b is False:
        return False
    return True if a and b else None


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


@dataclass
class _Rec:
    row: Any
    place: bool | None  # in the window (three-valued)
    verdict: bool | None  # the test (three-valued)
    why: str  # what the test read, for evidence and reasons
    reading: Reading | None = None
    before: bool = False  # dated (or undated) before the window

    @property
    def hit(self) -> bool | None:
        return _and(self.place, self.verdict)


def _norm(s: Any) -> str:
    return " ".join(str(s or "").lower().split())


def _answer(node: ObservationQuery, scope: Scope, row: Any) -> tuple[bool, str]:
    """A coded answer in answer_value_sets, else (no other coded answer) a text or boolean
    answer in answer_texts; with neither given, the result itself is the finding unless its
    valueBoolean is false."""
    yes = node.label or "matching answer"
    if not node.answer_value_sets and not node.answer_texts:
        if row.value_type == "boolean" and row.value_string == "false":
            return False, "answered no"
        return True, node.label or "on record"
    if scope.ctx.token_in(node.answer_value_sets, row.value_codes):
        return True, yes
    if row.value_codes and row.value_type != "boolean":
        return False, "other answer"  # coded with another answer
    if _norm(row.value_string) in {_norm(t) for t in node.answer_texts}:
        return True, yes
    return False, "other answer"


def _verdict(node: ObservationQuery, scope: Scope, row: Any) -> tuple[bool | None, str, Any]:
    if node.result == "positive":
        reading = interpret(row, node.lab_rules, scope.ctx)
        if reading.result == POSITIVE:
            v: bool | None = True
        elif reading.result == NEGATIVE:
            v = False
        else:
            v = None if node.equivocal == "unknown" else False
        return v, f"{reading.result} ({reading.rule})", reading
    if node.value is not None:
        v, why = compare_quantity(row, observation_value(row, grouping=True), node.value)
        return v, why, None
    ok, shown = _answer(node, scope, row)
    return ok, shown, None


def _records(node: ObservationQuery, scope: Scope, rng: Any) -> tuple[list[_Rec], list[Evidence]]:
    obs = scope.data.observations
    rows, skipped = counted_rows(node.value_sets, node.lab_rules, scope.ctx, obs)
    out: list[_Rec] = []
    for row in rows:
        when = span(row.date, observation_high(row))
        if node.within is None:
            # No window: anything on or before S; a partial date holding S cannot be placed.
            p: bool | None = after_as_of(row.date, scope.as_of, observation_high(row)) is False
            p = None if not p else True
            before = False
        else:
            p = place(when, node.within, rng)
            dated_rng = rng is not None and not isinstance(rng, str)
            before = p is False and dated_rng and (when is None or when[1] < rng.start)
        v, why, reading = _verdict(node, scope, row)
        out.append(_Rec(row, p, v, why, reading, before))
    return out, skipped


def _one(recs: list[_Rec], pick: str) -> list[_Rec]:
    """The results that may be the latest (or earliest) one in the window: ties and partial
    dates can leave several."""
    sure = [r for r in recs if r.place is True]
    maybe = [r for r in recs if r.place is not False]
    if not maybe:
        return []

    def lo(r: _Rec) -> dt.date:
        return r.row.date

    def hi(r: _Rec) -> dt.date:
        return observation_high(r.row) or r.row.date

    if any(r.row.date is None for r in maybe):
        return maybe  # an undated result counted in the window cannot be ordered
    if pick == "earliest":
        ceiling = min(hi(r) for r in sure) if sure else max(hi(r) for r in maybe)
        return [r for r in maybe if lo(r) <= ceiling]
    floor = max(lo(r) for r in sure) if sure else min(lo(r) for r in maybe)
    return [r for r in maybe if hi(r) >= floor]


def _by_resource(recs: list[_Rec]) -> dict[str, bool | None]:
    """Best hit per resource (a resource may give several rows: codings, components)."""
    best: dict[str, bool | None] = {}
    for r in recs:
        rid = r.row.resource_id
        best[rid] = _or(best.get(rid, False), r.hit) if rid in best else r.hit
    return best


def _evaluate(node: ObservationQuery, scope: Scope) -> Result:
    # None: anchored on a definition with no event (nothing is in the window).
    rng = window_range(node.within, scope) if node.within is not None else None
    label = node.label or "test"
    w = describe(node.within) if node.within is not None else "on record"
    recs, evidence = _records(node, scope, rng)
    kept, patient = scope.ctx.kept, scope.data.patient
    if kept is not None and node.result == "positive" and patient is not None:
        # The counted tests with their readings, as engine.labs.read_tests gives them.
        kept.put(node, patient.patient_id, [(r.row, r.reading) for r in recs])
    for r in recs:
        evidence.append(_evidence(r, node, w))
    counted = recs if node.pick == "any" else _one(recs, node.pick)
    hits = _by_resource(counted)
    n_true = sum(v is True for v in hits.values())
    n_maybe = sum(v is None for v in hits.values())
    need = node.min_count
    value: bool | None = True if n_true >= need else None if n_true + n_maybe >= need else False
    if node.pick != "any" and len(set(hits.values())) > 1:
        value = None  # results that may each be the latest (earliest) disagree
    places = [r.place for r in counted]
    exists: bool | None = True if True in places else None if None in places else False
    missing: bool | None = False if node.missing == "false" else None
    value = _or(value, _and(None if exists is None else not exists, missing))
    old_positive = node.result == "positive" and any(r.before and r.verdict for r in recs)
    # An older positive keeps the answer open, unless the one picked result in the window
    # decides.
    still_open = node.pick == "any" or exists is not True
    if old_positive and node.positive_before_window == "unknown" and still_open:
        value = _or(value, None)
    if value is True and node.match == "possible":
        value = None
    events = [_span(r.row) for r in counted if r.hit is True]
    reason = _reason(node, label, w, value, counted, recs, exists)
    return Result(value, reason, evidence, [], [e for e in events if e is not None])


def _span(row: Any) -> tuple[dt.date, dt.date] | None:
    return span(row.date, observation_high(row))


def _evidence(r: _Rec, node: ObservationQuery, w: str) -> Evidence:
    row = r.row
    if row.date is None:
        note = f"{r.why}, undated"
    elif r.place is None:
        where = "the as-of date" if node.within is None else f"the {_noun(node.within)}"
        note = f"{r.why}, partial date straddles {where}"
    else:
        note = r.why if r.place else f"{r.why}, not {w}"
    if r.reading is not None:
        return observation_evidence(row, r.reading, note)
    ev = observation_evidence(row, None, note)
    value = ",".join(row.value_codes or ()) or row.value_string
    if value is None and row.value_number is not None:
        value = f"{row.value_comparator or ''}{row.value_number:g} {row.value_unit or ''}".strip()
    return ev._replace(value=value)


def _reason(
    node: ObservationQuery,
    label: str,
    w: str,
    value: bool | None,
    counted: list[_Rec],
    recs: list[_Rec],
    exists: bool | None,
) -> str:
    positive = node.result == "positive"
    what = f"positive {label}" if positive else label
    if value is True or (value is None and node.match == "possible" and _first(counted, True)):
        if node.reason:
            return node.reason
        first = _first(counted, True)
        assert first is not None
        row = first.row
        if positive and node.label is None:
            return f"positive {row.display or row.code} on {iso(row.date)}"
        if node.value is not None:
            return f"{label} {first.why} on {iso(row.date)}"
        return f"{what} {w}"
    if value is None:
        unsure = [r for r in counted if r.verdict is True and r.place is None]
        if unsure:
            if unsure[0].row.date is None:
                return f"undated {what}"
            return f"{what}, date too imprecise to place {w}"
        if positive and any(r.before and r.verdict for r in recs):
            what = f"positive {node.label}" if node.label else "positive"
            return f"{what} only before the {_noun(node.within)}"
        unread = [r for r in counted if r.verdict is None and r.place is not False]
        if unread:
            r = unread[0]
            if positive and r.reading is not None and r.reading.result == EQUIVOCAL:
                if r.reading.rule == "no reference range":
                    return f"{label} with no reference range {w}"
                return f"equivocal {label} {w}"
            return f"{label} {r.why}"
        if exists is None:
            return f"no {label} surely {w} (partial dates)"
        return f"no {label} {w}"
    if exists is not True:
        return f"no {label} {w}"
    if positive:
        return f"{node.label or 'tested'} {w}, all negative"
    if node.value is not None:
        last = [r for r in counted if r.place is True]
        shown = "; ".join(r.why for r in last[:3])
        return f"{label} {w}: {shown}"
    return f"no {what} {w}"


def _first(recs: list[_Rec], hit: bool | None) -> _Rec | None:
    return next((r for r in recs if r.hit is hit), None)


def _reads(node: ObservationQuery) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    # counted_rows reads only rows of a test in the query's value sets.
    return frozenset({"observations"}), frozenset(), frozenset(node.value_sets)


# ----------------------------------------------------------------- reasons


def _noun(window: Any) -> str:
    """ "365-day window", "6-month window before surgery"."""
    n, unit = _length(window)
    text = f"{n}-{unit} window"
    if window.anchor != "as_of":
        text += f" {'after' if window.after else 'before'} {window.anchor}"
    return text


def _length(window: Any) -> tuple[int, str]:
    if window.days is not None:
        return window.days, "day"
    if window.months is not None:
        return window.months, "month"
    return window.years, "year"


def describe(window: Any) -> str:
    """ "within 30 days", "within 6 months after surgery" (for reasons)."""
    n, unit = _length(window)
    text = f"within {n} {unit}{'s' if n != 1 else ''}"
    if window.anchor != "as_of":
        text += f" {'after' if window.after else 'before'} {window.anchor}"
    return text


register(QueryType("observation", _evaluate, _reads))
