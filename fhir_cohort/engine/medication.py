"""Medication exposure: intervals, eras and agents behind the ``medication`` query (spec I3).

Day arithmetic (documented in docs/criteria.md):
- every interval is [start, end] with both ends inclusive (a one-day record has start == end);
- per_dose rows (MedicationAdministration) cover [start, end + coverage - 1]: a 1-day coverage
  covers the dose day itself;
- gap between two sorted intervals = next.start - prev.end - 1 days = the number of uncovered
  days between them; intervals merge into one era when gap <= persistence_gap_days (overlapping
  or adjacent intervals have gap <= 0);
- eras are merged over the whole history first, then clipped to the query's window W (e.g.
  [S - 24 calendar months, S], the day clamped to the month's end; no window: everything up
  to S); days = clipped end - clipped start + 1.

Every function takes the query (:class:`~fhir_cohort.criteria.language.MedicationQuery`): its
value sets, agent grouping, status rules, systemic-use lists and coverage table. Nothing here
knows a trial's drugs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fhir_cohort.engine.evaluators.common import Context, Evidence, iso, subtract_months

Interval = tuple[dt.date, dt.date]

ERA_COLUMNS = ("patient_id", "requirement", "agent", "value_set", "start", "end", "days")


# --------------------------------------------------------------------------- day arithmetic


def merge_intervals(intervals: Iterable[Interval], gap_days: int) -> list[Interval]:
    """Merge inclusive intervals whose gap (uncovered days between) is <= gap_days.

    >>> d = dt.date
    >>> a = (d(2024, 1, 1), d(2024, 1, 10))
    >>> merge_intervals([a, (d(2024, 2, 10), d(2024, 2, 20))], 30)  # gap Jan 11..Feb 9 = 30
    [(datetime.date(2024, 1, 1), datetime.date(2024, 2, 20))]
    >>> len(merge_intervals([a, (d(2024, 2, 11), d(2024, 2, 20))], 30))  # gap 31
    2
    """
    eras: list[Interval] = []
    for start, end in sorted(intervals):
        if eras:
            s0, e0 = eras[-1]
            if (start - e0).days - 1 <= gap_days:
                eras[-1] = (s0, max(e0, end))
                continue
        eras.append((start, end))
    return eras


def window_start(as_of: dt.date, window_months: int) -> dt.date:
    return subtract_months(as_of, window_months)


def clipped_days(era: Interval, w_start: dt.date, w_end: dt.date) -> int:
    """Days of the era inside [w_start, w_end], both ends inclusive (0 when outside)."""
    s = max(era[0], w_start)
    e = min(era[1], w_end)
    return max(0, (e - s).days + 1)


def _overlaps(iv: Interval, lo: dt.date, hi: dt.date) -> bool:
    return iv[0] <= hi and iv[1] >= lo


@dataclass(frozen=True)
class Bounds:
    """Where a query's window lies for one patient: ``start``..``end`` may be inside,
    ``sure_start``..``sure_end`` is inside under every reading of a partial anchor date;
    ``uncertain``: the anchor itself is unknown (a match is only possible)."""

    start: dt.date
    end: dt.date
    sure_start: dt.date
    sure_end: dt.date
    uncertain: bool = False

    @classmethod
    def of(cls, rng: Any) -> Bounds:
        """From a :class:`~fhir_cohort.engine.queries.window.WindowRange`."""
        return cls(rng.start, rng.end, rng.sure_start, rng.sure_end, bool(rng.uncertain))

    @classmethod
    def everything(cls, as_of: dt.date, uncertain: bool = False) -> Bounds:
        """No window: every day up to S."""
        return cls(dt.date.min, as_of, dt.date.min, as_of, uncertain)


# --------------------------------------------------------------------------- record rules


def ignored_note(row: Any, q: Any) -> str | None:
    """Why a record never counts under the query's status rules, or None."""
    r = q.status_rules
    rt, status = row.resource_type, row.status
    if rt == "MedicationStatement":
        if status in r.statement_ignored_statuses:
            return f"status {status}"
    elif rt == "MedicationRequest":
        if status in r.request_ignored_statuses:
            return f"status {status}"
        if row.intent in r.request_ignored_intents:
            return f"intent {row.intent}"
        if r.request_ignore_do_not_perform and row.do_not_perform is True:
            return "doNotPerform"
    elif rt == "MedicationDispense":
        if status is None:
            if not r.dispense_count_missing_status:
                return "status missing"
        elif status not in r.dispense_counted_statuses:
            return f"status {status}"
    elif rt == "MedicationAdministration":
        if status is None:
            if not r.administration_count_missing_status:
                return "status missing"
        elif status not in r.administration_counted_statuses:
            return f"status {status}"
    return None


