"""Criteria as data: pydantic models of a trial's criteria file, YAML/JSON load and dump.

Attributes are imported on first use (see fhir_cohort/_lazy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

_EXPORTS = {
    "AgeCriterion": "fhir_cohort.criteria.models",
    "ConditionPresentCriterion": "fhir_cohort.criteria.models",
    "ConditionRule": "fhir_cohort.criteria.models",
    "ConditionRulesCriterion": "fhir_cohort.criteria.models",
    "ConditionStatusRules": "fhir_cohort.criteria.models",
    "Criterion": "fhir_cohort.criteria.models",
    "LabPositiveCriterion": "fhir_cohort.criteria.models",
    "LabRules": "fhir_cohort.criteria.models",
    "MedicationHistoryCriterion": "fhir_cohort.criteria.models",
    "MedicationRequirement": "fhir_cohort.criteria.models",
    "MedicationStatusRules": "fhir_cohort.criteria.models",
    "PregnancyLactationCriterion": "fhir_cohort.criteria.models",
    "Trial": "fhir_cohort.criteria.models",
    "check_value_sets": "fhir_cohort.criteria.io",
    "default_criteria_path": "fhir_cohort.criteria.io",
    "dump_criteria": "fhir_cohort.criteria.io",
    "dumps": "fhir_cohort.criteria.io",
    "load_criteria": "fhir_cohort.criteria.io",
    "loads": "fhir_cohort.criteria.io",
    "value_set_ids": "fhir_cohort.criteria.io",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fhir_cohort.criteria.io import (
        check_value_sets,
        default_criteria_path,
        dump_criteria,
        dumps,
        load_criteria,
        loads,
        value_set_ids,
    )
    from fhir_cohort.criteria.models import (
        AgeCriterion,
        ConditionPresentCriterion,
        ConditionRule,
        ConditionRulesCriterion,
        ConditionStatusRules,
        Criterion,
        LabPositiveCriterion,
        LabRules,
        MedicationHistoryCriterion,
        MedicationRequirement,
        MedicationStatusRules,
        PregnancyLactationCriterion,
        Trial,
    )

__all__ = [
    "AgeCriterion",
    "ConditionPresentCriterion",
    "ConditionRule",
    "ConditionRulesCriterion",
    "ConditionStatusRules",
    "Criterion",
    "LabPositiveCriterion",
    "LabRules",
    "MedicationHistoryCriterion",
    "MedicationRequirement",
    "MedicationStatusRules",
    "PregnancyLactationCriterion",
    "Trial",
    "check_value_sets",
    "default_criteria_path",
    "dump_criteria",
    "dumps",
    "load_criteria",
    "loads",
    "value_set_ids",
]
