"""I3-style criterion: agents from value sets each tried for a minimum era inside a window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort.criteria.models import MedicationHistoryCriterion
from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData

if TYPE_CHECKING:
    from fhir_cohort.engine.medication import RequirementResult


def _describe(res: RequirementResult, names: dict[str, str]) -> str:
    req = res.requirement
    tried = ", ".join(sorted(names.get(g, g) for g in res.tried)) or "none"
    return f"{req.label}: {len(res.tried)}/{req.min_agents} tried ({tried})"


def evaluate_medication_history(
    crit: MedicationHistoryCriterion, ctx: Context, data: PatientData
) -> Outcome:
    # Imported here: engine.medication imports evaluators.common (import cycle otherwise).
    from fhir_cohort.engine.medication import evaluate_therapy

    result = evaluate_therapy(crit, ctx, data.medications)
    names = {
        r.group: (r.agent_name if r.group != crit.requirements[r.requirement].label else r.group)
        for r in result.records
    }
    summary = "; ".join(_describe(r, names) for r in result.requirements)
    ev = result.evidence
    if all(r.met for r in result.requirements):
        ev.append(Evidence("", "", None, None, None, None, None, crit.review_note))
        return Outcome("met", summary, ev, notes=[crit.review_note])
    # Spec v1.1: a partial date straddling a boundary cannot decide (widest reading meets it).
    if all(r.met_if_dates_widest for r in result.requirements):
        return Outcome("unknown", f"{summary}; partial dates could meet it", ev)
    if crit.unknown_duration_runs_to_as_of and all(
        r.met_if_unknown_ran for r in result.requirements
    ):
        return Outcome("unknown", f"{summary}; records of unknown duration could meet it", ev)
    return Outcome("not_met", summary, ev)
