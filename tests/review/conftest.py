"""Fixtures for the worklist tests: a tiny recorded history (no engine) for the server's checks,
and a plain HTTP client that sends exactly the headers a test names (Host included)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from fhir_cohort.history.db import open_history
from fhir_cohort.review.server import ReviewServer
from tests.history.conftest import record

TRIAL = "T-1"
# Data a page must escape: FHIR ids allow only [A-Za-z0-9.-], but the history stores what the
# source said, and reasons, displays and notes are free text.
HOSTILE = "<script>alert(1)</script>\"'&"
PATIENTS = {"p-eligible": "eligible", "p-review": "review", "p-out": "ineligible"}
HOSTILE_PATIENT = "p.x"  # a legal id; its evidence and reason carry the hostile text


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names; a repeated header keeps its last value
    body: str


class Client:
    """One request per call on a new connection, with exactly the headers given (Host too:
    http.client's own is suppressed)."""

    def __init__(self, server: ReviewServer) -> None:
        self.server = server
        self.host = f"127.0.0.1:{server.port}"

    def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
        *,
        host: str | None = "",
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host or self.host)
            data = body.encode() if isinstance(body, str) else body
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            conn.close()

    def login(self) -> str:
        """Spend the server's token; the session cookie as a Cookie header value."""
        reply = self.send("GET", "/?token=" + self.server.access.token)
        assert reply.status == 303, reply
        return reply.headers["set-cookie"].split(";")[0]


@pytest.fixture(scope="module")
def tiny_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recorded runs of trial T-1 (tables as the engine makes them, without the engine)."""
    path = tmp_path_factory.mktemp("review") / "history.sqlite"
    evidence = {
        (HOSTILE_PATIENT, "sle"): [
            {
                "resource_type": "Condition",
                "resource_id": "c1",
                "date": "2026-01-02",
                "note": HOSTILE,
            }
        ]
    }
    with open_history(path) as history:
        record(history, "2026-11-10", patients=PATIENTS)
        record(
            history,
            "2026-11-24",
            patients={**PATIENTS, HOSTILE_PATIENT: "review"},
            evidence=evidence,
        )
    return path


@pytest.fixture(scope="module")
def served(tiny_history: Path) -> Iterator[ReviewServer]:
    with ReviewServer(tiny_history, reviewer="ana") as server:
        yield server


@pytest.fixture(scope="module")
def client(served: ReviewServer) -> Client:
    return Client(served)
