"""The worklist server's checks, over real HTTP to a server on 127.0.0.1 (one per module):
the one-time token and the session cookie, Host / Origin / Referer, the security headers on
every response, the save path's answers (saved, conflict, invalid), escaping, and logs without
patient data. The browser test (test_worklist_browser.py) covers the pages in use."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from fhir_cohort.cli import EXIT_DATA, EXIT_OK, EXIT_USAGE
from fhir_cohort.review.security import SECURITY_HEADERS
from fhir_cohort.review.server import ReviewServer
from tests.cli_main import run_main
from tests.review.conftest import HOSTILE, HOSTILE_PATIENT, PATIENTS, TRIAL, Client, Reply

FORM = "application/x-www-form-urlencoded"
PATIENT = f"/trials/{TRIAL}/patients/p-review"
# Every route and method, and a path no route has: all behind the same checks.
REQUESTS = [
    ("GET", "/"),
    ("GET", f"/trials/{TRIAL}"),
    ("GET", PATIENT),
    ("POST", PATIENT),
    ("GET", "/nowhere"),
    ("PUT", PATIENT),
]


@pytest.fixture(scope="module")
def login(client: Client, served: ReviewServer) -> Reply:
    """The first request with the token (refused before it: no session yet)."""
    assert client.send("GET", "/").status == 403
    return client.send("GET", "/?token=" + served.access.token)


@pytest.fixture(scope="module")
def cookie(login: Reply) -> str:
    return login.headers["set-cookie"].split(";")[0]


def _post(client: Client, cookie: str, path: str, body: str, **headers: str) -> Reply:
    return client.send(
        "POST",
        path,
        {"Cookie": cookie, "Origin": client.server.origin, "Content-Type": FORM, **headers},
        body,
    )


def test_the_token_is_spent_for_a_strict_httponly_session_cookie(
    client: Client, served: ReviewServer, login: Reply, cookie: str
) -> None:
    assert login.status == 303 and login.headers["location"] == "/"  # the token leaves the URL
    attributes = {a.strip() for a in login.headers["set-cookie"].split(";")[1:]}
    assert attributes == {"Path=/", "HttpOnly", "SameSite=Strict"}
    assert cookie.startswith(f"fhir_cohort_review_{served.port}=")
    token = served.access.token
    assert client.send("GET", "/?token=" + token).status == 403  # spent
    assert "set-cookie" not in client.send("GET", "/?token=" + token).headers
    # the printed address opened again in the signed-in browser just goes on
    again = client.send("GET", "/?token=" + token, {"Cookie": cookie})
    assert (again.status, again.headers["location"]) == (303, "/")
    assert client.send("GET", "/", {"Cookie": cookie}).status == 303  # one trial: its worklist
    assert client.send("GET", f"/trials/{TRIAL}", {"Cookie": cookie}).status == 200


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_requests_without_the_session_are_refused(
    client: Client, served: ReviewServer, cookie: str, method: str, path: str
) -> None:
    name, value = cookie.split("=", 1)
    other_port = f"fhir_cohort_review_{served.port + 1}={value}"
    for headers in (
        {},
        {"Cookie": f"{name}=not-the-session"},
        {"Cookie": other_port},  # cookies are per host, not per port: another server's name
        {"Cookie": f"{name}="},
    ):
        headers = {**headers, "Origin": served.origin, "Content-Type": FORM}
        reply = client.send(method, path, headers, "version=0" if method != "GET" else None)
        assert reply.status == 403, (headers, reply)
        assert "p-review" not in reply.body and "not signed in" in reply.body
    wrong = client.send("GET", path + "?token=" + "x" * 43, {"Cookie": other_port})
    assert wrong.status == 403


def test_other_hosts_and_origins_are_refused(
    client: Client, served: ReviewServer, cookie: str
) -> None:
    port, origin = served.port, served.origin
    hosts = [
        f"localhost:{port}",  # a name the browser resolves: DNS rebinding sends its name
        f"evil.example:{port}",
        "evil.example",
        "127.0.0.1",
        f"127.0.0.1:{port + 1}",
        f"[::1]:{port}",
        f"127.0.0.1:{port}.evil.example",
    ]
    for host in hosts:
        for method, path in REQUESTS[:4]:
            reply = client.send(method, path, {"Cookie": cookie, "Origin": origin}, host=host)
            assert reply.status == 403 and "wrong Host" in reply.body, (host, method, reply)
    # no Host at all: HTTP/1.1 requires one, and uvicorn answers 400 before the app sees it
    assert client.send("GET", "/", {"Cookie": cookie}, host=None).status == 400
    origins = [
        "http://evil.example",
        f"http://localhost:{port}",
        f"https://127.0.0.1:{port}",
        f"http://127.0.0.1:{port + 1}",
        "null",  # sandboxed frames and some redirects
        f"{origin}.evil.example",
    ]
    for other in origins:
        for headers in (
            {"Origin": other},
            {"Referer": other + "/trials"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1
        ):
            for method, path in REQUESTS[:4]:
                reply = client.send(
                    method, path, {"Cookie": cookie, "Content-Type": FORM, **headers}, "version=0"
                )
                assert reply.status == 403 and "another origin" in reply.body, (headers, reply)
    # a change needs a browser's Origin or Referer: a bare POST with the cookie is refused
    bare = client.send("POST", PATIENT, {"Cookie": cookie, "Content-Type": FORM}, "version=0")
    assert bare.status == 403 and "no Origin" in bare.body
    # the same requests from this origin pass
    for fetch_site in ("same-origin", "none"):  # "none": typed or opened from the terminal
        same = client.send(
            "GET",
            PATIENT,
            {"Cookie": cookie, "Referer": origin + "/trials/T-1", "Sec-Fetch-Site": fetch_site},
        )
        assert same.status == 200


def test_every_response_carries_the_security_headers(
    client: Client, served: ReviewServer, cookie: str
) -> None:
    c = {"Cookie": cookie}
    replies = {
        "refused": client.send("GET", "/"),
        "wrong host": client.send("GET", "/", c, host="evil.example"),
        "login refused": client.send("GET", "/?token=spent"),
        "redirect": client.send("GET", "/", c),
        "worklist": client.send("GET", f"/trials/{TRIAL}", c),
        "patient": client.send("GET", PATIENT, c),
        "not found": client.send("GET", "/trials/nope", c),
        "no route": client.send("GET", "/nowhere", c),
        "wrong method": client.send("DELETE", PATIENT, {**c, "Origin": served.origin}),
        "not a form": _post(client, cookie, PATIENT, "{}", **{"Content-Type": "text/plain"}),
    }
    assert replies["worklist"].status == 200 and replies["not a form"].status == 415
    for kind, reply in replies.items():
        missing = [h for h in SECURITY_HEADERS if h not in reply.headers]
        assert missing == [], (kind, reply.status)
        assert "server" not in reply.headers, kind  # no software banner
    csp = {d.split()[0]: d.split()[1:] for d in replies["patient"].headers[
        "content-security-policy"].split("; ")}  # fmt: skip
    assert csp["default-src"] == ["'none'"]
    assert csp["form-action"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["style-src"][0].startswith("'sha256-") and "script-src" not in csp  # no script
    assert replies["patient"].headers["cache-control"] == "no-store"
    # nothing on the page reaches outside: no absolute URL in any src or href
    for page in (replies["worklist"].body, replies["patient"].body):
        assert "http://" not in page and "https://" not in page and "<script" not in page


def test_a_save_a_conflict_and_an_invalid_decision(client: Client, cookie: str) -> None:
    saved = _post(client, cookie, PATIENT, "decision=eligible&contact_status=attempt_1&version=0")
    assert saved.status == 303 and saved.headers["location"] == PATIENT + "?saved=1"
    shown = client.send("GET", saved.headers["location"], {"Cookie": cookie})
    assert 'id="notice"' in shown.body and "Saved (version 1)" in shown.body
    assert 'name="version" value="1"' in shown.body and "attempt 1" in shown.body
    # the same stale version again: a conflict, nothing written, the entry kept in the form
    stale = _post(client, cookie, PATIENT, "decision=needs_information&note=mine&version=0")
    assert stale.status == 409 and "Not saved" in stale.body
    assert 'name="version" value="1"' in stale.body and ">mine</textarea>" in stale.body
    for body, status, text in (
        ("decision=ineligible&reason=&version=1", 400, "needs a reason"),
        ("decision=maybe&version=1", 400, "not one of"),
        ("contact_status=called&version=1", 400, "not one of"),
        ("decision=eligible&version=x", 409, "Not saved"),
    ):
        reply = _post(client, cookie, PATIENT, body)
        assert (reply.status, text in reply.body) == (status, True), body
    log = client.send("GET", PATIENT, {"Cookie": cookie}).body
    assert log.count("<td>ana</td>") == 2  # version 1's two fields, and nothing else
    big = _post(client, cookie, PATIENT, "note=" + "x" * 70_000 + "&version=1")
    assert big.status == 413
    for path in (f"/trials/{TRIAL}/patients/p-out", f"/trials/{TRIAL}/patients/nobody"):
        assert _post(client, cookie, path, "version=0").status == 404  # not in the worklist
        assert client.send("GET", path, {"Cookie": cookie}).status == 404


def test_history_text_is_escaped_on_every_page(client: Client, cookie: str) -> None:
    path = f"/trials/{TRIAL}/patients/{HOSTILE_PATIENT}"
    body = "decision=ineligible&reason=r%3Cb%3E&note=" + requests.utils.quote(HOSTILE)
    assert _post(client, cookie, path, body + "&version=0").status == 303
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;"
    for page in (path, f"/trials/{TRIAL}"):
        text = client.send("GET", page, {"Cookie": cookie}).body
        assert HOSTILE not in text and "<script" not in text and "r<b>" not in text
        assert escaped in text


def test_logs_name_the_page_kind_never_ids_tokens_notes_or_queries(
    client: Client, served: ReviewServer, cookie: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the web stack's too
    note = "called-her-mobile-0711"
    c = {"Cookie": cookie}
    client.send("GET", f"/trials/{TRIAL}", c)
    client.send("GET", PATIENT + "?saved=9&token=t0ps3cret", c)
    current = client.send("GET", PATIENT, c).body.split('name="version" value="')[1]
    version = current.split('"')[0]
    _post(client, cookie, PATIENT, f"note={note}&version={version}")
    _post(client, cookie, PATIENT, f"note={note}&version=0")  # conflict
    client.send("GET", "/?token=" + served.access.token)  # spent
    client.send("GET", PATIENT, {**c, "Origin": "http://evil.example"})
    client.send("GET", PATIENT)
    messages = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    review = [m for m in messages if m.startswith("review: ")]
    assert len(review) == 8, messages  # one line per request: logging is on
    assert not [r for r in caplog.records if r.name == "uvicorn.access"]
    secrets = [*PATIENTS, HOSTILE_PATIENT, served.access.token, cookie.split("=", 1)[1], note]
    for message in messages:
        assert not [s for s in secrets if s in message], message
        assert "?" not in message and "/trials" not in message, message


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_cli_prints_the_address_serves_and_stops_on_a_signal(
    tiny_history: Path, stop: signal.Signals
) -> None:
    """The entry point in a process of its own: the signal is the point (Ctrl-C, or a
    service manager's SIGTERM)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_cohort", "-vv", "review", "--history", str(tiny_history)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        url = line.split(" open ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        page = requests.get(url, timeout=30)  # follows the redirects, keeps the cookie
        assert page.status_code == 200 and page.url.endswith(f"/trials/{TRIAL}")
        assert "p-review" in page.text
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_OK, err
    assert out.strip().endswith("fhir-cohort review: stopped")
    token = url.split("token=")[1]
    assert "review: GET worklist 200" in err and token not in err and "p-review" not in err


def test_cli_refuses_a_missing_history_or_an_unknown_trial(
    tiny_history: Path, tmp_path: Path
) -> None:
    missing = run_main(["review", "--history", str(tmp_path / "none.sqlite")])
    assert missing.returncode == EXIT_DATA and "no screening history" in missing.stderr
    assert not (tmp_path / "none.sqlite").exists()
    unknown = run_main(["review", "--history", str(tiny_history), "--trial", "NCT0"])
    assert unknown.returncode == EXIT_USAGE and "--trial NCT0" in unknown.stderr
