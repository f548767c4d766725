"""Logging set-up for the CLI: nothing logged may carry a query string (values can be patient
ids), whichever library logs it.

Third-party loggers (urllib3 logs ``"GET /fhir/Condition?patient=... HTTP/1.1" 200``) stay at
WARNING unless asked for with ``-vvv``; and a filter on every root handler strips the query from
any URL or absolute path in any record, as a second line of defence.
"""

from __future__ import annotations

import logging
import re

__all__ = ["THIRD_PARTY", "RedactQueries", "configure", "strip_queries"]

# loggers that print request lines with their query strings
THIRD_PARTY = ("urllib3", "requests")
FORMAT = "%(levelname)s %(name)s: %(message)s"

# a URL or path (a word with a "/" before its "?"), then ?query: the query goes
_QUERY = re.compile(r"(?P<keep>[^\s?#\"'<>]*/[^\s?#\"'<>]*)\?[^\s\"'<>]*")


def strip_queries(text: str) -> str:
    """``text`` with the query string of every URL and absolute path removed.

    >>> strip_queries('h:8080 "GET /fhir/Condition?patient=p1&_count=10 HTTP/1.1" 200')
    'h:8080 "GET /fhir/Condition HTTP/1.1" 200'
    >>> strip_queries("see https://ehr.example.org/fhir/Patient?_id=42 then stop? yes")
    'see https://ehr.example.org/fhir/Patient then stop? yes'
    >>> strip_queries("ehr:443/fhir/$export?_type=Patient&_typeFilter=Observation%3Fcode%3D1")
    'ehr:443/fhir/$export'
    """
    return _QUERY.sub(r"\g<keep>", text)


class RedactQueries(logging.Filter):
    """Rewrites a record's message (and its traceback text) without query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler's own error path
            return True
        clean = strip_queries(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = strip_queries(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = strip_queries(record.stack_info)
        return True


def configure(verbose: int) -> None:
    """0: warnings, 1: info, 2: debug of fhir-cohort, 3+: debug of the HTTP libraries too."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactQueries) for f in handler.filters):
            handler.addFilter(RedactQueries())
    root.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose >= 3 else logging.WARNING)
