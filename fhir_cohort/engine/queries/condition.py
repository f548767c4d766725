"""The ``condition`` and ``procedure`` queries: records in value sets, counted by the
criterion's status rules, filters and window.

A ``condition`` query reads the condition table: Condition rows, and Procedure rows whose code
is in its value sets (a dialysis Procedure counts like a dialysis Condition). A ``procedure``
query reads the Procedure rows only. Each record in the value sets is, in this order:

- not counted: ignored by the status rules (refuted, entered-in-error, not-done, dated after
  S), only in ``not_counted_value_sets``, without a ``severity_codes`` severity, naming none of
  ``named_classes``, inactive at S under ``require_active``, or outside the window;
- unknown: a partial date that may fall after S, activity at S that cannot be told, a partial
  date straddling a window end (or undated with ``undated: unknown``), a code only in
  ``unknown_value_sets``, or an unconfirmed verification status;
- counted otherwise.

The query is true with ``min_count`` counted records (distinct resources), unknown while the
unknown ones could make that count, else ``missing`` (false by default). ``match: possible``
turns true into unknown.
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.engine.evaluators.common import (
    Evidence,
    condition_active,
    condition_evidence,
    condition_ignored,
    condition_span,
    condition_state,
    condition_uncertain_at,
    condition_unconfirmed,
)
from fhir_cohort.engine.queries import QueryType, register
from fhir_cohort.engine.queries.window import place, window_range
from fhir_cohort.engine.roman_classes import names_class_in
from fhir_cohort.engine.rules import Result, Scope, Span

NO_RECORD = "no qualifying record"


def _window_text(window: Any) -> str:
    for unit in ("days", "months", "years"):
        n = getattr(window, unit)
        if n is not None:
            return f"{n}-{unit[:-1]} window"
    return "window"  # pragma: no cover - a window has one length


def _unplaced(window: Any, when: Any, rng: Any) -> str:
    """Why a record's place in the window is unknown."""
    if when is None:
        return "undated"
    if isinstance(rng, str):
        return "the window's anchor gives no date"
    if rng.uncertain:
        return "the window's anchor is itself unknown"
    if when[0] != when[1]:
        return f"partial date straddles the {_window_text(window)}"
    return f"the window's partial anchor date may or may not reach it ({_window_text(window)})"


def _classify(node: Any, row: Any, scope: Scope, rng: Any) -> tuple[str, str, str | None]:
    """(state, note, unknown detail) of one record already in the query's value sets: state
    "counted", "unknown" or "other" (not counted)."""
    ctx = scope.ctx
    as_of = scope.as_of
    rules = node.status_rules
    vs = ctx.first_vs(node.value_sets, row.system, row.code)
    unk_vs = not_vs = None
    if vs is None:
        unk_vs = ctx.first_vs(getattr(node, "unknown_value_sets", []), row.system, row.code)
    if vs is None and unk_vs is None:
        not_vs = ctx.first_vs(getattr(node, "not_counted_value_sets", []), row.system, row.code)
    ignored = condition_ignored(row, rules, as_of)
    if ignored is not None:
        return "other", ignored, None
    if not_vs is not None:
        return "other", f"{not_vs}: does not count", None
    severity = getattr(node, "severity_codes", None)
    if severity is not None and not set(row.severity_codes or ()) & set(severity):
        return "other", "severity not " + ", ".join(severity), None
    classes = getattr(node, "named_classes", None)
    if classes is not None and not any(
        names_class_in(t, classes) for t in (row.display, row.code_text) if t
    ):
        return "other", "no class " + "/".join(classes) + " named", None
    unsure: list[str] = []
    if (note := condition_uncertain_at(row, as_of)) is not None:
        unsure.append(note)
    if getattr(node, "require_active", False):
        active = condition_active(row, rules, as_of, scope.data.patient.birth_date_raw)
        if active is False:
            return "other", "inactive", None
        if active is None:
            unsure.append("activity at as-of date unknown")
    if node.within is not None:
        when = condition_span(row, getattr(node, "date_basis", "latest"))
        hit = place(when, node.within, rng)
        if hit is False:
            if when is None:
                return "other", "undated", None
            return "other", f"outside the {_window_text(node.within)}", None
        if hit is None:
            unsure.append(_unplaced(node.within, when, rng))
    if unk_vs is not None:
        unsure.append(f"{unk_vs}: type unspecified")
    if condition_unconfirmed(row, rules):
        return "unknown", f"{row.verification_status}: not confirmed", "unconfirmed"
    if unsure:
        return "unknown", unsure[0], unsure[0]
    return "counted", f"{vs}: counted", None


