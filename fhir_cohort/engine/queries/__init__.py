"""One registration per query type: its evaluator, what it reads, and what it requires.

Adding a query type means: a model in criteria/language.py (in the ``Expr`` union) and one
module here that calls :func:`register` with a :class:`QueryType`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_cohort.engine.rules import Result, Scope


@dataclass(frozen=True)
class QueryType:
    name: str
    # (node, scope) -> Result
    evaluate: Callable[[Any, Scope], Result]
    # node -> (tables, patient fields, value sets) it reads, for the no-rows shortcut: the
    # value sets whose rows it can read (it ignores a row in none of them; None: it may read
    # any row of its tables). None: evaluated for every patient.
    reads: Callable[[Any], tuple[frozenset[str], frozenset[str], frozenset[str] | None] | None]
    # node -> what it needs from the data (fhir_cohort.requirements); None: nothing.
    requires: Callable[[Any, Any], None] | None = None


REGISTRY: dict[str, QueryType] = {}


def register(qt: QueryType) -> QueryType:
    if qt.name in REGISTRY:
        raise ValueError(f"query type {qt.name!r} registered twice")
    REGISTRY[qt.name] = qt
    return qt


# Each module registers itself on import.
from fhir_cohort.engine.queries import (  # noqa: E402
    condition,  # noqa: F401
    medication,  # noqa: F401
    observation,  # noqa: F401
    patient,  # noqa: F401
)

__all__ = ["REGISTRY", "QueryType", "register"]
