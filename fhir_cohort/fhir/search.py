"""Immutable search queries and the paging generator.

Paging follows ``Bundle.link[relation=next]`` exactly as the server gave it (servers encode
state in it: offsets, cursors, snapshots), and refuses to visit the same next URL twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_cohort.errors import FhirHttpError, OptionError
from fhir_cohort.fhir.client import FHIR_JSON, outcome_text, strip_query

if TYPE_CHECKING:
    import requests

    from fhir_cohort.fhir.client import FhirClient

__all__ = [
    "MAX_GET_QUERY_CHARS",
    "SearchEntry",
    "SearchQuery",
    "iter_entries",
    "iter_pages",
]

log = logging.getLogger("fhir_cohort.fhir")

# Above this many characters of query string, search with POST [type]/_search (form body):
# many proxies and servers cut URLs at 2-8 KB.
MAX_GET_QUERY_CHARS = 1800
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]+$")
# parameters whose values identify patients (ids; identifiers such as MRNs, which the crawl
# resolves with Patient?identifier=): never shown in reports or logs
ID_PARAMS = frozenset(
    {"patient", "subject", "_id", "patient:Patient", "subject:Patient", "identifier"}
)


@dataclass(frozen=True)
class SearchQuery:
    """``resource_type`` plus ordered ``(name, value)`` pairs; repeated names mean AND.

    >>> q = SearchQuery("Condition").with_param("code", "http://snomed.info/sct|55464009")
    >>> q.to_params()
    [('code', 'http://snomed.info/sct|55464009')]
    >>> q.with_param("_count", "10").query_string()
    'code=http%3A%2F%2Fsnomed.info%2Fsct%7C55464009&_count=10'
    """

    resource_type: str
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _TYPE_RE.match(self.resource_type):
            raise OptionError(f"not a FHIR resource type: {self.resource_type!r}")
        pairs = tuple((str(k), str(v)) for k, v in self.params)
        for name, _ in pairs:
            if not name:
                raise OptionError("empty search parameter name")
        object.__setattr__(self, "params", pairs)

    def with_param(self, name: str, value: str) -> SearchQuery:
        return SearchQuery(self.resource_type, (*self.params, (name, value)))

    def without_param(self, name: str) -> SearchQuery:
        return SearchQuery(self.resource_type, tuple(p for p in self.params if p[0] != name))

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]

    def to_params(self) -> list[tuple[str, str]]:
        return list(self.params)

    def query_string(self) -> str:
        return urlencode(self.params)

    def describe(self) -> str:
        """The query with patient-identifying values replaced by a count: safe for run.json.

        >>> SearchQuery("Condition", (("patient", "a,b,c"), ("_count", "1000"))).describe()
        'Condition?patient=<3 ids>&_count=1000'
        """
        shown = []
        for name, value in self.params:
            if name in ID_PARAMS:
                value = f"<{len(value.split(','))} ids>"
            shown.append(f"{name}={value}")
        return f"{self.resource_type}?{'&'.join(shown)}" if shown else self.resource_type


@dataclass(frozen=True)
class SearchEntry:
    """One Bundle entry: the resource and its ``search.mode`` (match, include or outcome)."""

    resource: dict[str, Any]
    mode: str


_Page = tuple[dict[str, Any], "requests.Response"]


def _page(client: FhirClient) -> Callable[[requests.Response], _Page]:
    """The consume step of a page: decoded inside the retry loop, so a 200 page with a cut or
    garbled body is fetched again like a 503."""
    return lambda resp: (client.decode(resp, resource_type="Bundle"), resp)


def _first_page(client: FhirClient, query: SearchQuery, count: int | None) -> _Page:
    params = query.to_params()
    if count is not None and not query.get("_count"):
        params.append(("_count", str(count)))
    if len(urlencode(params)) > MAX_GET_QUERY_CHARS:
        # long queries (many ids or codes) go in a form body
        return client.exchange(
            "POST",
            f"{query.resource_type}/_search",
            _page(client),
            data=params,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": FHIR_JSON},
            search=True,
        )
    return client.exchange("GET", query.resource_type, _page(client), params=params, search=True)


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def iter_pages(
    client: FhirClient,
    query: SearchQuery,
    *,
    count: int | None = 1000,
    start_url: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield each searchset Bundle page of ``query``; from ``start_url`` (a next link of an
    earlier page, used as given) when resuming.

    Raises FhirHttpError on a response that is not a Bundle, or when a next link repeats.
    """
    if start_url is not None:
        bundle, resp = client.exchange("GET", client.url(start_url), _page(client), search=True)
    else:
        bundle, resp = _first_page(client, query, count)
    seen: set[str] = set()
    page = 0
    while True:
        _check_outcomes(client, bundle, resp)
        page += 1
        yield bundle
        nxt = _next_link(bundle)
        if nxt is None:
            return
        nxt = client.url(nxt)  # absolute links are used verbatim; relative ones are resolved
        if nxt in seen or nxt == resp.url:
            raise FhirHttpError(
                f"paging loop: the next link of page {page} points to a page already read",
                method="GET",
                url=strip_query(nxt),
            )
        seen.add(nxt)
        bundle, resp = client.exchange("GET", nxt, _page(client), search=True)


def _check_outcomes(client: FhirClient, bundle: dict[str, Any], resp: Any) -> None:
    """Outcome entries: errors fail the search when strict, warnings go to the debug log."""
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        mode = (entry.get("search") or {}).get("mode")
        res = entry.get("resource")
        if mode != "outcome" and not (
            isinstance(res, dict) and res.get("resourceType") == "OperationOutcome"
        ):
            continue
        text = outcome_text(res)
        severities = {
            i.get("severity") for i in (res or {}).get("issue") or [] if isinstance(i, dict)
        }
        if client.strict_search and severities & {"error", "fatal"}:
            raise FhirHttpError(
                "the server reported an error inside the search result",
                method=resp.request.method if resp.request is not None else None,
                url=strip_query(resp.url or ""),
                status=resp.status_code,
                outcome=text,
            )
        log.debug("search outcome from %s: %s", strip_query(resp.url or ""), text)


def iter_entries(pages: Iterable[dict[str, Any]]) -> Iterator[SearchEntry]:
    """Resources of the pages with their search mode; outcome entries are skipped.

    >>> page = {"resourceType": "Bundle", "entry": [
    ...     {"resource": {"resourceType": "Condition", "id": "1"}, "search": {"mode": "match"}},
    ...     {"resource": {"resourceType": "Medication", "id": "m"}, "search": {"mode": "include"}}]}
    >>> [(e.resource["id"], e.mode) for e in iter_entries([page])]
    [('1', 'match'), ('m', 'include')]
    """
    for bundle in pages:
        for entry in bundle.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            res = entry.get("resource")
            if not isinstance(res, dict) or not res.get("resourceType"):
                continue
            mode = (entry.get("search") or {}).get("mode") or "match"
            if mode == "outcome" or res.get("resourceType") == "OperationOutcome":
                continue
            yield SearchEntry(res, mode)