def _words_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None

    def one(w: str) -> str:
        w = w.strip().lower()
        if w.endswith("*"):
            return re.escape(w[:-1]) + r"[a-z]*"
        return re.escape(w)

    alts = sorted((one(w) for w in words if w.strip()), key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(alts) + r")(?![a-z])")


_PATTERNS: dict[tuple[str, ...], re.Pattern[str] | None] = {}


def non_systemic_note(row: Any, q: Any, ctx: Context) -> str | None:
    """A note when route or dose form is local (topical, inhaled, ...), else None."""
    if ctx.token_in(q.non_systemic_routes, row.route_codes):
        return "non-systemic route not counted"
    if ctx.token_in(q.non_systemic_forms, row.form_codes):
        return "topical/inhaled form not counted"
    key = tuple(q.non_systemic_words)
    if key not in _PATTERNS:
        _PATTERNS[key] = _words_pattern(q.non_systemic_words)
    pat = _PATTERNS[key]
    product = ctx.product_name(row.system, row.code)
    if pat is not None:
        for t in (row.route_text, row.form_text, row.display, row.text, product):
            if t:
                m = pat.search(str(t).lower())
                if m:
                    return f"topical/inhaled form not counted ('{m.group(0)}')"
    # The terminology's own route/form code sets and dose-form words (v3, EDQM, dm+d, ...)
    # extend the query's lists; a terminology without the method adds nothing.
    check = getattr(ctx.terminology, "is_non_systemic", None)
    if check is None:
        return None
    route_codes = tuple(row.route_codes or ())
    form_codes = tuple(row.form_codes or ())
    # Answers per distinct route/form/product (they repeat a lot), kept with the Context.
    cache: dict[tuple[Any, ...], bool] | None = getattr(ctx, "_non_systemic_cache", None)
    if cache is None:
        cache = {}
        setattr(ctx, "_non_systemic_cache", cache)  # noqa: B010 - Context is not ours to extend
    # The product name: RxNorm's name for the code, else the record's own display and text.
    names = "; ".join(str(t) for t in (product, row.display, row.text) if t) or None
    key = (route_codes, row.route_text, form_codes, row.form_text, names)
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = bool(
            check(
                route_codes=route_codes,
                route_text=row.route_text,
                form_codes=form_codes,
                form_text=row.form_text,
                product_name=names,
            )
        )
    if hit:
        return "non-systemic route/form not counted"
    return None


def resolve_agents(row: Any, ctx: Context) -> list[Any]:
    """AgentMatch list for a row: by coding, else by text (low confidence)."""
    matches: list[Any] = []
    if row.system and row.code:
        matches = ctx.agents_for_coding(row.system, row.code)
    if not matches:
        for t in (row.text, row.display):
            if t:
                matches = ctx.agents_for_text(str(t))
                if matches:
                    break
    seen: set[str] = set()
    out = []
    for m in matches:
        if m.agent.code not in seen:
            seen.add(m.agent.code)
            out.append(m)
    return out


def coverage_days(agent_name: str, q: Any) -> int:
    table = {k.lower(): v for k, v in q.coverage_per_dose_days.items()}
    return table.get(agent_name.lower(), q.default_coverage_days)


def exposure_interval(
    row: Any, as_of: dt.date, coverage: int
) -> tuple[dt.date | None, dt.date | None]:
    """(start, end) of one record under its widest reading (a partial start at its first day,
    a partial end at its last); end None = unknown duration; start None = undated."""
    start, end, rule = row.start, row.end, row.end_rule
    if start is None:
        return None, None
    if rule == "to_asof":
        end = as_of
    elif rule == "per_dose":
        end = (end or start) + dt.timedelta(days=coverage - 1)
    elif rule != "explicit" or end is None:
        return start, None
    return start, max(start, end)


