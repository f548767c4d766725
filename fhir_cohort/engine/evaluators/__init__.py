"""One evaluator per not-yet-expanded shorthand type, in ONE registry: type name -> evaluator.

Transitional (engine/queries/legacy.py runs them): ``age``, ``condition_present``,
``condition_rules``, ``lab_positive`` and ``pregnancy_lactation`` are expanded into general
queries (criteria/shorthands.py); only ``medication_history`` is left.

An evaluator is ``(criterion, ctx, patient_data) -> Outcome`` and must be pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData
from fhir_cohort.engine.evaluators.medication_history import evaluate_medication_history

Evaluator = Callable[[Any, Context, PatientData], Outcome]

REGISTRY: dict[str, Evaluator] = {
    "medication_history": evaluate_medication_history,
}

__all__ = ["REGISTRY", "Context", "Evaluator", "Evidence", "Outcome", "PatientData"]
