"""Retry loop, errors and counters of FhirClient, against mocked HTTP (``responses``)."""

from __future__ import annotations

import logging
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses
import urllib3
from fakes import FakeTime
from responses import matchers

from fhir_cohort.errors import AuthError, FhirHttpError, OptionError
from fhir_cohort.fhir.auth import Auth, BearerTokenAuth
from fhir_cohort.fhir.client import FhirClient, InsecureTLSWarning, RateLimiter, strip_query

BASE = "https://ehr.test/fhir"
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Invalid date 'x'"}],
}


def make_client(fake: FakeTime, **kw: object) -> FhirClient:
    return FhirClient(BASE, sleep=fake.sleep, clock=fake.clock, rng=lambda: 0.5, **kw)  # type: ignore[arg-type]


@responses.activate
def test_429_with_retry_after_then_success() -> None:
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    fake = FakeTime()
    client = make_client(fake)
    assert client.read("Patient", "1")["id"] == "1"
    assert fake.sleeps == [7.0]
    assert client.stats.snapshot()["requests"] == 2
    assert client.stats.snapshot()["retries"] == 1


@responses.activate
def test_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    responses.get(f"{BASE}/metadata", status=503, headers={"Retry-After": when})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    fake = FakeTime()
    make_client(fake).capabilities()
    assert len(fake.sleeps) == 1 and 15 < fake.sleeps[0] <= 20


@responses.activate
def test_503_then_success_uses_backoff() -> None:
    responses.get(f"{BASE}/Patient/1", status=503)
    responses.get(f"{BASE}/Patient/1", status=502)
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    fake = FakeTime()
    make_client(fake, backoff=1.0).read("Patient", "1")
    # equal jitter with rng=0.5: 0.75 x the exponential step
    assert fake.sleeps == [0.75, 1.5]


@responses.activate
def test_retry_after_is_capped_and_the_deadline_ends_retries() -> None:
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "3600"})
    fake = FakeTime()
    client = make_client(fake, retry_after_cap=30, deadline=70, max_retries=10)
    with pytest.raises(FhirHttpError, match="deadline") as err:
        client.read("Patient", "1")
    assert fake.sleeps == [30.0, 30.0]
    assert err.value.status == 429


@responses.activate
def test_max_retries_gives_up_with_the_status() -> None:
    responses.get(f"{BASE}/Patient/1", status=500, json=OUTCOME)
    fake = FakeTime()
    with pytest.raises(FhirHttpError, match="giving up after 3 attempts") as err:
        make_client(fake, max_retries=2).read("Patient", "1")
    assert err.value.status == 500 and "Invalid date" in (err.value.outcome or "")


@responses.activate
def test_connection_errors_are_retried() -> None:
    responses.get(f"{BASE}/Patient/1", body=requests.ConnectionError("connection reset by peer"))
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    fake = FakeTime()
    assert make_client(fake).read("Patient", "1")["id"] == "1"
    assert len(fake.sleeps) == 1


@responses.activate
def test_operation_outcome_400_carries_diagnostics_and_no_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses.get(f"{BASE}/Condition", status=400, json=OUTCOME)
    caplog.set_level(logging.DEBUG, logger="fhir_cohort.fhir")
    with pytest.raises(FhirHttpError) as err:
        make_client(FakeTime()).request("GET", "Condition", params=[("patient", "secret-id-42")])
    e = err.value
    assert (e.method, e.url, e.status) == ("GET", f"{BASE}/Condition", 400)
    assert e.outcome == "error: Invalid date 'x'"
    assert "secret-id-42" not in str(e)
    assert "secret-id-42" not in caplog.text and f"{BASE}/Condition" in caplog.text
    assert not isinstance(e, AuthError)


@responses.activate
def test_malformed_json_is_a_clear_error_without_query() -> None:
    responses.get(f"{BASE}/Patient/9", body="<html>proxy error</html>", content_type="text/html")
    with pytest.raises(FhirHttpError, match="not valid JSON") as err:
        make_client(FakeTime()).read("Patient", "9")
    assert err.value.url == f"{BASE}/Patient/9"


