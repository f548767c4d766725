"""Auth configuration, client assertions and token handling (mocked token endpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
import requests
import responses
from jwt.algorithms import ECAlgorithm

from fhir_cohort.errors import AuthError
from fhir_cohort.fhir.auth import (
    ASSERTION_TYPE,
    AuthOptions,
    BasicAuth,
    BearerTokenAuth,
    NoAuth,
    SmartBackendAuth,
    auth_from_env,
    load_signing_key,
)
from fhir_cohort.fhir.client import FhirClient
from tests.server.sekmet import generate_key_pair, public_jwk, write_private_pem

BASE = "https://ehr.test/fhir"
TOKEN_URL = "https://auth.ehr.test/token"


@pytest.fixture(scope="module")
def ec_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_private_pem(generate_key_pair("ES384"), tmp_path_factory.mktemp("k") / "ec.pem")


def test_env_bearer_basic_and_files(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\nignored\n")
    auth = auth_from_env({"FHIR_COHORT_TOKEN_FILE": str(token_file)})
    assert isinstance(auth, BearerTokenAuth)
    assert auth.headers(None) == {"Authorization": "Bearer tok-from-file"}  # type: ignore[arg-type]
    pw = tmp_path / "pw"
    pw.write_text("p@ss")
    basic = auth_from_env(
        {"FHIR_COHORT_BASIC_USER": "alice", "FHIR_COHORT_BASIC_PASSWORD_FILE": str(pw)}
    )
    assert isinstance(basic, BasicAuth)
    assert basic.headers(None)["Authorization"] == "Basic YWxpY2U6cEBzcw=="  # type: ignore[arg-type]
    assert "p@ss" not in repr(basic) and "alice" in repr(basic)
    assert isinstance(auth_from_env({}), NoAuth)


def test_env_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="several auth methods"):
        auth_from_env({"FHIR_COHORT_TOKEN": "t", "FHIR_COHORT_BASIC_USER": "u"})
    with pytest.raises(AuthError, match="FHIR_COHORT_BASIC_PASSWORD"):
        auth_from_env({"FHIR_COHORT_BASIC_USER": "u"})
    with pytest.raises(AuthError, match="FHIR_COHORT_PRIVATE_KEY"):
        auth_from_env({"FHIR_COHORT_CLIENT_ID": "c"})
    with pytest.raises(AuthError, match="only one of FHIR_COHORT_TOKEN"):
        auth_from_env({"FHIR_COHORT_TOKEN": "t", "FHIR_COHORT_TOKEN_FILE": "/x"})
    with pytest.raises(AuthError, match="cannot read"):
        auth_from_env({"FHIR_COHORT_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(AuthError, match="needs FHIR_COHORT_TOKEN"):
        auth_from_env({}, AuthOptions(kind="bearer"))


def test_key_loading_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(AuthError, match="not an unencrypted PEM"):
        load_signing_key(pem_path=bad)
    public_only = tmp_path / "public.jwks"
    public_only.write_text(json.dumps({"keys": [public_jwk(generate_key_pair("ES384"), "ES384")]}))
    with pytest.raises(AuthError, match="no private"):
        load_signing_key(jwks_path=public_only)


def test_client_assertion_claims(ec_key_path: Path) -> None:
    key = load_signing_key(pem_path=ec_key_path)
    auth = SmartBackendAuth("my-client", key)
    token = auth.assertion(TOKEN_URL)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES384" and header["kid"] == key.kid and header["typ"] == "JWT"
    pub = ECAlgorithm.from_jwk(json.dumps(public_jwk(key.key, "ES384")))
    claims = jwt.decode(token, pub, algorithms=["ES384"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "my-client"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert (
        claims["jti"]
        != jwt.decode(auth.assertion(TOKEN_URL), options={"verify_signature": False})["jti"]
    )
    assert "BEGIN" not in repr(auth) and "my-client" in repr(auth)


def _token_form(request: object) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(request.body))  # type: ignore[attr-defined]


@responses.activate
def test_discovery_token_reuse_and_reauth_on_401(ec_key_path: Path) -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": TOKEN_URL})
    responses.post(TOKEN_URL, json={"access_token": "tok-1", "expires_in": 300})
    responses.post(TOKEN_URL, json={"access_token": "tok-2", "expires_in": 300})
    bearer = responses.matchers.header_matcher
    ok = {"resourceType": "Patient", "id": "1"}
    responses.get(f"{BASE}/Patient/1", json=ok, match=[bearer({"Authorization": "Bearer tok-1"})])
    responses.get(
        f"{BASE}/Patient/2", status=401, match=[bearer({"Authorization": "Bearer tok-1"})]
    )
    responses.get(f"{BASE}/Patient/2", json=ok, match=[bearer({"Authorization": "Bearer tok-2"})])
    auth = SmartBackendAuth("c1", load_signing_key(pem_path=ec_key_path), scope="system/*.rs")
    client = FhirClient(BASE, auth=auth, sleep=lambda s: None)
    client.read("Patient", "1")
    client.read("Patient", "1")
    client.read("Patient", "2")  # expired token -> 401 -> new token -> success
    assert auth.token_requests == 2
    form = _token_form(responses.calls[1].request)
    assert form["grant_type"] == "client_credentials" and form["scope"] == "system/*.rs"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_token_endpoint_falls_back_to_capability_statement(ec_key_path: Path) -> None:
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    ext = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    cap = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "security": {
                    "extension": [
                        {"url": ext, "extension": [{"url": "token", "valueUri": TOKEN_URL}]}
                    ]
                }
            }
        ],
    }
    responses.get(f"{BASE}/metadata", json=cap)
    responses.post(
        TOKEN_URL, status=400, json={"error": "invalid_scope", "error_description": "no such scope"}
    )
    auth = SmartBackendAuth("c1", load_signing_key(pem_path=ec_key_path))
    with pytest.raises(AuthError, match="invalid_scope: no such scope"):
        auth.headers(FhirClient(BASE))
    assert auth.token_url == TOKEN_URL


def _jti(request: object) -> str:
    assertion = _token_form(request)["client_assertion"]
    return str(jwt.decode(assertion, options={"verify_signature": False})["jti"])


@pytest.mark.parametrize(
    "first",
    [
        {"status": 503},
        {"body": requests.ConnectionError("Connection reset by peer")},
        {"body": '{"access_token": "tok-', "status": 200},  # the answer cut in transit
    ],
    ids=["503", "reset", "cut-200"],
)
def test_a_retried_token_request_signs_a_new_assertion(ec_key_path: Path, first: dict) -> None:
    # a jti is single-use: re-sending the assertion of a lost answer would be refused as a replay
    with responses.RequestsMock() as mock:
        mock.post(TOKEN_URL, **first)
        mock.post(TOKEN_URL, json={"access_token": "tok-1", "expires_in": 300})
        auth = SmartBackendAuth("c1", load_signing_key(pem_path=ec_key_path), token_url=TOKEN_URL)
        client = FhirClient(BASE, auth=auth, sleep=lambda s: None)
        assert auth.headers(client) == {"Authorization": "Bearer tok-1"}
        first_jti, second_jti = (_jti(c.request) for c in mock.calls)
    assert first_jti != second_jti
    assert auth.token_requests == 1 and client.stats.retries == 1


@responses.activate
def test_a_token_endpoint_on_plain_http_is_refused(ec_key_path: Path) -> None:
    auth = SmartBackendAuth(
        "c1", load_signing_key(pem_path=ec_key_path), token_url="http://auth.ehr.test/token"
    )
    with pytest.raises(AuthError, match="token endpoint must be https"):
        auth.headers(FhirClient(BASE))
    assert not responses.calls
    loopback = SmartBackendAuth(
        "c1", load_signing_key(pem_path=ec_key_path), token_url="http://127.0.0.1:9/token"
    )
    responses.post("http://127.0.0.1:9/token", json={"access_token": "t", "expires_in": 60})
    local = FhirClient("http://127.0.0.1:9/fhir")
    assert loopback.headers(local) == {"Authorization": "Bearer t"}


@responses.activate
def test_a_token_answer_without_a_token_is_an_auth_error(ec_key_path: Path) -> None:
    responses.post(TOKEN_URL, json={"token_type": "bearer"})
    auth = SmartBackendAuth("c1", load_signing_key(pem_path=ec_key_path), token_url=TOKEN_URL)
    with pytest.raises(AuthError, match="did not issue a token"):
        auth.headers(FhirClient(BASE))
