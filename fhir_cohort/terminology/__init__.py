"""Terminology: value sets, code normalisation and medication agents (see docs/architecture.md)."""

from fhir_cohort.terminology.codes import normalize_code, normalize_system
from fhir_cohort.terminology.core import (
    MEDICATION_VALUE_SETS,
    Agent,
    AgentMatch,
    Terminology,
    ValueSet,
    default_directory,
)
from fhir_cohort.terminology.forms import is_non_systemic_text

__all__ = [
    "MEDICATION_VALUE_SETS",
    "Agent",
    "AgentMatch",
    "Terminology",
    "ValueSet",
    "default_directory",
    "is_non_systemic_text",
    "normalize_code",
    "normalize_system",
]
