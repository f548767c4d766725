"""SMART Backend Services against a real server that enforces it."""

from __future__ import annotations

import pytest

from fhir_cohort.errors import AuthError
from fhir_cohort.fhir.auth import SmartBackendAuth, auth_from_env, load_signing_key
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.search import SearchQuery
from tests.conftest_server import SmartSetup

pytestmark = pytest.mark.integration


def _patients(client: FhirClient) -> set[str]:
    return {e.resource["id"] for e in client.iter_resources(SearchQuery("Patient"))}


def test_fresh_rs384_key_pair_gets_a_token_and_data(smart_server: SmartSetup) -> None:
    auth = SmartBackendAuth(
        smart_server.client_id, load_signing_key(pem_path=smart_server.private_key)
    )
    client = FhirClient(smart_server.server.base_url, auth=auth)
    assert len(_patients(client)) == 6
    assert auth.token_url == f"{smart_server.server.root_url}/auth/token"  # discovered
    assert auth.token_requests == 1  # the token is reused across requests


def test_jwks_file_and_es384_keys_work(smart_server: SmartSetup) -> None:
    jwks_auth = SmartBackendAuth(
        smart_server.client_id, load_signing_key(jwks_path=smart_server.jwks)
    )
    assert len(_patients(FhirClient(smart_server.server.base_url, auth=jwks_auth))) == 6
    ec_key = load_signing_key(pem_path=smart_server.es384_private_key)
    assert ec_key.alg == "ES384"
    ec_auth = SmartBackendAuth(smart_server.es384_client_id, ec_key, scope="system/*.rs")
    assert len(_patients(FhirClient(smart_server.server.base_url, auth=ec_auth))) == 6


def test_auth_from_env_configures_smart(smart_server: SmartSetup) -> None:
    env = {
        "FHIR_COHORT_CLIENT_ID": smart_server.client_id,
        "FHIR_COHORT_PRIVATE_KEY": str(smart_server.private_key),
    }
    auth = auth_from_env(env)
    assert isinstance(auth, SmartBackendAuth)
    assert len(_patients(FhirClient(smart_server.server.base_url, auth=auth))) == 6


def test_wrong_key_is_refused_with_a_clear_message(smart_server: SmartSetup) -> None:
    auth = SmartBackendAuth(
        smart_server.client_id, load_signing_key(pem_path=smart_server.wrong_key)
    )
    with pytest.raises(AuthError) as err:
        _patients(FhirClient(smart_server.server.base_url, auth=auth))
    msg = str(err.value)
    assert "token endpoint refused client 'fhir-cohort-test'" in msg
    assert "verification failed" in msg  # the server's own reason
    assert err.value.status == 401
    assert "eyJ" not in msg  # no JWT (assertion or token) in the message


def test_unknown_client_and_missing_auth_are_refused(smart_server: SmartSetup) -> None:
    auth = SmartBackendAuth("nobody", load_signing_key(pem_path=smart_server.private_key))
    with pytest.raises(AuthError, match="Unknown client_id"):
        _patients(FhirClient(smart_server.server.base_url, auth=auth))
    with pytest.raises(AuthError) as err:
        _patients(FhirClient(smart_server.server.base_url))
    assert err.value.status == 401


def test_token_is_refreshed_before_it_expires(smart_server: SmartSetup) -> None:
    now = [1_000_000.0]
    auth = SmartBackendAuth(
        smart_server.client_id,
        load_signing_key(pem_path=smart_server.private_key),
        clock=lambda: now[0],
    )
    client = FhirClient(smart_server.server.base_url, auth=auth)
    _patients(client)
    _patients(client)
    assert auth.token_requests == 1
    now[0] += 3600 - 30  # inside the refresh margin of a 3600 s token
    assert len(_patients(client)) == 6
    assert auth.token_requests == 2