class CountingAuth(Auth):
    def __init__(self) -> None:
        self.version = 1

    def headers(self, client: FhirClient) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.version}"}

    def invalidate(self) -> None:
        self.version += 1


@responses.activate
def test_401_reauthenticates_once_then_succeeds() -> None:
    bearer = matchers.header_matcher
    responses.get(
        f"{BASE}/Patient/1", status=401, match=[bearer({"Authorization": "Bearer token-1"})]
    )
    responses.get(
        f"{BASE}/Patient/1",
        json={"resourceType": "Patient", "id": "1"},
        match=[bearer({"Authorization": "Bearer token-2"})],
    )
    auth = CountingAuth()
    assert make_client(FakeTime(), auth=auth).read("Patient", "1")["id"] == "1"
    assert auth.version == 2


@responses.activate
def test_401_twice_is_an_auth_error_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(f"{BASE}/Patient/1", status=401, json=OUTCOME)
    auth = BearerTokenAuth("very-secret-token")
    with pytest.raises(AuthError) as err:
        make_client(FakeTime(), auth=auth).read("Patient", "1")
    assert err.value.status == 401
    assert len(responses.calls) == 2  # one re-authentication, no more
    assert "very-secret-token" not in str(err.value) + caplog.text
    assert "very-secret-token" not in repr(auth)


@responses.activate
def test_403_is_an_auth_error_and_not_retried() -> None:
    responses.get(f"{BASE}/Patient/1", status=403, json=OUTCOME)
    with pytest.raises(AuthError, match="not authorised"):
        make_client(FakeTime(), auth=CountingAuth()).read("Patient", "1")
    assert len(responses.calls) == 1  # forbidden is final: no re-auth, no retry


@responses.activate
def test_default_headers_and_strict_search() -> None:
    responses.get(f"{BASE}/Patient", json={"resourceType": "Bundle", "type": "searchset"})
    client = FhirClient(BASE, headers={"X-Tenant": "t1"})
    client.request("GET", "Patient", search=True)
    sent = responses.calls[0].request.headers
    assert sent["Accept"] == "application/fhir+json"
    assert sent["Prefer"] == "handling=strict"
    assert "gzip" in sent["Accept-Encoding"]
    assert sent["X-Tenant"] == "t1"
    FhirClient(BASE, strict_search=False).request("GET", "Patient", search=True)
    assert "Prefer" not in responses.calls[1].request.headers


def test_tls_verification_cannot_be_switched_off_silently(tmp_path: object) -> None:
    assert FhirClient(BASE).session.verify is True
    with pytest.warns(InsecureTLSWarning, match="verification is OFF"):
        client = FhirClient(BASE, verify=False)
    assert client.session.verify is False
    with pytest.raises(ValueError, match="CA bundle not found"):
        FhirClient(BASE, verify="/nonexistent/ca.pem")


def test_rate_limiter_spaces_requests() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2.0, burst=1, clock=fake.clock, sleep=fake.sleep)
    for _ in range(4):
        limiter.acquire()
    assert fake.sleeps == [0.5, 0.5, 0.5]


def test_strip_query_removes_credentials_and_query() -> None:
    assert strip_query("http://a:b@h:8080/fhir/Patient?_id=1") == "http://h:8080/fhir/Patient"


@responses.activate
def test_200_with_invalid_json_is_retried_like_a_503() -> None:
    # a body garbled in transit is transient: same budget as 5xx, not a hard failure
    responses.get(f"{BASE}/Patient/1", body='{"resourceType": "Pat', status=200)
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    fake = FakeTime()
    client = make_client(fake, backoff=1.0)
    assert client.read("Patient", "1")["id"] == "1"
    assert client.stats.snapshot()["retries"] == 1


