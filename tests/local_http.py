"""A tiny HTTP server on 127.0.0.1 for what the real test server does not do on demand: answer
500 every time, offer a bare CapabilityStatement, or hold one request while a test acts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# (method, path with query, request body, request headers) -> (status, headers, body)
Handler = Callable[[str, str, bytes, Mapping[str, str]], tuple[int, dict[str, str], bytes]]


class LocalServer:
    """Answers every request with ``handle``; counts requests."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        owner = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner._lock:
                    owner.requests.append((self.command, self.path))
                status, headers, data = owner.handle(self.command, self.path, body, self.headers)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: object) -> None:  # quiet
                pass

        class _Quiet(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up (an interrupted run) is expected here

        self.httpd = _Quiet(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.root_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.base_url = f"{self.root_url}/fhir"


@contextmanager
def serve(handle: Handler) -> Iterator[LocalServer]:
    server = LocalServer(handle)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=10)


def always(status: int, body: bytes = b"", **answer_headers: str) -> Handler:
    """A handler that answers every request the same way, with ``answer_headers``."""

    def handle(
        method: str, path: str, data: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        # (the request's headers are not echoed: a Retry-After given here must reach the client)
        return status, {"Content-Type": "application/fhir+json", **answer_headers}, body

    return handle


def proxy(upstream_base: str, local: Callable[[], str]) -> Handler:
    """Forward to ``upstream_base`` (``.../fhir``), rewriting its URLs in bodies to ours
    (``local()``: our base URL, known once the server is bound), so next links come back here."""
    session = requests.Session()

    def handle(
        method: str, path: str, data: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        root = upstream_base.rsplit("/fhir", 1)[0]
        send = {"Accept": headers.get("Accept") or "application/fhir+json"}
        if headers.get("Content-Type"):
            send["Content-Type"] = headers["Content-Type"]
        resp = session.request(method, root + path, data=data or None, headers=send, timeout=120)
        body = resp.content.replace(upstream_base.encode(), local().encode())
        headers = {"Content-Type": resp.headers.get("Content-Type", "application/fhir+json")}
        for name in ("Content-Location", "Location", "Retry-After", "X-Progress"):
            if name in resp.headers:
                headers[name] = resp.headers[name].replace(upstream_base, local())
        return resp.status_code, headers, body

    return handle
