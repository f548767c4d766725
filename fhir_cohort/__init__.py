"""fhir-cohort: find clinical-trial candidates in FHIR R4 data, with evidence.

The public API is what ``__all__`` lists; every other module is private and may change.
Attributes are imported on first use, so importing one module (the CLI, ``fhir_cohort.fhir``)
does not load pandas and the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

# The exception tree is light (no imports): loaded eagerly.
from fhir_cohort.errors import (
    AuthError,
    BulkExportAlreadyRunningError,
    BulkExportError,
    BulkExportTimeout,
    BulkJobExpiredError,
    CapabilityError,
    CrawlIncompleteError,
    CriteriaError,
    DecisionConflict,
    DecisionError,
    FhirCohortError,
    FhirHttpError,
    HistoryError,
    MalformedResourceError,
    OptionError,
    OriginError,
    SourceError,
    TerminologyError,
)

__version__ = "0.1.0"

# Everything else on first use: name -> module.
_EXPORTS = {
    "Trial": "fhir_cohort.criteria",
    "load_criteria": "fhir_cohort.criteria",
    "Requirements": "fhir_cohort.requirements",
    "screen": "fhir_cohort.pipeline",
    "screen_many": "fhir_cohort.pipeline",
    "MultiScreeningResult": "fhir_cohort.results",
    "ServerOptions": "fhir_cohort.remote",
    "ScreeningResult": "fhir_cohort.results",
    "load_results": "fhir_cohort.results",
    "Terminology": "fhir_cohort.terminology",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fhir_cohort.criteria import Trial, load_criteria
    from fhir_cohort.pipeline import screen, screen_many
    from fhir_cohort.remote import ServerOptions
    from fhir_cohort.requirements import Requirements
    from fhir_cohort.results import MultiScreeningResult, ScreeningResult, load_results
    from fhir_cohort.terminology import Terminology

__all__ = [
    "AuthError",
    "BulkExportAlreadyRunningError",
    "BulkExportError",
    "BulkExportTimeout",
    "BulkJobExpiredError",
    "CapabilityError",
    "CrawlIncompleteError",
    "CriteriaError",
    "DecisionConflict",
    "DecisionError",
    "FhirCohortError",
    "FhirHttpError",
    "HistoryError",
    "MalformedResourceError",
    "MultiScreeningResult",
    "OptionError",
    "OriginError",
    "Requirements",
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
    "screen_many",
]
