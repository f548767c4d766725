"""The six shorthand criterion types of the first criteria files, expanded into rule criteria.

``age``, ``condition_present``, ``medication_history``, ``lab_positive``, ``condition_rules``
and ``pregnancy_lactation`` are written as today in a criteria file; on load each becomes a
:class:`~fhir_cohort.criteria.models.RuleCriterion` whose rule is built from the general
queries and groups (docs/criteria.md, "Shorthands"). Nothing here knows a trial.
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.language import Legacy
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


# shorthand type -> function(criterion) -> expression
EXPANSIONS: dict[str, Any] = {}
