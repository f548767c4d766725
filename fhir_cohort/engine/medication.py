"""Medication exposure intervals, eras and the "tried for N days" test (spec I3).

Day arithmetic (documented in docs/criteria.md):
- every interval is [start, end] with both ends inclusive (a one-day record has start == end);
- per_dose rows (MedicationAdministration) cover [start, end + coverage - 1]: a 1-day coverage
  covers the dose day itself;
- gap between two sorted intervals = next.start - prev.end - 1 days = the number of uncovered
  days between them; intervals merge into one era when gap <= persistence_gap_days (overlapping
  or adjacent intervals have gap <= 0);
- eras are merged over the whole history first, then clipped to W = [S - window_months, S]
  (calendar months, day clamped to month end); days = clipped end - clipped start + 1.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fhir_cohort.criteria.models import MedicationHistoryCriterion, MedicationRequirement
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


def clipped_days(era: Interval, w_start: dt.date, as_of: dt.date) -> int:
    """Days of the era inside [w_start, as_of], both ends inclusive (0 when outside)."""
    s = max(era[0], w_start)
    e = min(era[1], as_of)
    return max(0, (e - s).days + 1)


# --------------------------------------------------------------------------- record rules


def ignored_note(row: Any, crit: MedicationHistoryCriterion) -> str | None:
    """Why a record never counts under the criterion's status rules, or None."""
    r = crit.status_rules
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


def non_systemic_note(row: Any, crit: MedicationHistoryCriterion, ctx: Context) -> str | None:
    """A note when route or dose form is local (topical, inhaled, ...), else None."""
    if ctx.token_in(crit.non_systemic_routes, row.route_codes):
        return "non-systemic route not counted"
    if ctx.token_in(crit.non_systemic_forms, row.form_codes):
        return "topical/inhaled form not counted"
    key = tuple(crit.non_systemic_words)
    if key not in _PATTERNS:
        _PATTERNS[key] = _words_pattern(crit.non_systemic_words)
    pat = _PATTERNS[key]
    product = ctx.product_name(row.system, row.code)
    if pat is not None:
        for t in (row.route_text, row.form_text, row.display, row.text, product):
            if t:
                m = pat.search(str(t).lower())
                if m:
                    return f"topical/inhaled form not counted ('{m.group(0)}')"
    # The terminology's own route/form code sets and dose-form words (v3, EDQM, dm+d, ...)
    # extend the criterion's lists; a terminology without the method adds nothing.
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


def coverage_days(agent_name: str, crit: MedicationHistoryCriterion) -> int:
    table = {k.lower(): v for k, v in crit.coverage_per_dose_days.items()}
    return table.get(agent_name.lower(), crit.default_coverage_days)


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


def _straddles(lo: dt.date, hi: dt.date, window_start: dt.date, as_of: dt.date) -> bool:
    """Whether a partial date's readings lo..hi fall on both sides of a window boundary: the
    window's first day, or S (a reading after S is not on record at S)."""
    return lo < window_start <= hi or lo <= as_of < hi


