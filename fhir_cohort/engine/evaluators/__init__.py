"""One evaluator per not-yet-expanded shorthand type, in ONE registry: type name -> evaluator.

Transitional (engine/queries/legacy.py runs them): ``age``, ``condition_present``,
``condition_rules`` and ``medication_history`` are expanded into patient / condition / medication
queries (criteria/shorthands.py).

An evaluator is ``(criterion, ctx, patient_data) -> Outcome`` and must be pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData

Evaluator = Callable[[Any, Context, PatientData], Outcome]

REGISTRY: dict[str, Evaluator] = {}

__all__ = ["REGISTRY", "Context", "Evaluator", "Evidence", "Outcome", "PatientData"]