def _older_note(node: Any, note: str) -> str:
    """The old wording for a record before an S-anchored day window (kept: readers know it)."""
    w = node.within
    if note.startswith("outside") and w.anchor == "as_of" and not w.after and w.days is not None:
        return f"older than {w.days} days"
    return note


def _rows(node: Any, scope: Scope) -> list[Any]:
    rows = scope.data.conditions
    if node.type == "procedure":
        return [r for r in rows if r.resource_type == "Procedure"]
    return rows


def _relevant(node: Any) -> frozenset[str]:
    """The value sets whose records the query reads; it ignores every other record."""
    return frozenset(
        [
            *node.value_sets,
            *getattr(node, "unknown_value_sets", []),
            *getattr(node, "not_counted_value_sets", []),
        ]
    )


def evaluate(node: Any, scope: Scope) -> Result:
    ctx = scope.ctx
    relevant = _relevant(node)
    rng = window_range(node.within, scope) if node.within is not None else None
    label = node.reason
    counted: list[Evidence] = []
    unknown: list[Evidence] = []
    other: list[Evidence] = []
    counted_ids: dict[tuple[str, str], None] = {}
    unknown_ids: dict[tuple[str, str], None] = {}
    unknown_texts: list[str] = []
    first_display: str | None = None
    events: list[Span] = []
    basis = getattr(node, "date_basis", "latest")
    for row in _rows(node, scope):
        if relevant.isdisjoint(ctx.memberships(row.system, row.code)):
            continue
        status, note, detail = _classify(node, row, scope, rng)
        state = condition_state(row)
        name = row.display or row.code
        if status == "other":
            note = _older_note(node, note) if node.within is not None else note
            other.append(condition_evidence(row, note, state))
            continue
        key = (row.resource_type, row.resource_id)
        if status == "counted":
            if label:
                note = f"{'possible' if node.match == 'possible' else 'counted'}: {label}"
            counted.append(condition_evidence(row, note, state))
            counted_ids[key] = None
            first_display = first_display or name
            when = condition_span(row, basis)
            if when is not None:
                events.append(when)
            continue
        if label:
            note = f"unknown: {label} ({note})"
        unknown.append(condition_evidence(row, note, state))
        unknown_ids[key] = None
        if detail == "unconfirmed":
            unknown_texts.append(f"{row.verification_status}: {label or name}")
        else:
            unknown_texts.append(f"{label or name} ({detail})")
    evidence = counted + unknown + other
    n = len(counted_ids)
    n_unknown = len(unknown_ids.keys() - counted_ids.keys())
    if n >= node.min_count:
        if node.match == "possible":
            return Result(None, label or f"possibly {first_display}", evidence, events=events)
        return Result(True, label or f"{first_display} on record", evidence, events=events)
    if n + n_unknown >= node.min_count:
        texts = sorted(dict.fromkeys(unknown_texts))
        if n and node.min_count > 1:
            texts.insert(0, f"{n} of {node.min_count} records counted")
        return Result(None, "; ".join(texts), evidence, events=events)
    none = f"{NO_RECORD} ({', '.join(node.value_sets)})"
    if n == 0 and n_unknown == 0 and node.missing == "unknown":
        return Result(None, none, evidence)
    if n or n_unknown:
        return Result(
            False, f"{n + n_unknown} qualifying records, fewer than {node.min_count}", evidence
        )
    return Result(False, none, evidence)


def reads(node: Any) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    return frozenset({"conditions"}), frozenset(), _relevant(node)


register(QueryType("condition", evaluate, reads))
register(QueryType("procedure", evaluate, reads))