def _straddles(lo: dt.date, hi: dt.date, w_start: dt.date, w_end: dt.date) -> bool:
    """Whether a partial date's readings lo..hi fall on both sides of a window boundary: the
    window's first day, or its last (S, or earlier: a reading after S is not on record at S)."""
    return lo < w_start <= hi or lo <= w_end < hi


def certain_start(
    row: Any, as_of: dt.date, window_start: dt.date | None = None, window_end: dt.date | None = None
) -> dt.date | None:
    """The start day under the reading that can change the answer: a partial start means its
    first day, except where it straddles a window boundary (then its last day); None undated."""
    start = row.start
    if start is None:
        return None
    late = getattr(row, "start_late", None) or start
    if window_start is not None:
        end = as_of if window_end is None else window_end
        if late != start and not _straddles(start, late, window_start, end):
            late = start
    return late  # type: ignore[no-any-return]


def certain_interval(
    row: Any,
    as_of: dt.date,
    coverage: int,
    window_start: dt.date | None = None,
    window_end: dt.date | None = None,
) -> Interval | None:
    """The days a record covers under every reading that can change the answer, or None when
    no day is certain or the duration is unknown.

    With ``window_start``, spec v1.1: a partial start means its first day and a partial end its
    last day (the widest reading), except where the partial date straddles a window boundary
    (the window's first day, or its last: ``window_end``, default S); there its other end is
    taken (latest start, earliest end). Without it, every partial date takes its narrowest
    reading. Every such reading covers at least these days, so eras (merging and clipping are
    monotone in the days covered) computed from them are the pessimistic answer. For full dates
    this is :func:`exposure_interval`.
    """
    start, end, rule = row.start, row.end, row.end_rule
    if start is None:
        return None
    w_end = as_of if window_end is None else window_end
    late = certain_start(row, as_of, window_start, w_end)
    assert late is not None
    early = getattr(row, "end_early", None)
    if early is None:
        early = end
    if window_start is not None:
        # Only a record with a full start date reads a partial end on its own: a supply's end
        # follows its (partial) start and keeps that start's doubt.
        start_is_full = getattr(row, "start_late", None) in (None, start)
        if (
            start_is_full
            and early is not None
            and end is not None
            and not _straddles(early, end, window_start, w_end)
        ):
            early = end
    precise = late == start and early == end
    if rule == "to_asof":
        if late > as_of:
            return None
        return late, as_of
    if rule == "per_dose":
        # A dose on an imprecise day covers for sure only the days every reading covers.
        last = (early or late) + dt.timedelta(days=coverage - 1)
    elif rule != "explicit" or early is None:
        return None
    else:
        last = early
    if last < late:
        # Inverted full dates (data error) keep their start day, as the widest reading does.
        return (late, late) if precise else None
    return late, last


# --------------------------------------------------------------------------- per patient


@dataclass(frozen=True)
class _Agent:
    code: str
    name: str


@dataclass(frozen=True)
class _CodingAgent:
    agent: _Agent
    confidence: str = "high"


@dataclass
class MedRecord:
    row: Any
    group: str  # the query's label (class grouping) or the agent code (moiety grouping)
    agent_name: str
    value_set: str
    start: dt.date
    end: dt.date | None  # None = unknown duration (widest reading otherwise)
    certain: Interval | None  # days covered under every reading of partial dates
    low_confidence: bool
    # The start day under the reading that can change the answer (see certain_start).
    sure_start: dt.date | None = None
    notes: list[str] = field(default_factory=list)


def query_label(q: Any) -> str:
    """The query's label, or its value sets when it has none."""
    return str(q.label) if q.label else ", ".join(q.value_sets)


def row_value_sets(row: Any, ctx: Context) -> frozenset[str]:
    """Every value set a row can count in for some query: its coding's, and its agents'
    (:func:`collect` counts a row for a query only if one of these is the query's)."""
    found = set(ctx.memberships(row.system, row.code))
    for m in resolve_agents(row, ctx):
        found |= ctx.agent_value_sets(m.agent)
    return frozenset(found)


