"""A FHIR R4 REST client on one ``requests.Session``: layered requests, auth, paging, counters.

Everything that goes over the wire passes through :meth:`FhirClient.exchange`, which runs three
small layers, innermost first:

1. **send** (:meth:`FhirClient._send`): one HTTP exchange, its redirects followed hop by hop
   under the credential policy, rate-limited, timed, counted and read;
2. **re-authenticate** (:meth:`FhirClient._authenticated`): a 401 to a request that carried
   credentials makes the auth drop them, and the request is sent once more;
3. **retry** (:meth:`FhirClient._retrying`): 429/5xx, connection errors and bodies that break
   while read are retried with backoff or the server's ``Retry-After``
   (:func:`parse_retry_after`), within a retry budget and a deadline.

URLs in log and error messages never carry the query string (query values can be patient ids).

Credential policy (one place, :meth:`FhirClient._scope`): auth headers and the user's extra
headers go only to the base URL's origin (scheme, host, port); never over plain http unless the
host is loopback or ``allow_insecure_http``; never from https down to http. A link or redirect
to another origin is followed, without credentials, only when its origin is in
``allow_origins`` or the caller asked for no credentials (``authenticate=False``: Bulk files
with ``requiresAccessToken: false``, the SMART token endpoint); otherwise :class:`OriginError`.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import random
import re
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from socket import gaierror as socket_gaierror
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from fhir_cohort.errors import (
    AuthError,
    FhirHttpError,
    OptionError,
    OriginError,
    TransientResponseError,
)

if TYPE_CHECKING:
    from fhir_cohort.fhir.auth import Auth
    from fhir_cohort.fhir.search import SearchEntry, SearchQuery

__all__ = [
    "DEFAULT_USER_AGENT",
    "RETRY_STATUSES",
    "ClientStats",
    "FhirClient",
    "InsecureTLSWarning",
    "RateLimiter",
    "connection_problem",
    "is_loopback",
    "origin_of",
    "outcome_text",
    "parse_retry_after",
    "strip_query",
]

log = logging.getLogger("fhir_cohort.fhir")

T = TypeVar("T")


def _response(resp: requests.Response) -> requests.Response:
    return resp


FHIR_JSON = "application/fhir+json"
DEFAULT_USER_AGENT = "fhir-cohort/0.1 (+https://github.com/fhir-cohort)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
_DEFAULT_PORTS = {"http": 80, "https": 443}
# user headers whose name suggests a secret: they count as credentials for the plain-http check
_SECRET_HEADER = re.compile(r"auth|token|key|secret|session|cookie|passw|signature", re.IGNORECASE)

Origin = tuple[str, str, int]


class InsecureTLSWarning(UserWarning):
    """Emitted when TLS certificate verification is switched off explicitly."""


def strip_query(url: str) -> str:
    """The URL without query string, fragment or user info: safe for logs and errors.

    >>> strip_query("https://u:p@ehr.example.org/fhir/Condition?patient=123#x")
    'https://ehr.example.org/fhir/Condition'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of ``url``, lower-cased, with the scheme's default port filled in.

    >>> origin_of("HTTPS://EHR.example.org/fhir?x=1")
    ('https', 'ehr.example.org', 443)
    >>> origin_of("http://127.0.0.1:8080/fhir")
    ('http', '127.0.0.1', 8080)
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def _origin_text(origin: Origin) -> str:
    scheme, host, port = origin
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS.get(scheme) == port else f":{port}")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).

    >>> [is_loopback(h) for h in ("localhost", "127.0.0.2", "::1", "ehr.example.org")]
    [True, True, True, False]
    """
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3 ``reason`` and exception args."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def connection_problem(exc: BaseException) -> str:
    """What went wrong on the wire, in words: refused, DNS, TLS, timeout, reset.

    Never quotes the exception text (requests puts the full URL, query included, in it).

    >>> connection_problem(requests.ConnectionError(ConnectionRefusedError(111, "refused")))
    'connection refused'
    >>> connection_problem(requests.ReadTimeout())
    'no answer in time (read timeout)'
    """
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return "TLS certificate verification failed (a private CA? see --ca-bundle)"
    if any(isinstance(e, ssl.SSLError | requests.exceptions.SSLError) for e in chain):
        return "TLS handshake failed"
    if "NameResolutionError" in names or any(isinstance(e, socket_gaierror) for e in chain):
        return "DNS lookup failed (unknown host name)"
    if any(isinstance(e, requests.ConnectTimeout) for e in chain) or "ConnectTimeoutError" in names:
        return "connection timed out"
    if any(isinstance(e, requests.ReadTimeout) for e in chain) or "ReadTimeoutError" in names:
        return "no answer in time (read timeout)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "connection reset"
    if any(isinstance(e, requests.exceptions.ChunkedEncodingError) for e in chain):
        return "response body cut (connection broken)"
    if any(isinstance(e, requests.exceptions.ContentDecodingError) for e in chain):
        return "response body could not be decompressed"
    return f"connection failed ({type(exc).__name__})"


def _is_http_url(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and bool(urlsplit(url).hostname)


def _host_port(url: str) -> str:
    _, host, port = origin_of(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def outcome_text(body: Any) -> str | None:
    """Human text of an OperationOutcome (issue diagnostics / details.text) or an OAuth error.

    >>> outcome_text({"resourceType": "OperationOutcome",
    ...               "issue": [{"severity": "error", "diagnostics": "Unknown parameter 'x'"}]})
    "error: Unknown parameter 'x'"
    >>> outcome_text({"error": "invalid_client", "error_description": "bad signature"})
    'invalid_client: bad signature'
    """
    if not isinstance(body, Mapping):
        return None
    if body.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in body.get("issue") or []:
            if not isinstance(issue, Mapping):
                continue
            details = issue.get("details")
            text = issue.get("diagnostics") or (
                details.get("text") if isinstance(details, Mapping) else None
            )
            if text:
                severity = issue.get("severity")
                texts.append(f"{severity}: {text}" if severity else str(text))
        return "; ".join(texts) or None
    if isinstance(body.get("error"), str):
        desc = body.get("error_description")
        return f"{body['error']}: {desc}" if desc else body["error"]
    return None


@dataclass
class ClientStats:
    """Counters for run.json. ``bytes_received`` counts decoded response bodies."""

    requests: int = 0
    retries: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self, *, requests: int = 0, retries: int = 0, nbytes: int = 0, seconds: float = 0.0
    ) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.bytes_received += nbytes
            self.seconds += seconds

    def snapshot(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "bytes_received": self.bytes_received,
                "seconds": round(self.seconds, 3),
            }


class RateLimiter:
    """Token bucket shared by every thread using one client: at most ``rate`` requests/second."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise OptionError("rate must be positive")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)


