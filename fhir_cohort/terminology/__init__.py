"""Terminology: value sets, code normalisation and medication agents (see docs/architecture.md).

Attributes are imported on first use (see fhir_cohort/_lazy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

_EXPORTS = {
    "Agent": "fhir_cohort.terminology.core",
    "AgentMatch": "fhir_cohort.terminology.core",
    "Terminology": "fhir_cohort.terminology.core",
    "ValueSet": "fhir_cohort.terminology.core",
    "default_directory": "fhir_cohort.terminology.core",
    "is_non_systemic_text": "fhir_cohort.terminology.forms",
    "normalize_code": "fhir_cohort.terminology.codes",
    "normalize_system": "fhir_cohort.terminology.codes",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fhir_cohort.terminology.codes import normalize_code, normalize_system
    from fhir_cohort.terminology.core import (
        Agent,
        AgentMatch,
        Terminology,
        ValueSet,
        default_directory,
    )
    from fhir_cohort.terminology.forms import is_non_systemic_text

__all__ = [
    "Agent",
    "AgentMatch",
    "Terminology",
    "ValueSet",
    "default_directory",
    "is_non_systemic_text",
    "normalize_code",
    "normalize_system",
]