def _row_value_sets(row: Any, agents: list[Any], ctx: Context, candidates: list[str]) -> set[str]:
    found = {vs for vs in candidates if ctx.contains(vs, row.system, row.code)}
    for m in agents:
        found |= ctx.agent_value_sets(m.agent) & set(candidates)
    return found


def _evidence(row: Any, note: str, value: str | None = None) -> Evidence:
    return Evidence(
        row.resource_type,
        row.resource_id,
        row.system,
        row.code,
        row.display or row.text,
        iso(row.start),
        value,
        note,
    )


def collect(
    q: Any, ctx: Context, rows: list[Any], w: Bounds
) -> tuple[list[MedRecord], list[Evidence]]:
    """Counted records per group, and evidence rows for records that do not count."""
    as_of = ctx.as_of
    active = list(q.value_sets)
    off = [vs for vs in q.not_counted_value_sets if vs not in active]
    candidates = sorted({*active, *off})
    label = query_label(q)
    records: list[MedRecord] = []
    evidence: list[Evidence] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        agents = resolve_agents(row, ctx)
        vsets = _row_value_sets(row, agents, ctx, candidates)
        if not vsets:
            continue
        hit = [vs for vs in active if vs in vsets]
        if not hit:
            why = f" ({q.not_counted_reason})" if q.not_counted_reason else ""
            vs = next(vs for vs in off if vs in vsets)
            evidence.append(_evidence(row, f"{vs} not counted{why}"))
            continue
        note = ignored_note(row, q)
        if note is None and row.start is not None and row.start > as_of:
            note = "after as-of date"
        if note is None and q.systemic_only:
            note = non_systemic_note(row, q, ctx)
        if note is None and row.start is None:
            note = "no start date"
        if note is not None:
            evidence.append(_evidence(row, note))
            continue
        q_agents = [m for m in agents if ctx.agent_value_sets(m.agent) & set(hit)]
        if not q_agents:
            q_agents = agents[:1]
        if not q_agents:
            # Coded in the value set but no moiety known: the coding is its own agent.
            q_agents = [
                _CodingAgent(_Agent(f"{row.system}|{row.code}", str(row.display or row.code)))
            ]
        for m in q_agents:
            group = label if q.agent_grouping == "class" else m.agent.code
            cov = coverage_days(m.agent.name, q)
            start, end = exposure_interval(row, as_of, cov)
            assert start is not None
            certain = certain_interval(row, as_of, cov, w.start, w.end)
            # Several codings of one record give the same exposure once; several dosage
            # instructions give several exposures (a union).
            key = (row.resource_type + "/" + row.resource_id, group, start, end, certain)
            if key in seen:
                continue
            seen.add(key)
            records.append(
                MedRecord(
                    row,
                    group,
                    m.agent.name,
                    hit[0],
                    start,
                    end,
                    certain,
                    low_confidence=getattr(m, "confidence", "high") == "low",
                    sure_start=certain_start(row, as_of, w.start, w.end),
                )
            )
    return records, evidence


def _interval(r: MedRecord, reading: str, as_of: dt.date, exposure: bool) -> Interval | None:
    """A record's days under one reading: ``certain`` (days covered under every reading of
    partial dates; an unknown duration covers nothing for eras and only its start day for
    exposure), ``widest`` (partial starts at their first day, ends at their last; unknown
    durations left out for eras, their start day for exposure) or ``unknown`` (widest, and
    records of unknown duration run to S)."""
    if reading == "certain":
        iv = r.certain
        if iv is None and exposure and r.end is None and r.sure_start is not None:
            iv = (r.sure_start, r.sure_start)
        if iv is not None and iv[0] > as_of:
            return None  # starts after S under the latest reading: not on record at S
        return iv
    end = r.end if r.end is not None else (as_of if reading == "unknown" else None)
    if end is None and exposure:
        end = r.start  # an exposure of unknown duration began on its start day at least
    return None if end is None else (r.start, max(r.start, end))


@dataclass
class Era:
    span: Interval
    days: int  # inside the window
    records: list[MedRecord]


