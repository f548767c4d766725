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
    MedicationQuery,
    ObservationQuery,
    PatientQuery,
    Window,
)
from fhir_cohort.criteria.models import ConditionRule, MedicationHistoryCriterion, RuleCriterion


def expand(crit: Any) -> RuleCriterion:
    """A rule criterion for any criterion (a rule criterion is returned unchanged)."""
    if isinstance(crit, RuleCriterion):
        return crit
    rule = EXPANSIONS[crit.type](crit)
    return RuleCriterion(
        id=crit.id,
        kind=crit.kind,
        title=crit.title,
        description=crit.description,
        rule=rule,
        written_as=crit,
    )


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
        type="any", of=[_rule_query(rule, crit.status_rules, undated) for rule in crit.rules]
    )


def _rule_query(rule: ConditionRule, status_rules: Any, undated: str) -> ConditionQuery:
    return ConditionQuery(
        type="condition",
        value_sets=rule.value_sets,
        match="definite" if rule.answer == "excluded" else "possible",
        reason=rule.reason,
        require_active=rule.require_active,
        severity_codes=rule.severity_codes,
        named_classes=rule.named_classes,
        date_basis=rule.date_basis,
        within=(
            None if rule.within_days is None else Window(days=rule.within_days, undated=undated)
        ),
        status_rules=status_rules,
    )


def _lab_positive(crit: Any) -> Any:
    """I4-style: a positive result within the lookback; an older positive, an equivocal
    result or no test at all is unknown (a human reads the chart)."""
    return ObservationQuery(
        type="observation",
        value_sets=list(crit.value_sets),
        lab_rules=crit.lab_rules,
        result="positive",
        equivocal="unknown",
        positive_before_window="unknown",
        within=Window(days=crit.lookback_days),
        missing="unknown",
    )


def _pregnancy_lactation(crit: Any) -> Any:
    """E3-style: pregnancy (condition with a recent onset, status answer "pregnant", positive
    hCG, positive test coded as a diagnosis) or lactation (condition, breastfeeding answer or
    finding); a recent delivery or an obstetric code of no phase is review. Not assessed for
    the sexes in applies_to_sexes_not."""
    w = crit.lab_rules

    def obs(vs: list[str], days: int, label: str, **kw: Any) -> ObservationQuery:
        return ObservationQuery(
            type="observation",
            value_sets=list(vs),
            lab_rules=w,
            label=label,
            within=Window(days=days, undated=kw.pop("undated", "outside")),
            **kw,
        )

    hcg_days = crit.hcg_within_days
    parts: list[Any] = [
        *_pregnancy_conditions(crit),
        obs(
            crit.pregnancy_status_value_sets,
            crit.pregnancy_status_within_days,
            "pregnancy status pregnant",
            answer_value_sets=list(crit.pregnancy_status_pregnant_value_sets),
        ),
        obs(
            crit.hcg_value_sets,
            hcg_days,
            "hCG",
            result="positive",
            equivocal="unknown" if crit.hcg_equivocal_answer == "review" else "false",
            positive_before_window="false",
            reason=f"positive hCG within {hcg_days} days",
        ),
        # A breastfeeding-status answer, or a lactation finding coded as the Observation
        # itself (unless its value says no); an undated one cannot be ruled out.
        obs(
            crit.breastfeeding_status_value_sets,
            crit.breastfeeding_status_within_days,
            "breastfeeding status",
            answer_value_sets=list(crit.breastfeeding_status_breastfeeding_value_sets),
            answer_texts=list(crit.breastfeeding_answer_texts),
            undated="unknown",
        ),
        obs(
            crit.lactation_value_sets,
            crit.breastfeeding_status_within_days,
            "breastfeeding status",
            undated="unknown",
        ),
    ]
    return AllOf(
        type="all",
        of=[
            PatientQuery(
                type="patient",
                sexes_not=list(crit.applies_to_sexes_not),
                deceased_is_false=False,
                reason="",  # a gate: the reason is the part that decides
            ),
            AnyOf(type="any", of=parts),
        ],
    )


def _pregnancy_conditions(crit: Any) -> list[Any]:
    """The condition half of E3 (Condition and Procedure records) as condition rules, where a
    record without the date its window reads cannot be placed: unknown."""
    d = crit.pregnancy_onset_within_days
    t = crit.pregnancy_test_within_days
    rules = [
        # The spec dates a pregnancy by its onset: an old pregnancy recorded late is not new.
        ConditionRule(
            value_sets=crit.pregnancy_value_sets,
            answer="excluded",
            within_days=d,
            date_basis="onset",
            reason=f"active pregnancy with onset within {d} days",
        ),
        ConditionRule(
            value_sets=crit.lactation_value_sets, answer="excluded", reason="active lactation"
        ),
        # Delivery: a Condition or a Procedure; a Procedure counts unless its status never does.
        ConditionRule(
            value_sets=crit.delivery_value_sets,
            answer="review",
            within_days=crit.delivery_within_days,
            require_active=False,
            reason=crit.delivery_reason,
        ),
        # v1.1: a positive pregnancy test coded as a diagnosis (Z32.01), dated by the test.
        ConditionRule(
            value_sets=crit.pregnancy_test_positive_value_sets,
            answer="excluded",
            within_days=t,
            date_basis="onset",
            require_active=False,
            reason=f"positive pregnancy test (diagnosis code) within {t} days",
        ),
        ConditionRule(
            value_sets=crit.phase_unspecified_value_sets,
            answer="review",
            within_days=crit.phase_unspecified_within_days,
            date_basis="onset",
            require_active=False,
            reason=crit.phase_unspecified_reason,
        ),
    ]
    return [_rule_query(r, crit.status_rules, "unknown") for r in rules]


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
    "lab_positive": _lab_positive,
    "medication_history": _medication_history,
    "pregnancy_lactation": _pregnancy_lactation,
}
