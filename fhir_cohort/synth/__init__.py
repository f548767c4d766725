"""Deterministic synthetic hospital with scenario patients and expected answers."""

from fhir_cohort.synth.generator import (
    EXPECTED_COLUMNS,
    RESOURCE_TYPES,
    GenerationSummary,
    PatientRecord,
    generate,
    iter_patients,
    load_expected,
)
from fhir_cohort.synth.scenarios import SCENARIOS, Scenario, age_answer, status_of

__all__ = [
    "EXPECTED_COLUMNS",
    "RESOURCE_TYPES",
    "SCENARIOS",
    "GenerationSummary",
    "PatientRecord",
    "Scenario",
    "age_answer",
    "generate",
    "iter_patients",
    "load_expected",
    "status_of",
]
