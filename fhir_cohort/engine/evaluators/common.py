"""Shared pieces of the evaluators: per-patient data, outcome, evidence and record rules."""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from fhir_cohort.criteria.models import ConditionStatusRules
from fhir_cohort.fhir.wire import date_bounds


class TerminologyLike(Protocol):
    """The part of fhir_cohort.terminology.Terminology the engine uses (docs/architecture.md)."""

    def ids(self) -> list[str]: ...
    def contains(self, vs_id: str, system: str, code: str) -> bool: ...
    def agents_for_coding(self, system: str, code: str) -> list[Any]: ...
    def agents_for_text(self, text: str) -> list[Any]: ...
    def agent_value_sets(self, agent: Any) -> set[str]: ...
    def product_name(self, system: str, code: str) -> str | None: ...


class Evidence(NamedTuple):
    resource_type: str
    resource_id: str
    system: str | None
    code: str | None
    display: str | None
    date: str | None
    value: str | None
    note: str


@dataclass
class Outcome:
    answer: str
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    # Review notes that do not change the answer (they go to the status reasons).
    notes: list[str] = field(default_factory=list)


@dataclass
class PatientData:
    """One patient's rows (plain namedtuples from itertuples, cleaned)."""

    patient: Any
    conditions: list[Any] = field(default_factory=list)
    medications: list[Any] = field(default_factory=list)
    observations: list[Any] = field(default_factory=list)
    # For each table with rows: the value sets holding their codings (the no-rows shortcut of
    # engine/rules.py reads it; engine.evaluate.Prepared.coded).
    coded: dict[str, frozenset[str]] | None = None


class Kept:
    """Per-patient results that the analysts' tables show again (a medication query's era rows,
    a positivity query's lab readings), kept by the evaluation so the tables need not evaluate
    the query a second time. Keyed by the query node itself (identity) and the patient id."""

    def __init__(self) -> None:
        self._by_node: dict[int, tuple[Any, dict[str, Any]]] = {}

    def put(self, node: Any, patient_id: str, value: Any) -> None:
        entry = self._by_node.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self._by_node[id(node)] = (node, {})
        entry[1][patient_id] = value

    def of(self, node: Any) -> dict[str, Any]:
        """patient id -> kept value for ``node`` (empty when none was kept)."""
        entry = self._by_node.get(id(node))
        return entry[1] if entry is not None and entry[0] is node else {}

    def clear(self) -> None:
        self._by_node.clear()


class Context:
    """Terminology look-ups memoised across patients, plus S."""

    def __init__(self, terminology: TerminologyLike, as_of: dt.date) -> None:
        self.terminology = terminology
        self.as_of = as_of
        # Set by a caller that builds the detail tables after evaluating (engine/evaluate.py).
        self.kept: Kept | None = None
        self._all_ids = tuple(terminology.ids())
        self._members: dict[tuple[str, str], frozenset[str]] = {}
        self._agents_code: dict[tuple[str, str], list[Any]] = {}
        self._agents_text: dict[str, list[Any]] = {}
        self._agent_vs: dict[str, set[str]] = {}
        self._product: dict[tuple[str, str], str | None] = {}
        # Windows anchored on S by (S, days, months, years, after): engine/queries/window.py.
        self.windows: dict[tuple[Any, ...], Any] = {}

    def memberships(self, system: str | None, code: str | None) -> frozenset[str]:
        """Every value set id holding the coding (computed once per distinct coding)."""
        if not system or not code:
            return frozenset()
        key = (system, code)
        hit = self._members.get(key)
        if hit is None:
            hit = frozenset(
                vs for vs in self._all_ids if self.terminology.contains(vs, system, code)
            )
            self._members[key] = hit
        return hit

    def contains(self, vs_id: str, system: str | None, code: str | None) -> bool:
        return vs_id in self.memberships(system, code)

    def first_vs(self, vs_ids: list[str], system: str | None, code: str | None) -> str | None:
        """The first of vs_ids that holds the coding, or None."""
        if not system or not code:
            return None
        members = self.memberships(system, code)
        if not members:
            return None
        for vs in vs_ids:
            if vs in members:
                return vs
        return None

    def token_in(self, vs_ids: list[str], tokens: tuple[str, ...] | list[str] | None) -> bool:
        """Whether any "system|code" token is in any of vs_ids."""
        for tok in tokens or ():
            system, _, code = str(tok).rpartition("|")
            if self.first_vs(vs_ids, system, code):
                return True
        return False

    def agents_for_coding(self, system: str, code: str) -> list[Any]:
        key = (system, code)
        hit = self._agents_code.get(key)
        if hit is None:
            hit = list(self.terminology.agents_for_coding(system, code))
            self._agents_code[key] = hit
        return hit

    def agents_for_text(self, text: str) -> list[Any]:
        hit = self._agents_text.get(text)
        if hit is None:
            hit = list(self.terminology.agents_for_text(text))
            self._agents_text[text] = hit
        return hit

    def agent_value_sets(self, agent: Any) -> set[str]:
        hit = self._agent_vs.get(agent.code)
        if hit is None:
            hit = set(self.terminology.agent_value_sets(agent))
            self._agent_vs[agent.code] = hit
        return hit

    def product_name(self, system: str | None, code: str | None) -> str | None:
        if not system or not code:
            return None
        key = (system, code)
        if key not in self._product:
            self._product[key] = self.terminology.product_name(system, code)
        return self._product[key]


