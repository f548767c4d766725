"""The ``medication`` query: agents of value sets tried for a minimum era, or any exposure, in
a window (docs/criteria.md; the day arithmetic lives in engine/medication.py).

``min_era_days: N``: at least ``min_agents`` agents (moieties, or the whole value sets as one
agent with ``agent_grouping: class``) each with an era of N days inside the window (spec I3).
``min_era_days: null``: at least ``min_agents`` agents each with any exposure overlapping the
window (washouts: an exclusion "no anti-CD20 within 6 months"). Partial dates that straddle a
window edge, and records of unknown duration that could reach into it, answer unknown.
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.engine import medication as med
from fhir_cohort.engine.queries import QueryType, register
from fhir_cohort.engine.queries.window import window_range
from fhir_cohort.engine.rules import Result, Scope

TABLES = frozenset({"medications"})


def bounds(node: Any, scope: Scope) -> med.Bounds | None:
    """The query's window for this patient; None when its anchor event is not on record."""
    if node.within is None:
        return med.Bounds.everything(scope.as_of)
    rng = window_range(node.within, scope)
    if rng is None:
        return None
    if isinstance(rng, str):  # the anchor may have happened, date unknown: anywhere up to S
        return med.Bounds.everything(scope.as_of, uncertain=True)
    return med.Bounds.of(rng)


def evaluate(node: Any, scope: Scope) -> Result:
    w = bounds(node, scope)
    got = med.evaluate_query(node, scope.ctx, scope.data.medications, w)
    kept, patient = scope.ctx.kept, scope.data.patient
    if kept is not None and w is not None and patient is not None:
        # The era table's rows for this window, as engine.evaluate.medication_eras makes them.
        pid = patient.patient_id
        kept.put(node, pid, med.era_table_rows(node, pid, got.records, got.eras))
    # The event of a record is its start date (a partial start: all its readings).
    events = [(r.start, r.row.start_late or r.start) for r in got.qualifying]
    return Result(got.value, got.reason, got.evidence, [], events)


def reads(node: Any) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    # engine.medication.collect skips a row whose coding and agents (matched by coding, else
    # by name in free text: engine.medication.row_value_sets) are in none of these.
    return TABLES, frozenset(), frozenset([*node.value_sets, *node.not_counted_value_sets])


register(QueryType("medication", evaluate, reads))
