"""Transitional: a shorthand criterion run by its own evaluator, its words read back as a
three-valued result. Replaced shorthand by shorthand by general queries (shorthands.py)."""

from __future__ import annotations

from typing import Any

from fhir_cohort.engine.evaluators import REGISTRY as OLD
from fhir_cohort.engine.queries import QueryType, register
from fhir_cohort.engine.rules import Result, Scope

_VALUES = {
    "met": True,
    "excluded": True,
    "not_met": False,
    "clear": False,
    "unknown": None,
    "review": None,
}

_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = {
    "medication_history": (("medications",), ()),
}


def _evaluate(node: Any, scope: Scope) -> Result:
    crit = node.criterion
    o = OLD[crit.type](crit, scope.ctx, scope.data)
    return Result(_VALUES[o.answer], o.reason, o.evidence, list(o.notes))


def _requires(node: Any, needs: Any) -> None:
    """As the old derivations read a shorthand: every value set it names (the walker adds
    them), resource types by what its evaluator reads, the whole history."""
    from fhir_cohort.criteria.io import _value_set_refs

    crit = node.criterion
    every = [vs for _, vs in _value_set_refs(crit, "")]
    needs.lookback(None)
    if crit.type == "age":
        needs.fields("birth_date_raw", "deceased", "deceased_date", "deceased_high")
    elif crit.type in ("condition_present", "condition_rules"):
        needs.resources("Condition", "Procedure")
        if crit.type == "condition_present":
            needs.entry([*crit.value_sets, *crit.unknown_value_sets])
    elif crit.type == "medication_history":
        # Optional value sets too, whatever the switch (as the reader always kept them).
        needs.medications(
            vs for req in crit.requirements for vs in (*req.value_sets, *req.optional_value_sets)
        )
    elif crit.type == "lab_positive":
        needs.observations(every)
    elif crit.type == "pregnancy_lactation":
        needs.resources("Condition", "Procedure")
        needs.observations(
            [
                *crit.pregnancy_status_value_sets,
                *crit.pregnancy_status_pregnant_value_sets,
                *crit.hcg_value_sets,
                *crit.breastfeeding_status_value_sets,
                *crit.breastfeeding_status_breastfeeding_value_sets,
            ]
        )
        needs.fields("gender")


def _reads(node: Any) -> tuple[frozenset[str], frozenset[str]] | None:
    got = _READS[node.criterion.type]
    return None if got is None else (frozenset(got[0]), frozenset(got[1]))


register(QueryType("legacy", _evaluate, _reads, _requires))