def certain_interval(
    row: Any, as_of: dt.date, coverage: int, window_start: dt.date | None = None
) -> Interval | None:
    """The days a record covers under every reading that can change the answer, or None when
    no day is certain or the duration is unknown.

    With ``window_start``, spec v1.1: a partial start means its first day and a partial end its
    last day (the widest reading), except where the partial date straddles a window boundary
    (the window's first day or S); there its other end is taken (latest start, earliest end).
    Without it, every partial date takes its narrowest reading. Every such reading covers at
    least these days, so eras (merging and clipping are monotone in the days covered) computed
    from them are the pessimistic answer. For full dates this is :func:`exposure_interval`.
    """
    start, end, rule = row.start, row.end, row.end_rule
    if start is None:
        return None
    late = getattr(row, "start_late", None) or start
    early = getattr(row, "end_early", None)
    if early is None:
        early = end
    if window_start is not None:
        if late != start and not _straddles(start, late, window_start, as_of):
            late = start
        # Only a record with a full start date reads a partial end on its own: a supply's end
        # follows its (partial) start and keeps that start's doubt.
        start_is_full = getattr(row, "start_late", None) in (None, start)
        if (
            start_is_full
            and early is not None
            and end is not None
            and not _straddles(early, end, window_start, as_of)
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
    requirement: int
    group: str  # class label or agent code
    agent_name: str
    value_set: str
    start: dt.date
    end: dt.date | None  # None = unknown duration (widest reading otherwise)
    certain: Interval | None  # days covered under every reading of partial dates
    low_confidence: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class RequirementResult:
    requirement: MedicationRequirement
    tried: list[str]  # group names tried (certain eras >= min_era_days)
    tried_if_unknown_ran: list[str]  # under the widest reading, unknown durations run to S
    eras: dict[str, list[tuple[Interval, int]]]  # group -> [(certain era, clipped days)]
    tried_if_dates_widest: list[str] = field(default_factory=list)  # widest, known only

    @property
    def met(self) -> bool:
        return len(self.tried) >= self.requirement.min_agents

    @property
    def met_if_dates_widest(self) -> bool:
        return len(self.tried_if_dates_widest) >= self.requirement.min_agents

    @property
    def met_if_unknown_ran(self) -> bool:
        return len(self.tried_if_unknown_ran) >= self.requirement.min_agents


@dataclass
class TherapyResult:
    requirements: list[RequirementResult]
    records: list[MedRecord]
    evidence: list[Evidence]


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
    crit: MedicationHistoryCriterion, ctx: Context, rows: list[Any]
) -> tuple[list[MedRecord], list[Evidence]]:
    """Counted records per requirement/group, and evidence rows for records that do not count."""
    as_of = ctx.as_of
    w_start = window_start(as_of, crit.window_months)
    active_vs = [crit.active_value_sets(r) for r in crit.requirements]
    optional_off = [
        [] if r.enabled_by is None or crit.switch(r.enabled_by) else list(r.optional_value_sets)
        for r in crit.requirements
    ]
    candidates = sorted({vs for lst in active_vs + optional_off for vs in lst})
    records: list[MedRecord] = []
    evidence: list[Evidence] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        agents = resolve_agents(row, ctx)
        vsets = _row_value_sets(row, agents, ctx, candidates)
        if not vsets:
            continue
        for i, req in enumerate(crit.requirements):
            hit = [vs for vs in active_vs[i] if vs in vsets]
            if not hit:
                off = [vs for vs in optional_off[i] if vs in vsets]
                if off:
                    evidence.append(
                        _evidence(row, f"{off[0]} not counted ({req.enabled_by} is false)")
                    )
                continue
            note = ignored_note(row, crit)
            if note is None and row.start is not None and row.start > as_of:
                note = "after as-of date"
            if note is None and crit.systemic_only:
                note = non_systemic_note(row, crit, ctx)
            if note is None and row.start is None:
                note = "no start date"
            if note is not None:
                evidence.append(_evidence(row, note))
                continue
            req_agents = [m for m in agents if ctx.agent_value_sets(m.agent) & set(hit)]
            if not req_agents:
                req_agents = agents[:1]
            if not req_agents:
                # Coded in the value set but no moiety known: the coding is its own agent.
                req_agents = [
                    _CodingAgent(_Agent(f"{row.system}|{row.code}", str(row.display or row.code)))
                ]
            for m in req_agents:
                group = req.label if req.agent_grouping == "class" else m.agent.code
                cov = coverage_days(m.agent.name, crit)
                start, end = exposure_interval(row, as_of, cov)
                assert start is not None
                certain = certain_interval(row, as_of, cov, w_start)
                # Several codings of one record give the same exposure once; several dosage
                # instructions give several exposures (a union).
                key = (row.resource_type + "/" + row.resource_id, group, i, start, end, certain)
                if key in seen:
                    continue
                seen.add(key)
                records.append(
                    MedRecord(
                        row,
                        i,
                        group,
                        m.agent.name,
                        hit[0],
                        start,
                        end,
                        certain,
                        low_confidence=getattr(m, "confidence", "high") == "low",
                    )
                )
    return records, evidence


