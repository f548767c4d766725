"""Shared pieces of the evaluators: per-patient data, outcome, evidence and record rules."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from fhir_cohort.criteria.models import ConditionStatusRules


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


class Context:
    """Terminology look-ups memoised across patients, plus S."""

    def __init__(self, terminology: TerminologyLike, as_of: dt.date) -> None:
        self.terminology = terminology
        self.as_of = as_of
        self._all_ids = tuple(terminology.ids())
        self._members: dict[tuple[str, str], frozenset[str]] = {}
        self._agents_code: dict[tuple[str, str], list[Any]] = {}
        self._agents_text: dict[str, list[Any]] = {}
        self._agent_vs: dict[str, set[str]] = {}
        self._product: dict[tuple[str, str], str | None] = {}

    def memberships(self, system: str | None, code: str | None) -> frozenset[str]:
        """Every value set id holding the coding (computed once per distinct coding)."""
        if not system or not code:
            return frozenset()
        key = (system, code)
        hit = self._members.get(key)
        if hit is None:
            hit = frozenset(vs for vs in self._all_ids
                            if self.terminology.contains(vs, system, code))
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


def within(d: dt.date | None, as_of: dt.date, days: int) -> bool:
    """d in [S - days, S] (both ends inclusive)."""
    return d is not None and as_of - dt.timedelta(days=days) <= d <= as_of


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
    """The most recent dating of a Condition record: latest of onset and recorded."""
    dates = [d for d in (row.onset_date, row.recorded_date) if d is not None]
    return max(dates) if dates else None


def condition_after_as_of(row: Any, as_of: dt.date) -> bool:
    """A record dated after S did not exist (or had not begun) at S."""
    return any(d is not None and d > as_of for d in (row.onset_date, row.recorded_date))


def procedure_status(row: Any) -> str | None:
    cs = row.clinical_status
    if row.resource_type == "Procedure" or (cs or "").startswith("procedure:"):
        return (cs or "procedure:").split(":", 1)[1] or None
    return None


def condition_ignored(row: Any, rules: ConditionStatusRules, as_of: dt.date) -> str | None:
    """A note when the record never counts, else None."""
    if condition_after_as_of(row, as_of):
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


def condition_unconfirmed(row: Any, rules: ConditionStatusRules) -> bool:
    return row.verification_status in rules.unconfirmed_statuses


def condition_active(row: Any, rules: ConditionStatusRules, as_of: dt.date) -> bool:
    """Active at S per the spec (see docs/criteria.md for the abatement-after-S convention)."""
    if row.resource_type == "Procedure":
        return procedure_status(row) in rules.active_procedure_statuses
    ab = row.abatement_date
    if ab is not None and ab > as_of and rules.abatement_after_as_of_is_active:
        return True
    cs = row.clinical_status
    if cs:
        return cs in rules.active_clinical_statuses
    if ab is not None:
        return ab > as_of
    return not bool(row.has_abatement)


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


def condition_state(row: Any) -> str:
    """Short description of clinical / verification status for evidence values."""
    parts = []
    if row.clinical_status:
        parts.append(str(row.clinical_status))
    if row.verification_status:
        parts.append(str(row.verification_status))
    if row.abatement_date is not None:
        parts.append(f"abated {row.abatement_date.isoformat()}")
    return ", ".join(parts) if parts else ""
