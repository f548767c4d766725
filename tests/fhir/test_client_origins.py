"""The credential policy of the one send layer (issue 9 items 7 and 8), against mocked HTTP.

Credentials are the auth header and the user's extra headers. They go to the base URL's origin
only; never over plain http (except loopback, or when allowed), never after a downgrade; a link
or redirect to another origin is followed without credentials only when allowed.
"""

from __future__ import annotations

import pytest
import responses
from fakes import FakeTime

from fhir_cohort.errors import AuthError, OptionError, OriginError
from fhir_cohort.fhir.auth import Auth, BasicAuth, BearerTokenAuth, NoAuth
from fhir_cohort.fhir.client import FhirClient, is_loopback, origin_of

BASE = "https://ehr.test/fhir"
SECRET_HEADER = ("X-Api-Key", "key-123")
AUTHS = {
    "bearer": BearerTokenAuth("tok-secret"),
    "basic": BasicAuth("alice", "pw-secret"),
}
# every way a URL can leave the base origin: host, port, scheme (a downgrade), sub-domain
OTHER_ORIGINS = [
    "https://files.example.org/job/1.ndjson",
    "https://ehr.test:8443/fhir/Patient",
    "https://sub.ehr.test/fhir/Patient",
    "http://ehr.test/fhir/Patient",
]
PATIENT = {"resourceType": "Patient", "id": "1"}


def make_client(auth: Auth | None = None, **kw: object) -> FhirClient:
    fake = FakeTime()
    return FhirClient(
        BASE,
        auth=auth,
        headers=dict([SECRET_HEADER]),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=lambda: 0.5,
        **kw,  # type: ignore[arg-type]
    )


def _leaked(request: object) -> list[str]:
    headers = request.headers  # type: ignore[attr-defined]
    return [h for h in ("Authorization", SECRET_HEADER[0]) if h in headers]


@responses.activate
@pytest.mark.parametrize("kind", sorted(AUTHS))
def test_same_origin_gets_the_credentials(kind: str) -> None:
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    make_client(AUTHS[kind]).read("Patient", "1")
    assert _leaked(responses.calls[0].request) == ["Authorization", "X-Api-Key"]


@responses.activate
@pytest.mark.parametrize("kind", sorted(AUTHS))
@pytest.mark.parametrize("url", OTHER_ORIGINS)
def test_a_link_to_another_origin_is_refused_naming_both_origins(kind: str, url: str) -> None:
    responses.get(url, json=PATIENT)
    with pytest.raises(OriginError) as err:
        make_client(AUTHS[kind]).get_json(url + "?patient=secret-77")
    msg = str(err.value)
    assert "https://ehr.test" in msg and origin_of(url)[1] in msg
    assert "secret-77" not in msg
    assert not responses.calls  # nothing went out


@responses.activate
@pytest.mark.parametrize("kind", sorted(AUTHS))
@pytest.mark.parametrize("url", OTHER_ORIGINS[:3])
def test_an_allowed_origin_is_fetched_without_credentials(kind: str, url: str) -> None:
    responses.get(url, json=PATIENT)
    client = make_client(AUTHS[kind], allow_origins=[url.rsplit("/", 2)[0]])
    assert client.get_json(url)["id"] == "1"
    assert _leaked(responses.calls[0].request) == []


@responses.activate
@pytest.mark.parametrize("url", OTHER_ORIGINS[:3])
def test_authenticate_false_reaches_another_origin_without_credentials(url: str) -> None:
    # Bulk files whose manifest says requiresAccessToken: false (on a file server elsewhere)
    responses.get(url, json=PATIENT)
    assert make_client(AUTHS["bearer"]).get_json(url, authenticate=False)["id"] == "1"
    assert _leaked(responses.calls[0].request) == []


@responses.activate
@pytest.mark.parametrize("authenticate", [True, False])
def test_never_down_from_https_to_plain_http(authenticate: bool) -> None:
    url = "http://ehr.test/fhir/Patient/1"
    responses.get(url, json=PATIENT)
    client = make_client(AUTHS["bearer"], allow_origins=["http://ehr.test"])
    with pytest.raises(OriginError, match="from https down to plain http"):
        client.get_json(url, authenticate=authenticate)
    assert not responses.calls