# --------------------------------------------------------------------------- dates


def iso(d: dt.date | None) -> str | None:
    return d.isoformat() if d is not None else None


Span = tuple[dt.date, dt.date]


def span(lo: dt.date | None, hi: dt.date | None = None) -> Span | None:
    """The (earliest, latest) day a possibly partial date denotes; a full date is (d, d)."""
    if lo is None:
        return None if hi is None else (hi, hi)
    return lo, (hi if hi is not None and hi >= lo else lo)


def in_window(when: Span, start: dt.date, end: dt.date) -> bool | None:
    """Whether a dated range lies in [start, end] (both inclusive), three-valued.

    True when the whole range is inside, False when none of it is, None when it straddles a
    boundary (a partial date cannot decide; spec v1.1 "Dates and windows").

    >>> in_window((dt.date(2026, 9, 1), dt.date(2026, 9, 30)), dt.date(2026, 9, 3),
    ...           dt.date(2026, 12, 2)) is None
    True
    """
    lo, hi = when
    if hi < start or lo > end:
        return False
    if start <= lo and hi <= end:
        return True
    return None


def within(
    d: dt.date | None, as_of: dt.date, days: int, high: dt.date | None = None
) -> bool | None:
    """d (a range up to ``high`` when partial) in [S - days, S]; None when it straddles a
    boundary. An undated record gives False: callers decide what undated means."""
    when = span(d, high) if d is not None else None
    if when is None:
        return False
    return in_window(when, as_of - dt.timedelta(days=days), as_of)


def after_as_of(d: dt.date | None, as_of: dt.date, high: dt.date | None = None) -> bool | None:
    """Dated after S (ignored): True when even the earliest reading is after S, None when the
    range holds S and a later day (cannot tell), False otherwise (undated included)."""
    when = span(d, high)
    if when is None or when[1] <= as_of:
        return False
    return True if when[0] > as_of else None


def add_months(d: dt.date, months: int) -> dt.date:
    """Calendar-month addition, the day clamped to the target month's length."""
    return subtract_months(d, -months)


def subtract_months(d: dt.date, months: int) -> dt.date:
    """Calendar-month subtraction; the day is clamped to the target month's length.

    >>> subtract_months(dt.date(2024, 3, 31), 1)
    datetime.date(2024, 2, 29)
    >>> subtract_months(dt.date(2025, 6, 15), 24)
    datetime.date(2023, 6, 15)
    """
    y, m0 = divmod(d.year * 12 + (d.month - 1) - months, 12)
    last = calendar.monthrange(y, m0 + 1)[1]
    return dt.date(y, m0 + 1, min(d.day, last))


# --------------------------------------------------------------------------- conditions


def condition_date(row: Any) -> dt.date | None:
    """The most recent dating of a Condition record: latest of onset and recorded (earliest
    reading of a partial date)."""
    when = condition_span(row)
    return when[0] if when is not None else None


def condition_span(row: Any, basis: str = "latest") -> Span | None:
    """Range of the record's date for windows: the later of onset and recorded ("latest"), or
    the onset, else the recorded date ("onset"). Partial dates keep their whole range."""
    onset = span(row.onset_date, getattr(row, "onset_high", None))
    recorded = span(row.recorded_date, getattr(row, "recorded_high", None))
    if basis == "onset":
        return onset or recorded
    if onset is None or recorded is None:
        return onset or recorded
    return max(onset[0], recorded[0]), max(onset[1], recorded[1])


def condition_after_as_of(row: Any, as_of: dt.date) -> bool | None:
    """A record with onset or recorded date after S did not exist (or had not begun) at S:
    True; None when a partial onset or recorded date holds S and later days (cannot tell)."""
    out: bool | None = False
    for lo, hi in (
        (row.onset_date, getattr(row, "onset_high", None)),
        (row.recorded_date, getattr(row, "recorded_high", None)),
    ):
        after = after_as_of(lo, as_of, hi)
        if after is True:
            return True
        if after is None:
            out = None
    return out


# Age units (UCUM code or unit text) -> (months, days) per unit, for abatementAge.
_AGE_UNITS: dict[str, tuple[int, float]] = {
    "a": (12, 0), "yr": (12, 0), "year": (12, 0), "years": (12, 0),
    "mo": (1, 0), "month": (1, 0), "months": (1, 0),
    "wk": (0, 7), "week": (0, 7), "weeks": (0, 7),
    "d": (0, 1), "day": (0, 1), "days": (0, 1),
    "h": (0, 1 / 24), "hour": (0, 1 / 24), "hours": (0, 1 / 24),
}  # fmt: skip


