"""The six shorthand criterion types of the first criteria files, expanded into rule criteria.

``age``, ``condition_present``, ``medication_history``, ``lab_positive``, ``condition_rules``
and ``pregnancy_lactation`` are written as today in a criteria file; on load each becomes a
:class:`~fhir_cohort.criteria.models.RuleCriterion` whose rule is built from the general
queries and groups (docs/criteria.md, "Shorthands"). Nothing here knows a trial.
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.language import (
    AllOf,
    AnyOf,
    ConditionQuery,
    Legacy,
    MedicationQuery,
    PatientQuery,
    Window,
)
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


def _age(crit: Any) -> Any:
    """Age bounds at S; deceased on or before S is false (spec I1)."""
    return PatientQuery(
        type="patient",
        min_age=crit.min_years,
        max_age=crit.max_years,
        deceased_is_false=crit.deceased_is_not_met,
    )


def _condition_present(crit: Any) -> Any:
    """One condition query with the same value sets and status rules."""
    return ConditionQuery(
        type="condition",
        value_sets=crit.value_sets,
        unknown_value_sets=crit.unknown_value_sets,
        not_counted_value_sets=crit.not_counted_value_sets,
        require_active=crit.require_active,
        status_rules=crit.status_rules,
    )


def _condition_rules(crit: Any) -> Any:
    """Any of one condition query per rule: an ``excluded`` rule is a definite match, a
    ``review`` rule a possible one; ``within_days`` is a day window before S in which an undated
    record counts as inside when ``undated_counts_as_within``."""
    undated = "inside" if crit.undated_counts_as_within else "outside"
    return AnyOf(
        type="any",
        of=[
            ConditionQuery(
                type="condition",
                value_sets=rule.value_sets,
                match="definite" if rule.answer == "excluded" else "possible",
                reason=rule.reason,
                require_active=rule.require_active,
                severity_codes=rule.severity_codes,
                named_classes=rule.named_classes,
                date_basis=rule.date_basis,
                within=(
                    None
                    if rule.within_days is None
                    else Window(days=rule.within_days, undated=undated)
                ),
                status_rules=crit.status_rules,
            )
            for rule in crit.rules
        ],
    )


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
EXPANSIONS: dict[str, Any] = {
    "age": _age,
    "condition_present": _condition_present,
    "condition_rules": _condition_rules,
    "medication_history": _medication_history,
}
