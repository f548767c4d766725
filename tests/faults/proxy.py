"""A fault-injecting HTTP(S) proxy on 127.0.0.1, for the fault suite and benchmarks/faults.py.

It forwards every request to an upstream FHIR server (the suite's sekmet-fhir) and, at ``rate``,
replaces the answer with a fault. Which request gets which fault is a pure function of
``(seed, method, target, request body, how often that request was seen)``: parallel workers
cannot change the draw, so a seed replays the same faults, and a retry draws again.

Faults (``KINDS``):

- ``429``: Too Many Requests with ``Retry-After`` (``retry_after``, seconds);
- ``500`` / ``502`` / ``503``: the server's work is done, its answer is lost;
- ``reset``: headers with the full Content-Length, half the body, then a TCP reset;
- ``truncate``: half the body, Content-Length says the full length, connection closed;
- ``truncate_cl``: the body cut in half with a *matching* Content-Length (the HTTP layer sees a
  complete answer; only the content is broken);
- ``delay``: the answer, ``delay`` seconds late;
- ``malformed_json``: a 200 whose JSON does not parse (one byte changed);
- ``corrupt_line``: in an NDJSON body, one line made unparseable by changing one byte (same
  length, same line count);
- ``cut_last_line``: an NDJSON body cut inside its last line, Content-Length matching.

Absolute upstream URLs in bodies and in ``Location`` / ``Content-Location`` are rewritten to the
proxy, so a client keeps going through it. An optional second listener, ``other``, is another
origin (another port) in front of the same upstream: with ``links_to_other`` the proxy points
search ``next`` links and Bulk manifest file URLs at it, to check that credentials never follow
such links. Every request each listener saw is recorded with its headers (``seen``).

With ``tls=(cert, key)`` the main listener speaks HTTPS (see :func:`make_tls_cert`), so a link
that downgrades to the plain-HTTP ``other`` listener can be told apart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

__all__ = ["KINDS", "STATUS_KINDS", "FaultProxy", "Seen", "make_tls_cert"]

STATUS_KINDS = ("429", "500", "502", "503")
BODY_KINDS = ("reset", "truncate", "truncate_cl", "delay")
JSON_KINDS = ("malformed_json",)
NDJSON_KINDS = ("corrupt_line", "cut_last_line")
KINDS = (*STATUS_KINDS, *BODY_KINDS, *JSON_KINDS, *NDJSON_KINDS)

# Never forwarded as received: hop-by-hop, or recomputed here.
_DROP_REQUEST = {"host", "connection", "keep-alive", "accept-encoding", "content-length", "te"}
_DROP_RESPONSE = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-encoding",
    "content-length",
    "date",
    "server",
}
_LINKED = ("location", "content-location")
_JOB_ID = re.compile(r"/[0-9A-Fa-f-]{12,}(?=[/?]|$)")


@dataclass(frozen=True)
class Seen:
    """One request as a listener received it (headers as sent by the client)."""

    listener: str  # "main" or "other"
    scheme: str  # "http" or "https"
    method: str
    target: str  # path and query as received: test-local data, never printed by the suite
    headers: Mapping[str, str]
    fault: str | None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def authorization(self) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == "authorization":
                return v
        return None


@dataclass
class _Config:
    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    delay: float = 0.2
    retry_after: str = "0"
    links_to_other: bool = False
    # With links_to_other: what the rewritten manifest says (None keeps the server's value).
    requires_access_token: bool | None = None
    # The other origin stands for a server that needs no client credentials (signed URLs): it
    # adds this upstream token itself when forwarding.
    other_token: str | None = None
    # Lower every _count above this (GET query or POST _search form), so small data pages.
    max_count: int | None = None
    attempts: Counter[str] = field(default_factory=Counter)


class FaultProxy:
    """See the module doc. ``start()``/``stop()`` or use as a context manager.

    ``configure(...)`` changes the fault settings between runs while the ports stay the same,
    so "the same command without faults" reaches the same URL.
    """

    def __init__(
        self,
        upstream_base: str,
        *,
        tls: tuple[Path, Path] | None = None,
        other_origin: bool = True,
        **config: Any,
    ) -> None:
        parts = urlsplit(upstream_base.rstrip("/"))
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self._upstream_path = parts.path
        self._tls = tls
        self._want_other = other_origin
        self._cfg = _Config()
        self._lock = threading.Lock()
        self._pool = urllib3.PoolManager(maxsize=16, retries=False)
        self.seen: list[Seen] = []
        self.faults: Counter[str] = Counter()
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self.roots: dict[str, str] = {}
        self.configure(**config)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen("main", self._tls)
        if self._want_other:
            self._listen("other", None)
        return self

    def _listen(self, name: str, tls: tuple[Path, Path] | None) -> None:
        proxy = self

        class Handler(_Handler):
            listener = name
            owner = proxy

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        port = server.server_address[1]
        self.roots[name] = f"{scheme}://127.0.0.1:{port}"
        self._servers[name] = server
        threading.Thread(target=server.serve_forever, name=f"proxy-{name}", daemon=True).start()

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self._pool.clear()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return self.roots["main"]

    @property
    def base_url(self) -> str:
        """The FHIR base as seen through the proxy (upstream path kept)."""
        return self.roots["main"] + self._upstream_path

    # -- settings and records ---------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Set rate, seed, kinds, delay, retry_after, links_to_other, requires_access_token.

        A new seed (or rate) also restarts the per-request attempt counts."""
        with self._lock:
            unknown = set(changes) - set(_Config.__dataclass_fields__) - {"attempts"}
            if unknown:
                raise TypeError(f"unknown proxy settings: {sorted(unknown)}")
            bad = set(changes.get("kinds", ())) - set(KINDS)
            if bad:
                raise ValueError(f"unknown fault kinds: {sorted(bad)}")
            for k, v in changes.items():
                setattr(self._cfg, k, tuple(v) if k == "kinds" else v)
            self._cfg.attempts = Counter()

    def clear(self) -> None:
        """Forget what was seen and injected (settings stay)."""
        with self._lock:
            self.seen.clear()
            self.faults.clear()

    def requests(self, listener: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if listener is None or s.listener == listener]

    def credential_leaks(self, base_scheme: str | None = None) -> list[Seen]:
        """Requests that carried credentials where they must not: to the other origin, or in
        cleartext when the configured base is HTTPS (a scheme downgrade)."""
        scheme = base_scheme or urlsplit(self.roots["main"]).scheme
        return [
            s
            for s in self.requests()
            if s.authorization is not None
            and (s.listener != "main" or (scheme == "https" and s.scheme != "https"))
        ]

    # -- the decision -----------------------------------------------------------------------

    def _draw(self, method: str, target: str, body: bytes) -> tuple[random.Random, bool]:
        # Job ids in Bulk status/file URLs differ per export: left out, so a seed replays.
        target = _JOB_ID.sub("/*", target)
        key = f"{method} {target} {hashlib.sha256(body).hexdigest()}"
        with self._lock:
            n = self._cfg.attempts[key]
            self._cfg.attempts[key] += 1
            seed, rate = self._cfg.seed, self._cfg.rate
        rng = random.Random(f"{seed}|{key}|{n}")
        return rng, rate > 0 and rng.random() < rate

    def _choose(self, rng: random.Random, content_type: str, body: bytes) -> str | None:
        kinds = [k for k in self._cfg.kinds if _applies(k, content_type, body)]
        return rng.choice(kinds) if kinds else None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)
            if seen.fault:
                self.faults[seen.fault] += 1

    # -- URL rewriting ----------------------------------------------------------------------

    def _rewrite_body(self, listener: str, content_type: str, body: bytes) -> bytes:
        body = body.replace(self.upstream_origin.encode(), self.roots["main"].encode())
        if listener != "main" or not self._cfg.links_to_other or "ndjson" in content_type:
            return body
        if "json" not in content_type:
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if not isinstance(doc, dict):
            return body
        main, other = self.roots["main"], self.roots["other"]
        changed = False
        if doc.get("resourceType") == "Bundle":
            for link in doc.get("link") or []:
                if link.get("relation") == "next" and isinstance(link.get("url"), str):
                    link["url"] = link["url"].replace(main, other)
                    changed = True
        if isinstance(doc.get("output"), list) and "transactionTime" in doc:
            for item in ("output", "error"):
                for entry in doc.get(item) or []:
                    entry["url"] = entry["url"].replace(main, other)
                    changed = True
            if self._cfg.requires_access_token is not None:
                doc["requiresAccessToken"] = self._cfg.requires_access_token
                changed = True
        return json.dumps(doc).encode() if changed else body

    def _rewrite_header(self, value: str) -> str:
        return value.replace(self.upstream_origin, self.roots["main"])


