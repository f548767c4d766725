"""One evaluator per criterion type, in ONE registry: type name -> evaluator function.

An evaluator is ``(criterion, ctx, patient_data) -> Outcome`` and must be pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_cohort.engine.evaluators.age import evaluate_age
from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData
from fhir_cohort.engine.evaluators.condition_present import evaluate_condition_present
from fhir_cohort.engine.evaluators.condition_rules import evaluate_condition_rules
from fhir_cohort.engine.evaluators.lab_positive import evaluate_lab_positive
from fhir_cohort.engine.evaluators.pregnancy_lactation import evaluate_pregnancy_lactation

Evaluator = Callable[[Any, Context, PatientData], Outcome]

REGISTRY: dict[str, Evaluator] = {
    "age": evaluate_age,
    "condition_present": evaluate_condition_present,
    "lab_positive": evaluate_lab_positive,
    "condition_rules": evaluate_condition_rules,
    "pregnancy_lactation": evaluate_pregnancy_lactation,
}

__all__ = ["REGISTRY", "Context", "Evaluator", "Evidence", "Outcome", "PatientData"]
