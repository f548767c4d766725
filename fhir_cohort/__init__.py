"""fhir-cohort: find clinical-trial candidates in FHIR R4 data, with evidence.

The public API is what ``__all__`` lists; every other module is private and may change.
"""

__version__ = "0.1.0"

# Imported after __version__: pipeline reads it while this package is still initialising.
from fhir_cohort.criteria import Trial, load_criteria
from fhir_cohort.errors import (
    AuthError,
    BulkExportError,
    BulkExportTimeout,
    BulkJobExpiredError,
    CapabilityError,
    CriteriaError,
    FhirCohortError,
    FhirHttpError,
    MalformedResourceError,
    OptionError,
    OriginError,
    SourceError,
    TerminologyError,
)
from fhir_cohort.pipeline import screen
from fhir_cohort.remote import ServerOptions
from fhir_cohort.results import ScreeningResult, load_results
from fhir_cohort.terminology import Terminology

__all__ = [
    "AuthError",
    "BulkExportError",
    "BulkExportTimeout",
    "BulkJobExpiredError",
    "CapabilityError",
    "CriteriaError",
    "FhirCohortError",
    "FhirHttpError",
    "MalformedResourceError",
    "OptionError",
    "OriginError",
    "ScreeningResult",
    "ServerOptions",
    "SourceError",
    "Terminology",
    "TerminologyError",
    "Trial",
    "__version__",
    "load_criteria",
    "load_results",
    "screen",
]