@dataclass
class _Call:
    """One logical request as the layers see it; ``reauthenticated`` lasts across retries."""

    method: str
    url: str
    safe_url: str
    params: Sequence[tuple[str, str]] | None
    data: Any
    json_body: Any
    headers: Mapping[str, str]
    authenticate: bool
    ok_statuses: tuple[int, ...]
    stream: bool
    reauthenticated: bool = False


class FhirClient:
    """FHIR R4 REST client.

    ``deadline`` bounds the time one logical request may spend including all its retries;
    ``retry_after_cap`` bounds how long one ``Retry-After`` is honoured. ``sleep``, ``clock`` and
    ``rng`` are injectable so tests never sleep for real.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout: float | tuple[float, float] = (10, 120),
        verify: bool | str | Path = True,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_cap: float = 120.0,
        deadline: float = 600.0,
        strict_search: bool = True,
        user_agent: str = DEFAULT_USER_AGENT,
        requests_per_second: float | None = None,
        allow_origins: Iterable[str] = (),
        allow_insecure_http: bool = False,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if (
            not base_url.lower().startswith(("http://", "https://"))
            or not urlsplit(base_url).hostname
        ):
            raise OptionError(f"base_url must be an http(s) URL, got {strip_query(base_url)!r}")
        self.base_url = base_url.rstrip("/")
        self.origin = origin_of(self.base_url)
        self.allow_insecure_http = allow_insecure_http
        allowed = set()
        for u in allow_origins:
            if not _is_http_url(u):
                raise OptionError(f"--allow-origin needs an http(s) URL, got {strip_query(u)!r}")
            allowed.add(origin_of(u))
        self.allow_origins = frozenset(allowed)
        # the user's extra headers may carry an API key: sent to the base origin only (_scope)
        self.headers: dict[str, str] = dict(headers or {})
        has_secret = (auth is not None and getattr(auth, "sends_credentials", True)) or any(
            _SECRET_HEADER.search(name) for name in self.headers
        )
        if has_secret and not self._transport_ok(self.origin):
            raise OptionError(
                f"refusing to send credentials over plain http to {_origin_text(self.origin)}: "
                "use https, or --allow-insecure-http if this network is trusted"
            )
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_after_cap = retry_after_cap
        self.deadline = deadline
        self.strict_search = strict_search
        self.stats = ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._limiter = (
            RateLimiter(requests_per_second, clock=clock, sleep=sleep)
            if requests_per_second
            else None
        )
        self._capability: dict[str, Any] | None = None
        self.session = session or requests.Session()
        if verify is False:
            msg = (
                "TLS certificate verification is OFF for "
                f"{strip_query(self.base_url)}: the connection can be intercepted"
            )
            warnings.warn(msg, InsecureTLSWarning, stacklevel=2)
            log.warning(msg)
            self.session.verify = False
        elif verify is True:
            self.session.verify = True
        else:
            path = Path(verify)
            if not path.exists():
                raise OptionError(f"CA bundle not found: {path}")
            self.session.verify = str(path)
        self.session.headers.update(
            {"Accept": FHIR_JSON, "Accept-Encoding": "gzip, deflate", "User-Agent": user_agent}
        )

    def __repr__(self) -> str:
        return f"FhirClient({strip_query(self.base_url)!r}, auth={self.auth!r})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- URLs -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` relative to the base (absolute URLs are kept as given)."""
        if path.lower().startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url + "/", path.lstrip("/"))

    # -- the credential policy -------------------------------------------------------------

    def _transport_ok(self, origin: Origin) -> bool:
        """May secrets travel to ``origin`` on this scheme? https, loopback, or user consent."""
        return origin[0] == "https" or is_loopback(origin[1]) or self.allow_insecure_http

    def _scope(self, url: str, authenticate: bool) -> bool:
        """Whether a request to ``url`` carries credentials; OriginError if it must not be sent.

        True only for the base URL's origin. Another origin is reached without credentials when
        the caller wants none or the user allowed it; never from https down to plain http.
        """
        target = origin_of(url)
        if target[0] not in ("http", "https"):
            raise OriginError(f"not an http(s) URL: {target[0]!r}", url=strip_query(url))
        if self.origin[0] == "https" and target[0] == "http" and not self.allow_insecure_http:
            raise OriginError(
                f"refusing to go from https down to plain http ({_origin_text(target)}; the "
                f"server is {_origin_text(self.origin)})",
                method=None,
                url=strip_query(url),
            )
        if target == self.origin:
            return True
        if not authenticate or target in self.allow_origins:
            log.debug("%s is another origin: sent without credentials", _origin_text(target))
            return False
        raise OriginError(
            f"refusing to follow a link to {_origin_text(target)}: credentials go only to "
            f"{_origin_text(self.origin)} (to fetch it without credentials, allow its origin: "
            f"--allow-origin {_origin_text(target)})",
            url=strip_query(url),
        )

    # -- layer 1: send ---------------------------------------------------------------------

    def _send(self, call: _Call) -> tuple[requests.Response, bool]:
        """One HTTP exchange: the request and its redirects, timed, counted and read.

        Waits for the rate limiter, then follows redirects itself (:meth:`_hops`) so each hop
        gets the credential policy. Reads the body (unless streaming a success), so a reset
        mid-body surfaces here. Wire errors worth a retry (:data:`_RETRY_EXCEPTIONS`) propagate
        as they are; TLS and other request errors become :class:`FhirHttpError`. Returns the
        response and whether credentials went with it.
        """
        if self._limiter is not None:
            self._limiter.acquire()
        t0 = time.perf_counter()
        try:
            resp, with_auth = self._hops(call)
            ok = 200 <= resp.status_code < 300 or resp.status_code in call.ok_statuses
            nbytes = 0 if call.stream and ok else len(resp.content)
        except requests.exceptions.SSLError as exc:
            # a certificate problem does not heal by retrying
            self.stats.add(requests=1, seconds=time.perf_counter() - t0)
            raise FhirHttpError(
                f"cannot connect to {_host_port(call.url)}: {connection_problem(exc)}",
                method=call.method,
                url=call.safe_url,
            ) from None
        except _RETRY_EXCEPTIONS:
            self.stats.add(requests=1, seconds=time.perf_counter() - t0)
            raise
        except requests.RequestException as exc:
            self.stats.add(requests=1, seconds=time.perf_counter() - t0)
            raise FhirHttpError(
                f"request failed: {type(exc).__name__}", method=call.method, url=call.safe_url
            ) from None
        self.stats.add(requests=1, nbytes=nbytes, seconds=time.perf_counter() - t0)
        log.debug("%s %s -> %s (%d bytes)", call.method, call.safe_url, resp.status_code, nbytes)
        return resp, with_auth

    def _hops(self, call: _Call) -> tuple[requests.Response, bool]:
        """The request and its redirects, each hop under :meth:`_scope`.

        Redirects are followed here, not by requests, so a redirect to another origin or to
        plain http gets the same policy as a link. Credentials are asked of the auth only for a
        hop that carries them.
        """
        method, url, params = call.method, call.url, call.params
        data, json_body = call.data, call.json_body
        for _ in range(MAX_REDIRECTS + 1):
            same_origin = self._scope(url, call.authenticate)
            send_headers: dict[str, str] = {}
            with_auth = same_origin and call.authenticate and self._sends_credentials
            if same_origin:
                send_headers.update(self.headers)
            send_headers.update(call.headers)
            if with_auth:
                assert self.auth is not None
                send_headers.update(self.auth.headers(self))
            body = data() if callable(data) else data
            resp = self.session.request(
                method,
                url,
                params=list(params) if params else None,
                data=body,
                json=json_body,
                headers=send_headers,
                timeout=self.timeout,
                stream=call.stream,
                allow_redirects=False,
                # explicit, or requests lets REQUESTS_CA_BUNDLE override --ca-bundle / verify=False
                verify=self.session.verify,
            )
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location:
                return resp, with_auth
            resp.close()
            log.debug("%s %s -> %s redirect", method, strip_query(url), resp.status_code)
            url = urljoin(resp.url or url, location)
            params = None  # the Location carries its own query
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, data, json_body = "GET", None, None  # what browsers and requests do
        raise FhirHttpError(
            f"more than {MAX_REDIRECTS} redirects", method=method, url=strip_query(url)
        )

    @property
    def _sends_credentials(self) -> bool:
        return self.auth is not None and getattr(self.auth, "sends_credentials", True)

    # -- layer 2: re-authenticate ----------------------------------------------------------

    def _authenticated(self, call: _Call) -> requests.Response:
        """:meth:`_send`; on a 401 to a request that carried credentials, refresh them once.

        Once per logical request (``call.reauthenticated`` survives retries): an expired or
        revoked token gets one fresh token; a second 401 is the answer.
        """
        while True:
            resp, with_auth = self._send(call)
            if (
                resp.status_code != 401
                or 401 in call.ok_statuses
                or not with_auth
                or call.reauthenticated
            ):
                return resp
            log.debug("401 from %s: re-authenticating once", call.safe_url)
            assert self.auth is not None
            self.auth.invalidate()
            call.reauthenticated = True

    # -- layer 3: retry --------------------------------------------------------------------

    def _retrying(self, call: _Call, consume: Callable[[requests.Response], T]) -> T:
        """:meth:`_authenticated` and ``consume`` until a success, a final answer or give-up.

        Retries wire errors, :data:`RETRY_STATUSES` and a body that breaks or that ``consume``
        rejects as transient, with backoff or the server's ``Retry-After`` (capped), within
        ``max_retries`` and the deadline. 401/403 become :class:`AuthError`, other statuses
        :class:`FhirHttpError`.
        """
        start = self._clock()
        attempt = 0
        while True:
            try:
                resp = self._authenticated(call)
            except _RETRY_EXCEPTIONS as exc:
                reason = f"cannot connect to {_host_port(call.url)}: {connection_problem(exc)}"
                self._give_up_or_wait(call, attempt, start, self._backoff(attempt), None, reason)
                attempt += 1
                continue
            status = resp.status_code
            if 200 <= status < 300 or status in call.ok_statuses:
                try:
                    return consume(resp)
                except (*_RETRY_EXCEPTIONS, TransientResponseError) as exc:
                    resp.close()
                    reason = (
                        exc.message
                        if isinstance(exc, TransientResponseError)
                        else f"body cut: {connection_problem(exc)}"
                    )
                    self._give_up_or_wait(
                        call, attempt, start, self._backoff(attempt), status, reason
                    )
                    attempt += 1
                    continue
            if status in (401, 403):
                raise AuthError(
                    "not authorised" if status == 403 else "authentication failed",
                    method=call.method,
                    url=call.safe_url,
                    status=status,
                    outcome=_body_outcome(resp),
                )
            if status in RETRY_STATUSES:
                wait = self._backoff(attempt)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC))
                if retry_after is not None:
                    wait = min(retry_after, self.retry_after_cap)
                self._give_up_or_wait(call, attempt, start, wait, status, _body_outcome(resp))
                attempt += 1
                continue
            raise FhirHttpError(
                "request failed",
                method=call.method,
                url=call.safe_url,
                status=status,
                outcome=_body_outcome(resp),
            )

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff * (2**attempt))
        return base / 2 + base / 2 * self._rng()  # "equal jitter": spreads out parallel workers

    def _give_up_or_wait(
        self,
        call: _Call,
        attempt: int,
        start: float,
        wait: float,
        status: int | None,
        detail: str | None,
    ) -> None:
        why = None
        if attempt >= self.max_retries:
            why = f"giving up after {attempt + 1} attempts"
        elif self._clock() + wait - start > self.deadline:
            why = (
                f"giving up: retrying would pass the {self.deadline:g}s deadline "
                f"(after {attempt + 1} attempts)"
            )
        if why is not None:
            if status is None and detail:  # no answer at all: say what happened on the wire
                raise FhirHttpError(f"{detail}; {why}", method=call.method, url=call.safe_url)
            raise FhirHttpError(
                why, method=call.method, url=call.safe_url, status=status, outcome=detail
            )
        log.debug(
            "retry %d for %s %s (%s) in %.2fs",
            attempt + 1,
            call.method,
            call.safe_url,
            status if status is not None else detail,
            wait,
        )
        self.stats.add(retries=1)
        self._sleep(wait)

    # -- the public entry points -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        search: bool = False,
        authenticate: bool = True,
        ok_statuses: Sequence[int] = (),
        stream: bool = False,
    ) -> requests.Response:
        """Send one request with retries; return the 2xx (or ``ok_statuses``) response.

        Retries 429/500/502/503/504 and connection errors with exponential backoff and jitter,
        honours ``Retry-After`` (capped), re-authenticates once on 401, and gives up at the
        deadline. Raises :class:`FhirHttpError` / :class:`AuthError`.

        ``stream=True`` (large downloads) returns the successful response with its body unread:
        the caller iterates it, closes it and counts its bytes; error bodies are read as usual.
        Prefer :meth:`exchange` when the body is consumed: a body cut in transit is then retried.
        """
        return self.exchange(
            method,
            path,
            _response,
            params=params,
            data=data,
            json_body=json_body,
            headers=headers,
            search=search,
            authenticate=authenticate,
            ok_statuses=ok_statuses,
            stream=stream,
        )

    def exchange(
        self,
        method: str,
        path: str,
        consume: Callable[[requests.Response], T],
        *,
        params: Sequence[tuple[str, str]] | None = None,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        search: bool = False,
        authenticate: bool = True,
        ok_statuses: Sequence[int] = (),
        stream: bool = False,
    ) -> T:
        """:meth:`request`, then ``consume(response)`` inside the same retry loop.

        A body that breaks while ``consume`` reads it (connection reset, chunked-encoding
        error) or that ``consume`` rejects with
        :class:`~fhir_cohort.errors.TransientResponseError` (invalid JSON in a 200, a file cut
        inside its last line) is retried with the same budget and deadline as a 503.

        ``data`` may be a zero-argument callable: it is called on every attempt, so a body that
        must be new each time (a SMART client assertion: its ``jti`` is single-use) is.
        """
        url = self.url(path)
        hdrs: dict[str, str] = dict(headers or {})
        if search and self.strict_search:
            hdrs["Prefer"] = "handling=strict"
        call = _Call(
            method=method.upper(),
            url=url,
            safe_url=strip_query(url),
            params=params,
            data=data,
            json_body=json_body,
            headers=hdrs,
            authenticate=authenticate,
            ok_statuses=tuple(ok_statuses),
            stream=stream,
        )
        return self._retrying(call, consume)

    # -- JSON helpers ----------------------------------------------------------------------

    def get_json(
        self,
        path: str,
        params: Sequence[tuple[str, str]] | None = None,
        *,
        accept: str | None = None,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        headers = {"Accept": accept} if accept else None
        return self.exchange(
            "GET", path, self.decode, params=params, headers=headers, authenticate=authenticate
        )

    def post_form(
        self, url: str, form: Callable[[], Mapping[str, str]]
    ) -> tuple[int, dict[str, Any], str]:
        """POST a form without credentials (an OAuth token request); a 400 is an answer too.

        ``form`` is called on every attempt; the answer is decoded inside the retry loop, so a
        200 with a cut body is asked for again. Returns (status, JSON body, URL without query).
        Part of :class:`~fhir_cohort.fhir.auth.TokenHttp`.
        """

        def consume(resp: requests.Response) -> tuple[int, dict[str, Any], str]:
            safe_url = strip_query(resp.url or "")
            if resp.status_code == 400:  # OAuth's error answer: {"error": ..., ...}
                return 400, _json_or_empty(resp), safe_url
            return resp.status_code, self.decode(resp), safe_url

        return self.exchange(
            "POST",
            url,
            consume,
            data=form,
            headers={"Accept": "application/json"},
            authenticate=False,
            ok_statuses=(400,),
        )

    def decode(
        self, resp: requests.Response, *, resource_type: str | None = None
    ) -> dict[str, Any]:
        """JSON body of ``resp`` as a dict (optionally of ``resource_type``), else FhirHttpError."""
        method = resp.request.method if resp.request is not None else None
        safe_url = strip_query(resp.url or "")
        try:
            body = resp.json()
        except ValueError:
            # a 2xx whose JSON does not parse was garbled or cut in transit: worth a retry
            kind = TransientResponseError if 200 <= resp.status_code < 300 else FhirHttpError
            raise kind(
                "response is not valid JSON", method=method, url=safe_url, status=resp.status_code
            ) from None
        if not isinstance(body, dict):
            raise FhirHttpError(
                "response is not a JSON object",
                method=method,
                url=safe_url,
                status=resp.status_code,
            )
        if resource_type is not None and body.get("resourceType") != resource_type:
            got = body.get("resourceType")
            raise FhirHttpError(
                f"expected a {resource_type}, got {got if isinstance(got, str) else 'nothing'}",
                method=method,
                url=safe_url,
                status=resp.status_code,
                outcome=outcome_text(body),
            )
        return body

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self.exchange(
            "GET",
            f"{resource_type}/{resource_id}",
            lambda resp: self.decode(resp, resource_type=resource_type),
        )

    def capabilities(self, *, refresh: bool = False) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET metadata``), cached per client."""
        if self._capability is None or refresh:
            self._capability = self.exchange(
                "GET", "metadata", lambda r: self.decode(r, resource_type="CapabilityStatement")
            )
        return self._capability

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction/batch Bundle to the base; returns the response Bundle.

        Decoded outside the retry loop on purpose: a 200 means the server committed the
        transaction, and posting it again for a garbled answer could create resources twice.
        """
        resp = self.request(
            "POST", self.base_url, json_body=bundle, headers={"Content-Type": FHIR_JSON}
        )
        return self.decode(resp, resource_type="Bundle")

    # -- search ----------------------------------------------------------------------------

    def search(self, query: SearchQuery, count: int | None = 1000) -> Iterator[dict[str, Any]]:
        """Bundle pages of ``query``, following ``next`` links as given (see search.iter_pages)."""
        from fhir_cohort.fhir.search import iter_pages

        return iter_pages(self, query, count=count)

    def iter_resources(self, query: SearchQuery, count: int | None = 1000) -> Iterator[SearchEntry]:
        """Entries (resource + search mode) of every page of ``query``."""
        from fhir_cohort.fhir.search import iter_entries

        return iter_entries(self.search(query, count=count))


def _json_or_empty(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _body_outcome(resp: requests.Response) -> str | None:
    try:
        return outcome_text(resp.json())
    except ValueError:
        return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value at wall time ``now``; None if absent/unreadable.

    RFC 9110 allows delta-seconds or an HTTP-date; a date in the past, or a negative number,
    means "now" (0.0); ``inf``/``nan`` are unreadable. An HTTP-date without a zone is read as
    UTC (the RFC says GMT). ``now`` must be timezone-aware.

    >>> now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    >>> parse_retry_after("7", now)
    7.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now)
    10.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now)
    0.0
    >>> parse_retry_after("soon", now) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
