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


def _reads(node: Any) -> tuple[frozenset[str], frozenset[str]] | None:
    got = _READS[node.criterion.type]
    return None if got is None else (frozenset(got[0]), frozenset(got[1]))


register(QueryType("legacy", _evaluate, _reads))