@responses.activate
def test_a_401_without_credentials_sent_is_not_retried_with_them() -> None:
    url = "https://files.example.org/f.ndjson"
    responses.get(url, status=401)
    with pytest.raises(AuthError):
        make_client(AUTHS["bearer"], allow_origins=["https://files.example.org"]).get_json(url)
    assert len(responses.calls) == 1 and _leaked(responses.calls[0].request) == []


# -- redirects: followed by the client, under the same policy --------------------------------


@responses.activate
def test_a_same_origin_redirect_keeps_the_credentials() -> None:
    responses.get(f"{BASE}/Patient/1", status=302, headers={"Location": "/fhir/Patient/one"})
    responses.get(f"{BASE}/Patient/one", json=PATIENT)
    assert make_client(AUTHS["bearer"]).read("Patient", "1")["id"] == "1"
    assert _leaked(responses.calls[1].request) == ["Authorization", "X-Api-Key"]


@responses.activate
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", OTHER_ORIGINS)
def test_a_redirect_off_origin_is_refused_before_it_is_followed(status: int, target: str) -> None:
    responses.get(f"{BASE}/Patient/1", status=status, headers={"Location": target + "?sig=x"})
    responses.get(target, json=PATIENT)
    with pytest.raises(OriginError) as err:
        make_client(AUTHS["bearer"]).read("Patient", "1")
    assert "sig=x" not in str(err.value)
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [302, 307])
def test_an_allowed_redirect_off_origin_drops_every_credential(status: int) -> None:
    target = "https://files.example.org/signed/1.ndjson?sig=abc"
    responses.get(f"{BASE}/Patient/1", status=status, headers={"Location": target})
    responses.get(target.split("?")[0], json=PATIENT)
    client = make_client(AUTHS["basic"], allow_origins=["https://files.example.org"])
    assert client.read("Patient", "1")["id"] == "1"
    assert responses.calls[1].request.url == target
    assert _leaked(responses.calls[1].request) == []


@responses.activate
def test_303_after_post_turns_into_a_get_and_redirect_loops_end() -> None:
    responses.post(f"{BASE}/Group", status=303, headers={"Location": f"{BASE}/Group/9"})
    responses.get(f"{BASE}/Group/9", json={"resourceType": "Group", "id": "9"})
    client = make_client(AUTHS["bearer"])
    assert client.request("POST", "Group", json_body={"resourceType": "Group"}).json()["id"] == "9"
    assert responses.calls[1].request.method == "GET"
    responses.get(f"{BASE}/loop", status=302, headers={"Location": f"{BASE}/loop"})
    with pytest.raises(Exception, match="more than 10 redirects"):
        client.get_json("loop")


# -- item 8: plain-http base URLs with credentials ---------------------------------------------


@pytest.mark.parametrize(
    "auth,headers",
    [(AUTHS["bearer"], {}), (AUTHS["basic"], {}), (None, {"X-Api-Key": "k"})],
)
def test_plain_http_with_credentials_is_refused_unless_loopback_or_allowed(
    auth: Auth | None, headers: dict[str, str]
) -> None:
    with pytest.raises(OptionError, match="--allow-insecure-http"):
        FhirClient("http://ehr.example.org/fhir", auth=auth, headers=headers)
    FhirClient("http://ehr.example.org/fhir", auth=auth, headers=headers, allow_insecure_http=True)
    for loopback in ("http://127.0.0.1:8080/fhir", "http://localhost/fhir", "http://[::1]/fhir"):
        FhirClient(loopback, auth=auth, headers=headers)


def test_plain_http_without_credentials_is_fine() -> None:
    FhirClient("http://ehr.example.org/fhir")
    FhirClient("http://ehr.example.org/fhir", auth=NoAuth(), headers={"X-Tenant": "t1"})


@pytest.mark.parametrize(
    "bad", ["ftp://ehr.test/fhir", "ehr.test/fhir", "https://", "file:///etc/passwd"]
)
def test_bad_urls_are_option_errors(bad: str) -> None:
    with pytest.raises(OptionError):
        FhirClient(bad)
    with pytest.raises(OptionError, match="--allow-origin"):
        FhirClient(BASE, allow_origins=[bad])


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("localhost.example.org", False),
        ("ehr.test", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