def _tried(
    records: list[MedRecord],
    crit: MedicationHistoryCriterion,
    w_start: dt.date,
    as_of: dt.date,
    reading: str,
) -> tuple[list[str], dict[str, list[tuple[Interval, int]]]]:
    """Groups tried and their eras under one reading of the records:
    ``certain`` (days covered under every reading of partial dates; unknown durations left
    out), ``widest`` (partial starts at their first day, ends at their last) or ``unknown``
    (widest, and records of unknown duration run to S)."""
    by_group: dict[str, list[Interval]] = {}
    for r in records:
        iv: Interval | None
        if reading == "certain":
            iv = r.certain
            if iv is not None and iv[0] > as_of:
                iv = None  # starts after S under the latest reading: not on record at S
        else:
            end = r.end if r.end is not None else (as_of if reading == "unknown" else None)
            iv = None if end is None else (r.start, max(r.start, end))
        if iv is not None:
            by_group.setdefault(r.group, []).append(iv)
    tried: list[str] = []
    eras: dict[str, list[tuple[Interval, int]]] = {}
    for group, ivs in by_group.items():
        merged = merge_intervals(ivs, crit.persistence_gap_days)
        eras[group] = [(e, clipped_days(e, w_start, as_of)) for e in merged]
        if any(days >= crit.min_era_days for _, days in eras[group]):
            tried.append(group)
    return tried, eras


def evaluate_therapy(
    crit: MedicationHistoryCriterion, ctx: Context, rows: list[Any]
) -> TherapyResult:
    """Eras under the certain reading decide ``met``; the widest reading of partial dates (and,
    when configured, unknown durations running to S) can only make the answer unknown."""
    as_of = ctx.as_of
    w_start = window_start(as_of, crit.window_months)
    records, evidence = collect(crit, ctx, rows)
    results: list[RequirementResult] = []
    for i, req in enumerate(crit.requirements):
        recs = [r for r in records if r.requirement == i]
        tried, eras = _tried(recs, crit, w_start, as_of, "certain")
        tried_w, _ = _tried(recs, crit, w_start, as_of, "widest")
        if crit.unknown_duration_runs_to_as_of:
            tried_u, _ = _tried(recs, crit, w_start, as_of, "unknown")
        else:
            tried_u = tried_w
        results.append(RequirementResult(req, tried, tried_u, eras, tried_w))
        for r in recs:
            evidence.append(_record_evidence(r, eras.get(r.group, []), crit, w_start, as_of))
    return TherapyResult(results, records, evidence)


def _record_evidence(
    r: MedRecord,
    eras: list[tuple[Interval, int]],
    crit: MedicationHistoryCriterion,
    w_start: dt.date,
    as_of: dt.date,
) -> Evidence:
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
        era = next(((e, d) for e, d in eras if e[0] <= c0 <= e[1]), None)
        if era is None:  # starts after S under the latest reading
            note = f"{who}: after as-of date under the latest reading"
        else:
            (es, ee), days = era
            verdict = (
                f"era {days} days >= {crit.min_era_days}: tried"
                if days >= crit.min_era_days
                else f"era {days} days < {crit.min_era_days}"
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


def era_table(
    crit: MedicationHistoryCriterion, per_patient: dict[str, list[Any]], ctx: Context
) -> pd.DataFrame:
    """One row per era (known durations, certain reading of partial dates: the eras behind
    ``met``), days = days inside W, for notebooks."""
    out: list[tuple[Any, ...]] = []
    w_start = window_start(ctx.as_of, crit.window_months)
    for pid, rows in per_patient.items():
        records, _ = collect(crit, ctx, rows)
        for i, req in enumerate(crit.requirements):
            recs = [r for r in records if r.requirement == i]
            _, eras = _tried(recs, crit, w_start, ctx.as_of, "certain")
            names = {
                r.group: (
                    r.agent_name if req.agent_grouping == "moiety" else req.label,
                    r.value_set,
                )
                for r in recs
            }
            for group, lst in eras.items():
                for (s, e), days in lst:
                    out.append((pid, req.label, names[group][0], names[group][1], s, e, days))
    return pd.DataFrame.from_records(out, columns=list(ERA_COLUMNS))
