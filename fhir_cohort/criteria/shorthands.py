"""The six shorthand criterion types of the first criteria files, expanded into rule criteria.

``age``, ``condition_present``, ``medication_history``, ``lab_positive``, ``condition_rules``
and ``pregnancy_lactation`` are written as today in a criteria file; on load each becomes a
:class:`~fhir_cohort.criteria.models.RuleCriterion` whose rule is built from the general
queries and groups (docs/criteria.md, "Shorthands"). Nothing here knows a trial.
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.language import AllOf, Legacy, MedicationQuery, Window
from fhir_cohort.criteria.models import MedicationHistoryCriterion, RuleCriterion


def expand(crit: Any) -> RuleCriterion:
    """A rule criterion for any criterion (a rule criterion is returned unchanged)."""
    if isinstance(crit, RuleCriterion):
        return crit
    rule = EXPANSIONS.get(crit.type, _legacy)(crit)
    return RuleCriterion(
        id=crit.id,
        kind=crit.kind,
        title=crit.title,
        description=crit.description,
        rule=rule,
        written_as=crit,
    )


def _legacy(crit: Any) -> Any:
    return Legacy(type="legacy", criterion=crit)


def _medication_history(crit: MedicationHistoryCriterion) -> AllOf:
    """Every requirement met: one medication query per requirement (its optional value sets
    joined when its switch is on, else shown as not counted), all in the same window; the
    review note is added when all are met."""
    common = {
        "type": "medication",
        "within": Window(months=crit.window_months),
        "min_era_days": crit.min_era_days,
        "persistence_gap_days": crit.persistence_gap_days,
        "coverage_per_dose_days": dict(crit.coverage_per_dose_days),
        "default_coverage_days": crit.default_coverage_days,
        "systemic_only": crit.systemic_only,
        "non_systemic_routes": list(crit.non_systemic_routes),
        "non_systemic_forms": list(crit.non_systemic_forms),
        "non_systemic_words": list(crit.non_systemic_words),
        "unknown_duration_runs_to_as_of": crit.unknown_duration_runs_to_as_of,
        "status_rules": crit.status_rules,
    }
    queries = []
    for req in crit.requirements:
        switched_off = req.enabled_by is not None and not crit.switch(req.enabled_by)
        queries.append(
            MedicationQuery(
                label=req.label,
                value_sets=crit.active_value_sets(req),
                not_counted_value_sets=list(req.optional_value_sets) if switched_off else [],
                not_counted_reason=f"{req.enabled_by} is false" if switched_off else "",
                agent_grouping=req.agent_grouping,
                min_agents=req.min_agents,
                **common,
            )
        )
    return AllOf(type="all", of=queries, note=crit.review_note)


# shorthand type -> function(criterion) -> expression
EXPANSIONS: dict[str, Any] = {"medication_history": _medication_history}
