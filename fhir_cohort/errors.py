"""The exception tree. Library code raises these; only the CLI maps them to exit codes."""

from __future__ import annotations


class FhirCohortError(Exception):
    """Root of every error fhir-cohort raises on purpose."""


class OptionError(FhirCohortError, ValueError):
    """An option or argument is invalid (``--batch-size 0``, ``level='group'`` without a group).

    Raised before any work starts; the CLI maps it to the usage exit code. A ValueError too, so
    callers that caught the plain ValueError raised before keep working.
    """


class CriteriaError(FhirCohortError):
    """A criteria file is invalid; the message names the offending key."""


class TerminologyError(FhirCohortError):
    """A value set or concept map is missing or malformed."""


class SourceError(FhirCohortError):
    """Input data could not be read (missing path, malformed resource in --strict mode)."""


class MalformedResourceError(SourceError):
    """One resource could not be parsed or validated.

    ``location`` is ``file:line`` or a URL; the message never contains resource content (PHI).
    """

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in reader worker processes under --strict: must survive pickling back.
        return (type(self), (self.location, self.reason))


class FhirHttpError(FhirCohortError):
    """An HTTP exchange with a FHIR server failed after retries.

    Carries the method, the URL without query string (query values can be PHI), the status
    and the text of the server's OperationOutcome, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        outcome: str | None = None,
    ) -> None:
        parts = [message]
        if method and url:
            parts.append(f"[{method} {url}]")
        if status is not None:
            parts.append(f"HTTP {status}")
        if outcome:
            parts.append(f"OperationOutcome: {outcome}")
        super().__init__(" ".join(parts))
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.outcome = outcome


class TransientResponseError(FhirHttpError):
    """A 2xx response whose body was cut or garbled in transit (invalid JSON, a partial line).

    Raised by the code that reads a body inside :meth:`FhirClient.exchange`, which retries it
    like a 503; it escapes only when the retry budget is spent.
    """


class CrawlIncompleteError(FhirHttpError):
    """Some searches of a crawl failed after the retries; every other search finished and is
    journaled. No patient is screened with part of their records: the run stops, and the same
    command again fetches only what failed. The message counts searches and patients (no id).
    """


class BulkExportError(FhirHttpError):
    """A bulk export failed: kick-off refused, bad manifest, a file that stayed corrupt,
    incomplete or miscounted after the retries (the message names the file, never its content).
    """


class BulkJobExpiredError(BulkExportError):
    """The server no longer knows the export job (404/410 on its status or file URLs)."""


class BulkExportTimeout(BulkExportError):
    """The job is still running on the server when this run stops waiting (its deadline, or a
    Retry-After reaching past it); the job is saved in the folder and the next run continues it.
    The CLI says "export still running; run the same command again to continue" (exit 9)."""


class BulkExportAlreadyRunningError(BulkExportError):
    """The kick-off kept answering 429: another export by this client is running on the server
    (Oracle Health allows one per client and tenant, Epic one per client and Group). The CLI
    maps it to exit 8; the message says to let it finish or cancel it."""


class AuthError(FhirHttpError):
    """Authentication or authorisation with the FHIR server failed."""


class OriginError(FhirHttpError):
    """A link or redirect points where the client will not go: another origin than the base URL
    (unless the user allowed it), or from https down to plain http.

    Credentials (auth headers, user headers) go only to the base URL's origin; the message names
    both origins, never a query string.
    """


class CapabilityError(FhirCohortError):
    """The server lacks a resource type, search parameter or operation the plan needs."""


class HistoryError(FhirCohortError):
    """The screening history database cannot be used: not an SQLite database, damaged, written
    by a newer fhir-cohort (a schema version this one does not know), or an unknown run id."""


class DecisionError(FhirCohortError, ValueError):
    """A chart-review decision cannot be saved as given: an unknown decision or contact
    status, ``ineligible`` without a reason, no ``who``, a trial or patient the history has no
    run of. The message names the field and the allowed values, never a patient's data. A
    ValueError too: it is a bad argument."""


class DecisionConflict(FhirCohortError):
    """A decision was saved by someone else since it was read: the save named version
    ``expected``, the history holds ``current`` (its :class:`~fhir_cohort.history.Decision`, or
    None). Nothing was written; reload and save again. No patient data in the message."""

    def __init__(self, expected: int, current: object, actual: int) -> None:
        super().__init__(
            f"the decision was saved by someone else meanwhile (now version {actual}; this "
            f"save expected version {expected}): nothing written, reload it and save again"
        )
        self.expected = expected
        self.current = current
        self.actual = actual
