"""fhir-cohort: find clinical-trial candidates in FHIR R4 data, with evidence."""

from fhir_cohort.errors import FhirCohortError

__version__ = "0.1.0"

__all__ = ["FhirCohortError", "__version__"]