def age_date(birth: dt.date, value: float, unit: str) -> dt.date | None:
    """The day a person born on ``birth`` reached an age (the low end: an age of 45 years
    starts on the 45th birthday). None for an unknown unit or a date out of range.

    >>> age_date(dt.date(1980, 5, 17), 45, "a")
    datetime.date(2025, 5, 17)
    """
    per = _AGE_UNITS.get(unit.strip() if len(unit.strip()) <= 2 else unit.strip().lower())
    if per is None or value < 0:
        return None
    months, days = per
    try:
        if months:
            return add_months(birth, math.floor(value * months))
        return birth + dt.timedelta(days=math.floor(value * days))
    except (OverflowError, ValueError):
        return None


def abatement_span(row: Any, birth_raw: str | None = None) -> Span | None:
    """Range of the abatement date: abatementDateTime/Period as read, else abatementAge (or
    abatementRange.low) converted from the birthDate (each end of a partial birthDate)."""
    when = span(row.abatement_date, getattr(row, "abatement_high", None))
    if when is not None:
        return when
    age = getattr(row, "abatement_age", None)
    birth = date_bounds(birth_raw) if birth_raw else None
    if not age or birth is None:
        return None
    value, unit = age
    if not isinstance(value, int | float) or not isinstance(unit, str):
        return None
    lo, hi = age_date(birth[0], float(value), unit), age_date(birth[1], float(value), unit)
    return (lo, hi) if lo is not None and hi is not None else None


def procedure_status(row: Any) -> str | None:
    cs = row.clinical_status
    if row.resource_type == "Procedure" or (cs or "").startswith("procedure:"):
        return (cs or "procedure:").split(":", 1)[1] or None
    return None


def condition_ignored(row: Any, rules: ConditionStatusRules, as_of: dt.date) -> str | None:
    """A note when the record never counts, else None (see condition_uncertain_at too)."""
    if condition_after_as_of(row, as_of) is True:
        return "after as-of date"
    if row.resource_type == "Procedure":
        st = procedure_status(row)
        if st in rules.ignored_procedure_statuses:
            return f"procedure status {st}"
        return None
    vs = row.verification_status
    if vs in rules.ignored_verification_statuses:
        return str(vs)
    return None


def condition_uncertain_at(row: Any, as_of: dt.date) -> str | None:
    """A note when a partial onset/recorded date cannot tell whether the record existed at S."""
    if condition_after_as_of(row, as_of) is None:
        return "partial date may fall after as-of date"
    return None


def condition_unconfirmed(row: Any, rules: ConditionStatusRules) -> bool:
    return row.verification_status in rules.unconfirmed_statuses


def condition_active(
    row: Any, rules: ConditionStatusRules, as_of: dt.date, birth_raw: str | None = None
) -> bool | None:
    """Active at S per the spec and v1.1 "Activity at S"; None when it cannot be told (an
    undated abatement without clinicalStatus, or an abatement range holding S).

    ``birth_raw`` (Patient.birthDate) dates an abatementAge.
    """
    if row.resource_type == "Procedure":
        return procedure_status(row) in rules.active_procedure_statuses
    ab = abatement_span(row, birth_raw)
    after_is_active = rules.abatement_after_as_of_is_active
    if ab is not None and after_is_active and ab[0] > as_of:
        return True
    cs = row.clinical_status
    if cs in rules.active_clinical_statuses:
        return True
    if cs in rules.inactive_clinical_statuses:
        # Inactive now; only an abatement that may lie after S leaves room for activity at S.
        return None if ab is not None and after_is_active and ab[1] > as_of else False
    # No (or an unrecognised) clinicalStatus: the abatement decides.
    if ab is not None:
        if ab[1] <= as_of:
            return False
        return True if ab[0] > as_of else None
    return None if row.has_abatement else True


def condition_evidence(row: Any, note: str, value: str | None = None) -> Evidence:
    return Evidence(
        row.resource_type,
        row.resource_id,
        row.system,
        row.code,
        row.display,
        iso(condition_date(row)),
        value,
        note,
    )


def _range_text(when: Span) -> str:
    lo, hi = when
    return lo.isoformat() if lo == hi else f"{lo.isoformat()}..{hi.isoformat()}"


def condition_state(row: Any) -> str:
    """Short description of clinical / verification status for evidence values."""
    parts = []
    if row.clinical_status:
        parts.append(str(row.clinical_status))
    if row.verification_status:
        parts.append(str(row.verification_status))
    when = condition_span(row)
    if when is not None and when[0] != when[1]:
        # A partial date: the evidence date is its first day, so show the whole range.
        parts.append(f"dated {when[0].isoformat()}..{when[1].isoformat()}")
    ab = span(row.abatement_date, getattr(row, "abatement_high", None))
    if ab is not None:
        parts.append(f"abated {_range_text(ab)}")
    elif getattr(row, "abatement_age", None):
        parts.append(f"abated at age {row.abatement_age[0]:g} {row.abatement_age[1]}")
    return ", ".join(parts) if parts else ""