def eras(
    records: list[MedRecord], q: Any, w: Bounds, as_of: dt.date, reading: str
) -> dict[str, list[Era]]:
    """Per group, its eras under one reading (see :func:`_interval`), with days in the window
    (the sure window for the certain reading, the widest otherwise)."""
    lo, hi = (w.sure_start, w.sure_end) if reading == "certain" else (w.start, w.end)
    by_group: dict[str, list[tuple[Interval, MedRecord]]] = {}
    for r in records:
        iv = _interval(r, reading, as_of, exposure=False)
        if iv is not None:
            by_group.setdefault(r.group, []).append((iv, r))
    out: dict[str, list[Era]] = {}
    for group, items in by_group.items():
        merged = merge_intervals((iv for iv, _ in items), q.persistence_gap_days)
        out[group] = [
            Era(e, clipped_days(e, lo, hi), [r for iv, r in items if e[0] <= iv[0] <= e[1]])
            for e in merged
        ]
    return out


@dataclass
class Reading:
    """Which groups meet the query under one reading, and the records behind them."""

    groups: list[str]
    records: list[MedRecord]
    # Records in the window under this reading, whether or not their group meets the query.
    any_in_window: bool = False

    def meets(self, q: Any) -> bool:
        n = len({(r.row.resource_type, r.row.resource_id) for r in self.records})
        return len(self.groups) >= q.min_agents and n >= q.min_count


def read(records: list[MedRecord], q: Any, w: Bounds, as_of: dt.date, reading: str) -> Reading:
    """The groups that meet the query under one reading: each with an era of at least
    ``min_era_days`` in the window, or (``min_era_days`` null) any exposure in it."""
    lo, hi = (w.sure_start, w.sure_end) if reading == "certain" else (w.start, w.end)
    if q.min_era_days is None:
        groups: dict[str, list[MedRecord]] = {}
        anything = False
        for r in records:
            iv = _interval(r, reading, as_of, exposure=True)
            if iv is not None and lo <= hi and _overlaps(iv, lo, hi):
                groups.setdefault(r.group, []).append(r)
                anything = True
        return Reading(list(groups), [r for rs in groups.values() for r in rs], anything)
    tried: list[str] = []
    recs: list[MedRecord] = []
    anything = False
    for group, lst in eras(records, q, w, as_of, reading).items():
        long_enough = [e for e in lst if e.days >= q.min_era_days]
        anything = anything or any(e.days > 0 for e in lst)
        if long_enough:
            tried.append(group)
            recs.extend(r for e in long_enough for r in e.records)
    return Reading(tried, recs, anything)


@dataclass
class QueryResult:
    value: bool | None
    reason: str
    records: list[MedRecord]
    qualifying: list[MedRecord]  # the records behind a true answer (certain reading)
    evidence: list[Evidence]
    # Per group, its eras under the certain reading (the era table's rows: era_table_rows).
    eras: dict[str, list[Era]] = field(default_factory=dict)


def _names(records: list[MedRecord], groups: list[str], q: Any) -> str:
    names = {r.group: (r.agent_name if q.agent_grouping == "moiety" else r.group) for r in records}
    return ", ".join(sorted(names.get(g, g) for g in groups)) or "none"


def evaluate_query(q: Any, ctx: Context, rows: list[Any], w: Bounds | None) -> QueryResult:
    """A medication query's three-valued answer for one patient's rows in window ``w`` (None:
    the window's anchor event did not happen, so nothing lies in it).

    The certain reading of partial dates decides true; the widest reading (and, when
    configured, unknown durations running to S) can only make the answer unknown; an unknown
    anchor (``w.uncertain``) makes a match only possible.
    """
    as_of = ctx.as_of
    label = query_label(q)
    exposure = q.min_era_days is None
    records, evidence = collect(q, ctx, rows, w or Bounds.everything(as_of))
    if w is None:
        value: bool | None = False
        reason = f"{label}: no window (its anchor event is not on record)"
        sure = wide = Reading([], [])
        unknown_ran = wide
    else:
        sure = read(records, q, w, as_of, "certain")
        wide = read(records, q, w, as_of, "widest")
        unknown_ran = wide
        if q.unknown_duration_runs_to_as_of:
            unknown_ran = read(records, q, w, as_of, "unknown")
        verb = "exposed in the window" if exposure else "tried"
        n = len(sure.groups)
        summary = f"{label}: {n}/{q.min_agents} {verb} ({_names(records, sure.groups, q)})"
        if sure.meets(q):
            value, reason = True, summary
            if w.uncertain:
                value, reason = None, f"{summary}; the window's anchor is uncertain"
        elif wide.meets(q):
            doubt = "place it in the window" if exposure else "meet it"
            value, reason = None, f"{summary}; partial dates could {doubt}"
        elif unknown_ran.meets(q):
            doubt = "reach into the window" if exposure else "meet it"
            value, reason = None, f"{summary}; records of unknown duration could {doubt}"
        else:
            value, reason = False, summary
            if n >= q.min_agents and len(sure.records) < q.min_count:
                reason = f"{summary}; {len(sure.records)} records, fewer than {q.min_count}"
    if value is False and not unknown_ran.any_in_window and q.missing == "unknown":
        value, reason = None, f"{label}: no record in the window (missing: unknown)"
    if value is True and q.match == "possible":
        value, reason = None, f"{reason} (possible match)"
    if value is True and q.reason:
        reason = q.reason
    bounds = w or Bounds.everything(as_of)
    by_group = eras(records, q, bounds, as_of, "certain")
    for r in records:
        evidence.append(_record_evidence(r, by_group.get(r.group, []), q, bounds, as_of))
    qualifying = sure.records if value is not False else []
    return QueryResult(value, reason, records, qualifying, evidence, by_group)


