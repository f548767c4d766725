"""Defaults of :class:`fhir_cohort.remote.ServerOptions`, apart from it so the CLI can build its
parser (and show them in ``--help``) without importing the server code: ``--help`` and an
option error answer without loading requests, pydantic and the JWT stack."""

from __future__ import annotations

__all__ = [
    "AUTO_BULK_THRESHOLD",
    "BATCH_SIZE",
    "BULK_MAX_WAIT",
    "BULK_POLL_MAX",
    "CONCURRENCY",
    "TIMEOUT",
]

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
# The longest one run waits for a Bulk export (and the longest server Retry-After it accepts)
# before it saves the job and stops ("export still running", exit 9); the next run continues.
# An hour covers cloud stores and HAPI; EHR exports (hours to weeks) are left to run on the
# server instead of blocking a terminal. --wait removes the limit.
BULK_MAX_WAIT = 3600.0
