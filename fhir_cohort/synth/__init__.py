"""Deterministic synthetic hospital with scenario patients and expected answers.

Attributes are imported on first use (see fhir_cohort/_lazy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

_EXPORTS = {
    "EXPECTED_COLUMNS": "fhir_cohort.synth.generator",
    "RESOURCE_TYPES": "fhir_cohort.synth.generator",
    "SCENARIOS": "fhir_cohort.synth.scenarios",
    "GenerationSummary": "fhir_cohort.synth.generator",
    "PatientRecord": "fhir_cohort.synth.generator",
    "Scenario": "fhir_cohort.synth.scenarios",
    "age_answer": "fhir_cohort.synth.scenarios",
    "generate": "fhir_cohort.synth.generator",
    "iter_patients": "fhir_cohort.synth.generator",
    "load_expected": "fhir_cohort.synth.generator",
    "status_of": "fhir_cohort.synth.scenarios",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
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
