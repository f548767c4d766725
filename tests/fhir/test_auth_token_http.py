"""SMART auth against a fake ``TokenHttp``: auth needs no FhirClient, only the two requests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.errors import AuthError, FhirHttpError
from fhir_cohort.fhir.auth import SmartBackendAuth, load_signing_key
from tests.server.sekmet import generate_key_pair, write_private_pem

TOKEN_URL = "https://auth.ehr.test/token"


class FakeHttp:
    """Records what the auth asks for; answers from a script."""

    allow_insecure_http = False

    def __init__(self, replies: list[tuple[int, dict[str, Any]]]) -> None:
        self.replies = replies
        self.forms: list[Mapping[str, str]] = []
        self.gets: list[str] = []

    def get_json(
        self, path: str, params: Any = None, *, accept: str | None = None, authenticate: bool = True
    ) -> dict[str, Any]:
        assert authenticate is False  # discovery never carries credentials
        self.gets.append(path)
        if path == ".well-known/smart-configuration":
            return {"token_endpoint": TOKEN_URL}
        raise FhirHttpError("not found", status=404)

    def post_form(
        self, url: str, form: Callable[[], Mapping[str, str]]
    ) -> tuple[int, dict[str, Any], str]:
        self.forms.append(form())
        status, body = self.replies.pop(0)
        return status, body, url


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_private_pem(generate_key_pair("ES384"), tmp_path_factory.mktemp("k") / "ec.pem")


def test_token_is_fetched_cached_and_refreshed_after_invalidate(key_path: Path) -> None:
    http = FakeHttp([(200, {"access_token": "t1"}), (200, {"access_token": "t2"})])
    auth = SmartBackendAuth("c1", load_signing_key(pem_path=key_path))
    assert auth.headers(http) == {"Authorization": "Bearer t1"}
    assert auth.headers(http) == {"Authorization": "Bearer t1"}  # cached
    auth.invalidate()
    assert auth.headers(http) == {"Authorization": "Bearer t2"}
    assert http.gets == [".well-known/smart-configuration"]  # discovered once
    assert [f["grant_type"] for f in http.forms] == ["client_credentials"] * 2
    assert http.forms[0]["client_assertion"] != http.forms[1]["client_assertion"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ((400, {"error": "invalid_client"}), "invalid_client"),
        ((200, {"token_type": "bearer"}), "did not issue a token"),
    ],
)
def test_a_refusal_is_an_auth_error(key_path: Path, reply: Any, message: str) -> None:
    auth = SmartBackendAuth("c1", load_signing_key(pem_path=key_path), token_url=TOKEN_URL)
    with pytest.raises(AuthError, match=message):
        auth.headers(FakeHttp([reply]))