def _applies(kind: str, content_type: str, body: bytes) -> bool:
    if kind in STATUS_KINDS:
        return True
    if kind in ("reset", "truncate", "truncate_cl"):
        return len(body) > 1
    if kind == "delay":
        return True
    ndjson = "ndjson" in content_type
    if kind in JSON_KINDS:
        return "json" in content_type and not ndjson and len(body) > 0
    return ndjson and b"{" in body  # at least one line to damage


def _cap_count(target: str, cap: int) -> str:
    parts = urlsplit(target)
    if "_count=" not in parts.query:
        return target
    pairs = []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "_count" and value.isdigit() and int(value) > cap:
            pair = f"_count={cap}"
        pairs.append(pair)
    query = "&".join(pairs)
    return f"{parts.path}?{query}"


def _corrupt_line(rng: random.Random, body: bytes) -> bytes:
    lines = body.split(b"\n")
    candidates = [i for i, line in enumerate(lines) if line.strip().startswith(b"{")]
    i = rng.choice(candidates)
    line = lines[i]
    j = line.index(b"{")
    lines[i] = line[:j] + b"X" + line[j + 1 :]  # one byte: the line no longer parses
    return b"\n".join(lines)


def _cut_last_line(body: bytes) -> bytes:
    stripped = body.rstrip(b"\n")
    start = stripped.rfind(b"\n") + 1
    last = stripped[start:]
    return stripped[: start + max(1, len(last) // 2)]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed or reset mid-exchange is what the suite does on purpose.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    listener = "main"
    owner: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: request lines carry patient ids in their queries

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        scheme = urlsplit(proxy.roots[self.listener]).scheme
        forward = {k: v for k, v in headers.items() if k.lower() not in _DROP_REQUEST}
        forward["Accept-Encoding"] = "identity"
        target, body_up = self.path, body_in
        cfg = proxy._cfg
        if self.listener == "other" and cfg.other_token:
            forward["Authorization"] = f"Bearer {cfg.other_token}"
        if cfg.max_count:
            target = _cap_count(target, cfg.max_count)
            if "form-urlencoded" in (self.headers.get("Content-Type") or ""):
                body_up = _cap_count("?" + body_in.decode(), cfg.max_count)[1:].encode()
        try:
            up = proxy._pool.request(
                self.command,
                proxy.upstream_origin + target,
                body=body_up or None,
                headers=forward,
                redirect=False,
                preload_content=True,
                decode_content=True,
            )
        except urllib3.exceptions.HTTPError:
            proxy._record(Seen(self.listener, scheme, self.command, self.path, headers, None))
            self._send(502, {"Content-Type": "text/plain"}, b"upstream unreachable")
            return
        ctype = up.headers.get("Content-Type", "")
        body = proxy._rewrite_body(self.listener, ctype, up.data or b"")
        out_headers = {
            k: (proxy._rewrite_header(v) if k.lower() in _LINKED else v)
            for k, v in up.headers.items()
            if k.lower() not in _DROP_RESPONSE
        }
        fault = None
        if self.listener == "main" and self.command != "HEAD":
            rng, hit = proxy._draw(self.command, self.path, body_in)
            if hit:
                fault = proxy._choose(rng, ctype if 200 <= up.status < 300 else "", body)
        proxy._record(Seen(self.listener, scheme, self.command, self.path, headers, fault))
        self._deliver(fault, up.status, out_headers, body)

    def _deliver(
        self, fault: str | None, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        cfg = self.owner._cfg
        rng = random.Random(hashlib.sha256(body).digest())
        if fault in STATUS_KINDS:
            extra = {"Retry-After": cfg.retry_after} if fault == "429" else {}
            oo = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "transient", "diagnostics": "injected"}],
            }
            ctype = {"Content-Type": "application/fhir+json"}
            self._send(int(fault), {**ctype, **extra}, json.dumps(oo).encode())
        elif fault == "delay":
            time.sleep(cfg.delay)
            self._send(status, headers, body)
        elif fault == "reset":
            self._send_head(status, headers, len(body))
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # linger 0: a TCP reset, not a clean end
            self.close_connection = True
        elif fault == "truncate":
            self._send_head(status, headers, len(body))
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif fault == "truncate_cl":
            self._send(status, headers, body[: len(body) // 2])
        elif fault == "malformed_json":
            i = body.index(b"{") if b"{" in body else 0
            self._send(status, headers, body[:i] + b"<" + body[i + 1 :])
        elif fault == "corrupt_line":
            self._send(status, headers, _corrupt_line(rng, body))
        elif fault == "cut_last_line":
            self._send(status, headers, _cut_last_line(body))
        else:
            self._send(status, headers, body)

    def _send_head(self, status: int, headers: Mapping[str, str], length: int) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self._send_head(status, headers, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN); returns (cert PEM, key PEM). The cert
    doubles as the CA bundle the client is given (``--ca-bundle``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "proxy-cert.pem", directory / "proxy-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def count_kinds(seen: Iterable[Seen]) -> Counter[str]:
    return Counter(s.fault for s in seen if s.fault)
