"""Who may talk to the worklist server: the one browser that opened the printed address.

The server listens on 127.0.0.1 only, but any local process, and any web page the
coordinator's browser has open, can send requests to 127.0.0.1. :class:`Guard` (an ASGI
middleware, outermost) refuses every request that does not come from that browser:

- **Host** must be exactly ``127.0.0.1:<port>``: a DNS-rebinding page (``evil.example``
  resolving to 127.0.0.1) sends its own name as Host, so its requests are refused even though
  they reach the socket.
- **Origin / Referer / Sec-Fetch-Site**, when a browser sends them, must say this origin:
  another site's form, link or ``fetch`` (CSRF) is refused, another port of 127.0.0.1 too
  (the same *site*, so SameSite cookies go along). A POST must carry Origin or Referer
  (browsers always send Origin on a POST), so a save never goes through on headers a browser
  would not send.
- **The token**: the CLI prints ``http://127.0.0.1:<port>/?token=<random>``. The first request
  with it gets an HttpOnly, SameSite=Strict session cookie and a redirect to the same page
  without the token; the token is then spent (a second use, from a copied link or shell
  history, is refused). Every other request needs the cookie. The cookie's name carries the
  port: cookies are per host, not per port, so two servers do not overwrite each other's.

Every response, refusals too, carries the headers of :data:`SECURITY_HEADERS`: a strict
Content-Security-Policy (nothing but this page's own stylesheet, no script at all, forms
posting only here, no framing), no caching (the pages hold patient data), no referrer to
elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = ["SECURITY_HEADERS", "Access", "Guard", "content_security_policy"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("fhir_cohort.review")

TOKEN_PARAM = "token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def content_security_policy(stylesheet: str) -> str:
    """The report's strict policy (``default-src 'none'``), tightened for a served page: the
    one inline stylesheet by its hash instead of ``'unsafe-inline'``, no script at all (the
    pages are plain HTML forms), forms post only here, and no other site may frame the page
    (clickjacking)."""
    digest = base64.b64encode(hashlib.sha256(stylesheet.encode("utf-8")).digest()).decode()
    return (
        "default-src 'none'; "
        f"style-src 'sha256-{digest}'; "
        "img-src data:; "
        "form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def _headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]


# The names every response carries (tests sweep them over every kind of response).
SECURITY_HEADERS: tuple[str, ...] = tuple(k.decode() for k, _ in _headers(""))


class Access:
    """The one-time token and the sessions it opened. All in the server's event loop: no
    lock needed between checking the token and spending it."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self.spent = False
        self.cookie_name = f"fhir_cohort_review_{port}"
        self._sessions: list[str] = []

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def login_url(self) -> str:
        return f"{self.origin}/?{TOKEN_PARAM}={self.token}"

    def redeem(self, token: str) -> str | None:
        """A new session id for the unspent token, else None. Spends the token."""
        if self.spent or not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        self.spent = True
        session = secrets.token_urlsafe(32)
        self._sessions.append(session)
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        return any(hmac.compare_digest(session.encode(), s.encode()) for s in self._sessions)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k == name]
    if len(values) != 1:
        return None if not values else "\x00"  # repeated: never a match
    return values[0].decode("latin-1")


def _cookie(scope: Scope, name: str) -> str | None:
    found = None
    for key, value in scope.get("headers", ()):
        if key != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except CookieError:
            continue
        if name in jar:
            found = jar[name].value
    return found


def _origin_of(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "\x00"
    return f"{parts.scheme}://{parts.netloc}"


class Guard:
    """ASGI middleware: Host, Origin/Referer/Sec-Fetch-Site, token and cookie checks, security
    headers, and one log line per request naming the page kind, never its path or query
    (patient ids, the token). See the module docstring."""

    def __init__(self, app: ASGIApp, *, access: Access, csp: str) -> None:
        self.app = app
        self.access = access
        self.headers = _headers(csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets: none served
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            log.info("review: %s refused (%s)", scope["method"], refusal.split(":")[0])
            await _plain(self._secured(send), 403, refusal)
            return
        token = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get(TOKEN_PARAM)
        if token is not None and scope["method"] in _SAFE_METHODS:
            await self._login(scope, token, self._secured(send))
            return
        if not self.access.valid(_cookie(scope, self.access.cookie_name)):
            log.info("review: %s refused (no session)", scope["method"])
            await _plain(
                self._secured(send),
                403,
                "not signed in: open the address `fhir-cohort review` printed "
                "(it works once; restart the command for a new one)",
            )
            return
        await self.app(scope, receive, self._secured(send, scope))

    def _secured(self, send: Send, routed: Scope | None = None) -> Send:
        """``send`` adding the security headers to the response; for a ``routed`` request
        also the log line, with the page kind (the endpoint's name) and the status, written
        before the response leaves (a client that has the answer sees the line too)."""

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
                if routed is not None:
                    page = getattr(routed.get("endpoint"), "__name__", "no page")
                    log.info("review: %s %s %s", routed["method"], page, message["status"])
            await send(message)

        return secured

    def _refusal(self, scope: Scope) -> str | None:
        """Why this request is refused before anything else, or None."""
        if _header(scope, b"host") != self.access.host:
            return "wrong Host: this server answers only at " + self.access.origin
        origin = _header(scope, b"origin")
        referer = _header(scope, b"referer")
        if origin is not None and origin != self.access.origin:
            return "another origin: requests from other sites are refused"
        if referer is not None and _origin_of(referer) != self.access.origin:
            return "another origin (Referer): requests from other sites are refused"
        # Browsers say where a request comes from even when a page strips its Referer: a
        # navigation from another port of 127.0.0.1 is "same-site" (and carries the cookie).
        if _header(scope, b"sec-fetch-site") in ("cross-site", "same-site"):
            return "another origin (Sec-Fetch-Site): requests from other sites are refused"
        if scope["method"] not in _SAFE_METHODS and origin is None and referer is None:
            return "no Origin: a change must come from this page's own form"
        return None

    async def _login(self, scope: Scope, token: str, send: Send) -> None:
        session = self.access.redeem(token)
        if session is None:
            if self.access.valid(_cookie(scope, self.access.cookie_name)):
                # The printed address opened again in the signed-in browser: just go on.
                log.info("review: signed in already")
                await _redirect(send, scope.get("path") or "/")
                return
            log.info("review: login refused (token spent or wrong)")
            await _plain(
                send,
                403,
                "this address was used already (or is wrong): restart `fhir-cohort review` "
                "for a new one",
            )
            return
        log.info("review: signed in")
        cookie = f"{self.access.cookie_name}={session}; Path=/; HttpOnly; SameSite=Strict"
        await _redirect(send, scope.get("path") or "/", [(b"set-cookie", cookie.encode())])


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, path: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    # Relative to this origin and without the query: the token leaves the address bar.
    location = quote(path) if path.startswith("/") and not path.startswith("//") else "/"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1", "replace")),
                (b"content-length", b"0"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
