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
    ObservationQuery,
    PatientQuery,
    Window,
)
from fhir_cohort.criteria.models import RuleCriterion


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
            ),
            AnyOf(type="any", of=parts),
        ],
    )


def _pregnancy_conditions(crit: Any) -> list[Any]:
    """The condition half of E3 (Condition and Procedure records), like condition_rules with
    an undated record that cannot be placed in its window read as unknown."""
    rules = crit.status_rules

    def cond(vs: list[str], reason: str, days: int | None = None, **kw: Any) -> ConditionQuery:
        return ConditionQuery(
            type="condition",
            value_sets=list(vs),
            status_rules=rules,
            within=None if days is None else Window(days=days, undated="unknown"),
            reason=reason,
            **kw,
        )

    return [
        # The spec dates a pregnancy by its onset: an old pregnancy recorded late is not new.
        cond(
            crit.pregnancy_value_sets,
            f"active pregnancy with onset within {crit.pregnancy_onset_within_days} days",
            crit.pregnancy_onset_within_days,
            require_active=True,
            date_basis="onset",
        ),
        cond(crit.lactation_value_sets, "active lactation", require_active=True),
        # A delivery (Condition or Procedure) counts unless its status never counts.
        cond(
            crit.delivery_value_sets,
            crit.delivery_reason,
            crit.delivery_within_days,
            match="possible",
        ),
        # v1.1: a positive pregnancy test coded as a diagnosis (Z32.01), dated by the test.
        cond(
            crit.pregnancy_test_positive_value_sets,
            "positive pregnancy test (diagnosis code) within "
            f"{crit.pregnancy_test_within_days} days",
            crit.pregnancy_test_within_days,
            date_basis="onset",
        ),
        cond(
            crit.phase_unspecified_value_sets,
            crit.phase_unspecified_reason,
            crit.phase_unspecified_within_days,
            date_basis="onset",
            match="possible",
        ),
    ]


# shorthand type -> function(criterion) -> expression
EXPANSIONS: dict[str, Any] = {"lab_positive": _lab_positive}