def _record_evidence(r: MedRecord, lst: list[Era], q: Any, w: Bounds, as_of: dt.date) -> Evidence:
    who = f"{r.agent_name} ({r.value_set})"
    if r.low_confidence:
        who += " matched by text, low confidence"
    if r.end is None:
        note = f"{who}: duration unknown"
        value = f"{iso(r.start)}..?"
    elif r.certain is None:
        value = f"{iso(r.start)}..{iso(r.end)}"
        note = f"{who}: partial dates, no day certain"
    else:
        value = f"{iso(r.start)}..{iso(r.end)}"
        if r.certain != (r.start, max(r.start, r.end)):
            who += f", partial dates: certain {iso(r.certain[0])}..{iso(r.certain[1])}"
        c0 = r.certain[0]
        era = next((e for e in lst if e.span[0] <= c0 <= e.span[1]), None)
        if era is None:  # starts after S under the latest reading
            note = f"{who}: after as-of date under the latest reading"
        elif q.min_era_days is None:
            inside = _overlaps(r.certain, w.sure_start, w.sure_end) and c0 <= as_of
            note = f"{who}: {'in window' if inside else 'outside window'}"
        else:
            (es, ee), days = era.span, era.days
            verdict = (
                f"era {days} days >= {q.min_era_days}: tried"
                if days >= q.min_era_days
                else f"era {days} days < {q.min_era_days}"
            )
            if days == 0:
                verdict = "outside window"
            note = f"{who}: era {iso(es)}..{iso(ee)}, {verdict}"
    return Evidence(
        r.row.resource_type,
        r.row.resource_id,
        r.row.system,
        r.row.code,
        r.row.display or r.row.text,
        iso(r.start),
        value,
        f"{note} [{r.row.end_rule}]",
    )


def era_rows(
    q: Any, patient_id: str, rows: list[Any], ctx: Context, w: Bounds
) -> list[tuple[Any, ...]]:
    """One row per era of one patient (known durations, certain reading of partial dates: the
    eras behind a true answer), days = days inside the window (columns :data:`ERA_COLUMNS`)."""
    records, _ = collect(q, ctx, rows, w)
    return era_table_rows(q, patient_id, records, eras(records, q, w, ctx.as_of, "certain"))


def era_table_rows(
    q: Any, patient_id: str, records: list[MedRecord], by_group: dict[str, list[Era]]
) -> list[tuple[Any, ...]]:
    """:func:`era_rows` from the records and certain-reading eras already collected (what
    :func:`evaluate_query` computed for the same window)."""
    label = query_label(q)
    names = {
        r.group: (r.agent_name if q.agent_grouping == "moiety" else label, r.value_set)
        for r in records
    }
    out: list[tuple[Any, ...]] = []
    for group, lst in by_group.items():
        for e in lst:
            name, vs = names[group]
            out.append((patient_id, label, name, vs, e.span[0], e.span[1], e.days))
    return out


def era_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(ERA_COLUMNS))
