"""An EHR in front of the real test server: a small HTTP layer on 127.0.0.1 that enforces a
vendor profile (tests/ehr/profiles.py) and forwards what passes to sekmet-fhir.

    with EhrEmulator(server.base_url, EPIC) as ehr:
        FhirClient(ehr.base_url) ...      # Epic-like: patient required, one patient, ...
        ehr.stats.requests, ehr.stats.bytes_out, ehr.stats.rejected

The listener is tests/local_http.py's ``LocalServer``; forwarding rewrites the upstream's URLs
in bodies and ``Location``/``Content-Location`` to the emulator, as the fault proxy does, so a
client keeps talking to the emulator (next links, Bulk status and file URLs).

Epic-like searches are answered from paging sessions the emulator keeps (Epic's cached search
sessions, which expire: 4113): the emulator reads every upstream page of the search at once,
then serves pages of ``_count`` (or the profile's page size) with ``sessionID`` next links.
Others pass upstream pages through. Counting is per client request: requests, bytes sent,
answers per status and per rule, and the rows a post-filter made the server read.

Used by the tests (tests/ehr/) and by benchmarks/rest_crawl.py. One client per emulator: the
"one export at a time" rules do not tell clients apart.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import urllib3

from tests.ehr.profiles import (
    PLAIN,
    Answer,
    IgnoredParam,
    NoMetaLastUpdated,
    OneExportAtATime,
    PagingSessions,
    PostFilter,
    Profile,
    Req,
    epic_outcome,
)
from tests.local_http import LocalServer

__all__ = ["EhrEmulator", "Stats", "parse"]

# Never forwarded as received: hop-by-hop, or recomputed here.
_DROP_REQUEST = {"host", "connection", "keep-alive", "accept-encoding", "content-length", "te"}
_KEEP_RESPONSE = {"content-type", "content-location", "location", "retry-after", "x-progress",
                  "expires", "etag", "last-modified"}  # fmt: skip
_CASE = {k.lower(): k for k in ("Content-Type", "Content-Location", "Location", "Retry-After",
                                 "X-Progress", "Expires", "ETag", "Last-Modified")}  # fmt: skip
_SESSION = ("sessionID", "pageOffset")  # the emulator's own paging parameters
_UPSTREAM_PAGE = 1000  # sekmet-fhir's largest page: fewest upstream requests per session


def parse(method: str, target: str, body: bytes, headers: Mapping[str, str]) -> Req:
    """The request as the rules see it; ``target`` is path and query below the FHIR base."""
    parts = urlsplit(target)
    path = parts.path.strip("/")
    params = parse_qsl(parts.query, keep_blank_values=True)
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    form = method == "POST" and path.endswith("/_search") and "form-urlencoded" in ctype
    if form:
        params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return Req(method, path, tuple(params), dict(headers), form)


def _query(params: tuple[tuple[str, str], ...]) -> str:
    return urlencode(params, quote_via=quote, safe=",|:/$*")


@dataclass
class Stats:
    """What the client did through the emulator (thread-safe via the emulator's lock)."""

    requests: int = 0
    bytes_out: int = 0  # response bodies sent to the client
    statuses: Counter[int] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # rule name -> answers it gave
    searches: Counter[str] = field(default_factory=Counter)  # resource type -> first pages
    pages: int = 0  # search pages served (first and next)
    rows_read: int = 0  # rows the server read for post-filtered searches (Epic)
    upstream_requests: int = 0
    log: list[tuple[str, str, int, int, str | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "bytes": self.bytes_out,
            "statuses": dict(self.statuses),
            "rejected": dict(self.rejected),
            "searches": dict(self.searches),
            "pages": self.pages,
            "rows_read": self.rows_read,
            "upstream_requests": self.upstream_requests,
        }


@dataclass
class _Session:
    entries: list[dict[str, Any]]
    total: int | None
    query: tuple[tuple[str, str], ...]  # the client's query, session params left out
    created: float


class EhrEmulator:
    """See the module doc. ``start()``/``stop()`` or a context manager."""

    def __init__(
        self,
        upstream_base: str,
        profile: Profile = PLAIN,
        *,
        session_ttl: float = 3600.0,
        limits: Mapping[str, int] | None = None,
        export_seconds: float = 0.0,
    ) -> None:
        parts = urlsplit(upstream_base.rstrip("/"))
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self.upstream_base = upstream_base.rstrip("/")
        self.profile = profile
        self.session_ttl = session_ttl
        self._limits = dict(limits or {})
        self._lock = threading.Lock()
        self._pool = urllib3.PoolManager(maxsize=32, retries=False)
        self._sessions: dict[str, _Session] = {}
        self._exports: dict[str, str] = {}  # export key -> upstream status URL
        # A real export runs for hours: for this long (or until finish_exports) its status
        # answers "in-progress" here, whatever the test server has done.
        self.export_seconds = export_seconds
        self._held: dict[str, float] = {}  # upstream status URL -> when the kick-off came
        self.stats = Stats()
        # A test's outage: a request for which this returns a status gets it (an
        # OperationOutcome, no rule named), before any rule; None: no fault.
        self.fail: Callable[[Req], int | None] | None = None
        self._server = LocalServer(self._handle)
        self.root_url = self._server.root_url
        self.base_url = self._server.base_url
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> EhrEmulator:
        self._thread = threading.Thread(
            target=self._server.httpd.serve_forever, name="ehr-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.httpd.shutdown()
        self._server.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.clear()

    def __enter__(self) -> EhrEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget counts, paging sessions, running exports and faults (the profile stays)."""
        with self._lock:
            self.stats = Stats()
            self.fail = None
            self._sessions.clear()
            self._exports.clear()
            self._held.clear()

    def finish_exports(self) -> None:
        """Running exports may complete now (their status comes from the test server)."""
        with self._lock:
            self._held.clear()

    def _holding(self, status_url: str) -> bool:
        with self._lock:
            started = self._held.get(status_url)
            if started is not None and time.monotonic() - started >= self.export_seconds:
                del self._held[status_url]
                started = None
        return started is not None

    def expire_sessions(self) -> None:
        """Every cached paging session expires now (Epic 4113 on the next page)."""
        with self._lock:
            self._sessions.clear()

    # -- state the rules read -----------------------------------------------------------------

    def limit(self, rule: str, default: int) -> int:
        return self._limits.get(rule, default)

    def export_running(self, key: str, release_on_complete: bool) -> bool:
        with self._lock:
            status_url = self._exports.get(key)
        if status_url is None:
            return False
        if self._holding(status_url):
            return True
        if release_on_complete:
            resp = self._pool.request("GET", status_url, headers={"Accept": "application/json"})
            if resp.status == 200:
                with self._lock:
                    self._exports.pop(key, None)
                return False
        return True

    # -- the exchange -------------------------------------------------------------------------

    def _handle(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        prefix = urlsplit(self.base_url).path
        target = path[len(prefix) :] if path.startswith(prefix) else path
        req = parse(method, target, body, headers)
        answer = self._answer(req, target, body)
        out = dict(answer.headers)
        with self._lock:
            s = self.stats
            s.requests += 1
            s.bytes_out += len(answer.body)
            s.statuses[answer.status] += 1
            if answer.rule:
                s.rejected[answer.rule] += 1
            if req.is_search:
                s.pages += 1
                if not req.has("sessionID"):
                    s.searches[req.resource_type or "?"] += 1
            s.log.append((method, target, answer.status, len(answer.body), answer.rule))
        return answer.status, out, answer.body

    def _answer(self, req: Req, target: str, body: bytes) -> Answer:
        profile = self.profile
        status = self.fail(req) if self.fail is not None else None
        if status is not None:
            outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "transient"}]}
            return Answer(status, json.dumps(outcome).encode())
        for rule in profile.rules:
            rejected = rule.reject(req, self)
            if rejected is not None:
                return rejected
        if req.parts == ["metadata"] and req.method == "GET":
            answer = self._forward(req, target, body)
            if answer.status == 200:
                cs = profile.capability(answer.json())
                answer = Answer(200, json.dumps(cs).encode(), answer.headers)
            return answer
        if req.method == "GET" and req.parts[:1] == ["bulk-status"]:
            url = f"{self.upstream_base}/{req.path}"
            if self._holding(url):
                headers = {"X-Progress": "in-progress", "Retry-After": "1"}
                return Answer(202, b"", headers)
        up = req
        for rule in profile.rules:
            up = rule.rewrite(up)
        if req.is_search and profile.rule(PagingSessions) is not None:
            answer = self._session_search(req, up)
        else:
            answer = self._forward(up, target if up == req else None, body)
        self._track_export(req, answer)
        for rule in profile.rules:
            answer = rule.respond(req, answer, self)
        if profile.rule(NoMetaLastUpdated) is not None and answer.status == 200:
            answer = _strip_last_updated(answer)
        return answer

    def _track_export(self, req: Req, answer: Answer) -> None:
        rule = self.profile.rule(OneExportAtATime)
        if rule is None:
            return
        assert isinstance(rule, OneExportAtATime)
        if req.export_level == "group" and answer.status == 202:
            location = next(
                (v for k, v in answer.headers.items() if k.lower() == "content-location"), ""
            )
            url = self._to_upstream(location)
            with self._lock:
                self._exports[rule.key(req)] = url
                if self.export_seconds > 0:
                    self._held[url] = time.monotonic()
        elif req.method == "DELETE" and req.parts[:1] == ["bulk-status"]:
            with self._lock:
                for key, url in list(self._exports.items()):
                    if url.rstrip("/").endswith("/" + req.parts[-1]):
                        del self._exports[key]
                        self._held.pop(url, None)

    # -- upstream -----------------------------------------------------------------------------

    def _to_upstream(self, url: str) -> str:
        return url.replace(self.root_url, self.upstream_origin)

    def _rewrite(self, data: bytes) -> bytes:
        return data.replace(self.upstream_origin.encode(), self.root_url.encode())

    def _send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> Any:
        with self._lock:
            self.stats.upstream_requests += 1
        return self._pool.request(
            method, url, body=body, headers=dict(headers), redirect=False, decode_content=True
        )

    def _forward(self, req: Req, target: str | None, body: bytes) -> Answer:
        """Send ``req`` upstream (``target`` as received when the request is unchanged)."""
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _DROP_REQUEST}
        headers["Accept-Encoding"] = "identity"
        if target is None:
            if req.form:
                target, body = req.path, _query(req.params).encode()
            else:
                target = req.path + ("?" + _query(req.params) if req.params else "")
        url = f"{self.upstream_base}/{target.lstrip('/')}"
        try:
            resp = self._send(req.method, url, body or None, headers)
        except urllib3.exceptions.HTTPError:
            return Answer(502, b"upstream unreachable", {"Content-Type": "text/plain"})
        out = {
            _CASE.get(k.lower(), k): self._rewrite(v.encode()).decode()
            for k, v in resp.headers.items()
            if k.lower() in _KEEP_RESPONSE
        }
        return Answer(resp.status, self._rewrite(resp.data or b""), out)

    def _upstream_json(self, url: str, headers: Mapping[str, str]) -> tuple[int, Any, bytes]:
        resp = self._send("GET", url, None, headers)
        data = resp.data or b""
        try:
            return resp.status, json.loads(data), data
        except ValueError:
            return resp.status, None, data

    # -- Epic-like paging sessions ------------------------------------------------------------

    def _session_search(self, req: Req, up: Req) -> Answer:
        sid = req.values("sessionID")
        if sid:
            return self._session_page(req, sid[-1])
        profile = self.profile
        headers = {k: v for k, v in req.headers.items() if k.lower() in ("authorization", "accept")}
        headers.setdefault("Accept", "application/fhir+json")
        pf = profile.rule(PostFilter)
        upstream_params = up.without(*_SESSION).with_count(_UPSTREAM_PAGE).params
        url: str | None = f"{self.upstream_base}/{req.resource_type}?{_query(upstream_params)}"
        entries: list[dict[str, Any]] = []
        total: int | None = None
        while url:
            status, doc, raw = self._upstream_json(url, headers)
            if status != 200 or not isinstance(doc, dict):
                ctype = "application/fhir+json" if doc is not None else "text/plain"
                return Answer(status, self._rewrite(raw), {"Content-Type": ctype})
            if total is None:
                total = doc.get("total")
            entries.extend(doc.get("entry") or [])
            url = next(
                (
                    link.get("url")
                    for link in doc.get("link") or []
                    if link.get("relation") == "next"
                ),
                None,
            )
        if isinstance(pf, PostFilter) and pf.applies(req):
            # The server reads every row of the native search, then filters.
            native = (
                *up.without(*pf.params, *_SESSION).with_count(0).params,
                ("_summary", "count"),
            )
            count_url = f"{self.upstream_base}/{req.resource_type}?{_query(native)}"
            status, doc, _ = self._upstream_json(count_url, headers)
            read = doc.get("total", 0) if status == 200 and isinstance(doc, dict) else 0
            with self._lock:
                self.stats.rows_read += int(read or 0)
        ignored = profile.rule(IgnoredParam)
        outcomes = ignored.warnings(req) if isinstance(ignored, IgnoredParam) else []
        for oo in outcomes:
            entries.append({"resource": oo, "search": {"mode": "outcome"}})
        query = req.without(*_SESSION).params
        session = _Session(entries, total, query, time.monotonic())
        return self._serve(req, session, 0, None)

    def _page_size(self, req: Req) -> int:
        asked = req.values("_count")
        try:
            return max(1, int(asked[-1])) if asked else self.profile.page_size
        except ValueError:
            return self.profile.page_size

    def _serve(self, req: Req, session: _Session, offset: int, sid: str | None) -> Answer:
        size = self._page_size(req)
        page = session.entries[offset : offset + size]
        more = offset + size < len(session.entries)
        if more and sid is None:
            sid = secrets.token_hex(8)
            with self._lock:
                self._sessions[sid] = session
        rtype = req.resource_type
        base = self.base_url
        links = [{"relation": "self", "url": f"{base}/{rtype}?{_query(session.query)}"}]
        if more:
            nxt = (*[(k, v) for k, v in session.query if k != "_count"], ("_count", str(size)))
            nxt = (*nxt, ("sessionID", sid or ""), ("pageOffset", str(offset + size)))
            links.append({"relation": "next", "url": f"{base}/{rtype}?{_query(nxt)}"})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if session.total is not None:
            bundle["total"] = session.total
        bundle["link"] = links
        bundle["entry"] = page
        data = self._rewrite(json.dumps(bundle, separators=(",", ":")).encode())
        return Answer(200, data)

    def _session_page(self, req: Req, sid: str) -> Answer:
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and time.monotonic() - session.created > self.session_ttl:
                del self._sessions[sid]
                session = None
        if session is None:
            outcome = epic_outcome(
                "4113",
                "Session ID for cached search results has expired.",
                "run the search again",
            )
            return Answer(
                400,
                json.dumps(outcome).encode(),
                {"Content-Type": "application/fhir+json"},
                "paging_sessions",
            )
        try:
            offset = int(req.values("pageOffset")[-1])
        except (IndexError, ValueError):
            offset = 0
        answer = self._serve(req, session, offset, sid)
        if offset + self._page_size(req) >= len(session.entries):
            with self._lock:
                self._sessions.pop(sid, None)  # the last page: nobody comes back for it
        return answer


def _strip_last_updated(answer: Answer) -> Answer:
    ctype = answer.headers.get("Content-Type", "")
    if "json" not in ctype or "ndjson" in ctype:
        return answer
    try:
        doc = json.loads(answer.body)
    except ValueError:
        return answer
    changed = False
    for res in _resources(doc):
        meta = res.get("meta")
        if isinstance(meta, dict) and "lastUpdated" in meta:
            del meta["lastUpdated"]
            if not meta:
                del res["meta"]
            changed = True
    if not changed:
        return answer
    return Answer(answer.status, json.dumps(doc, separators=(",", ":")).encode(), answer.headers)


def _resources(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    if doc.get("resourceType") == "Bundle":
        for entry in doc.get("entry") or []:
            res = entry.get("resource")
            if isinstance(res, dict) and res.get("resourceType") != "OperationOutcome":
                yield res
    elif doc.get("resourceType") not in (None, "OperationOutcome", "CapabilityStatement"):
        yield doc
