"""Defaults of :class:`fhir_cohort.remote.ServerOptions`, apart from it so the CLI can build its
parser (and show them in ``--help``) without importing the server code: ``--help`` and an
option error answer without loading requests, pydantic and the JWT stack."""

from __future__ import annotations

__all__ = ["AUTO_BULK_THRESHOLD", "BATCH_SIZE", "BULK_POLL_MAX", "CONCURRENCY", "TIMEOUT"]

# --strategy auto uses Bulk Data when the entry query matches more Conditions than this.
AUTO_BULK_THRESHOLD = 5000
# Patients per follow-up query. Long queries go as POST _search, so a large batch costs
# one request per type instead of one per 50 patients (docs/benchmarks.md, REST funnel).
BATCH_SIZE = 500
CONCURRENCY = 4  # parallel requests
TIMEOUT = 120.0  # read timeout per request, seconds
# The longest wait between two Bulk export status polls (the server's Retry-After is honoured
# up to it): servers ask for minutes on jobs that finish sooner.
BULK_POLL_MAX = 60.0