@responses.activate
def test_200_with_invalid_json_every_time_gives_up_with_the_reason() -> None:
    responses.get(f"{BASE}/metadata", body="<html>proxy error</html>", status=200)
    fake = FakeTime()
    with pytest.raises(FhirHttpError, match=r"giving up after 3 attempts.*not valid JSON"):
        make_client(fake, max_retries=2).capabilities()


@responses.activate
def test_exchange_retries_a_body_cut_while_it_is_consumed() -> None:
    responses.get(f"{BASE}/file.ndjson", body=b'{"a": 1}\n')
    calls: list[int] = []

    def consume(resp: requests.Response) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise requests.exceptions.ChunkedEncodingError("connection reset mid-body")
        return resp.content

    fake = FakeTime()
    assert make_client(fake).exchange("GET", "file.ndjson", consume, stream=True) == b'{"a": 1}\n'
    assert len(calls) == 2 and len(fake.sleeps) == 1


# -- connection errors say what happened and where (issue 9 item 15) --------------------------


def test_a_refused_connection_names_the_host_and_the_reason() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeTime()
    client = FhirClient(
        f"http://127.0.0.1:{port}/fhir", sleep=fake.sleep, clock=fake.clock, max_retries=1
    )
    with pytest.raises(FhirHttpError) as err:
        client.get_json("Condition", [("patient", "secret-id-42")])
    msg = str(err.value)
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in msg
    assert "giving up after 2 attempts" in msg and "secret-id-42" not in msg


def _wrapped(inner: BaseException, outer: type[requests.RequestException]) -> Exception:
    """The chain requests builds: requests error -> urllib3 MaxRetryError -> reason."""
    pool_error = urllib3.exceptions.MaxRetryError(None, "/Condition?patient=secret-id-42", inner)  # type: ignore[arg-type]
    return outer(pool_error)


CONNECTION_FAILURES = [
    (
        _wrapped(
            urllib3.exceptions.NameResolutionError("ehr.test", None, socket.gaierror(-2, "x")),  # type: ignore[arg-type]
            requests.ConnectionError,
        ),
        "DNS lookup failed",
    ),
    (
        _wrapped(
            urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
            requests.ConnectionError,
        ),
        "connection failed",
    ),
    (_wrapped(urllib3.exceptions.ConnectTimeoutError(), requests.ConnectTimeout), "timed out"),
    (requests.ReadTimeout("read timed out /Condition?patient=secret-id-42"), "read timeout"),
    (requests.ConnectionError(ConnectionResetError(104, "reset")), "connection reset"),
]


@pytest.mark.parametrize(("exc", "words"), CONNECTION_FAILURES)
def test_connection_failures_are_described_in_words(exc: Exception, words: str) -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/Condition", body=exc)
        with pytest.raises(FhirHttpError) as err:
            make_client(FakeTime(), max_retries=0).get_json(
                "Condition", [("patient", "secret-id-42")]
            )
    msg = str(err.value)
    assert msg.startswith("cannot connect to ehr.test:443: ") and words in msg
    assert "secret-id-42" not in msg and "MaxRetryError" not in msg


@pytest.mark.parametrize(
    ("inner", "words"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "verification failed"),
        (ssl.SSLError(1, "wrong version number"), "TLS handshake failed"),
    ],
)
def test_tls_failures_are_named_and_not_retried(inner: Exception, words: str) -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/metadata", body=_wrapped(inner, requests.exceptions.SSLError))
        fake = FakeTime()
        with pytest.raises(FhirHttpError, match=words):
            make_client(fake).capabilities()
        assert len(mock.calls) == 1 and fake.sleeps == []  # a certificate does not heal


def test_option_errors_are_option_errors(tmp_path: object) -> None:
    with pytest.raises(OptionError, match="CA bundle not found"):
        FhirClient(BASE, verify="/nonexistent/ca.pem")
    with pytest.raises(OptionError):
        RateLimiter(0)
    with pytest.raises(OptionError):
        FhirClient("ehr.test/fhir")
