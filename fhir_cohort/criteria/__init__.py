"""Criteria as data: pydantic models of a trial's criteria file, YAML/JSON load and dump."""

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
