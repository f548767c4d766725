"""Pytest fixtures around a real sekmet-fhir server (see tests/server/sekmet.py).

Fixtures (all start the server lazily, only when a test asks for them):

- ``sekmet_factory`` (session): ``sekmet_factory(**SekmetServer kwargs) -> SekmetServer`` starts a
  new, empty server with its own data dir; every server it started is stopped at session end.
  Use it for tests that write data they must not share.
- ``sekmet_server`` (session): one shared, empty, auth-free server.
- ``small_hospital_server`` (session): ``sekmet_server`` loaded with
  ``tests/data/fhir_server/small_hospital.json``; treat it as read-only.
- ``smart_server`` (session): a server that enforces SMART Backend Services, with a client
  registered for a freshly generated RS384 key (``SmartSetup``: server, client_id, key paths).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jwt.algorithms import RSAAlgorithm

from tests.server.sekmet import SekmetServer, generate_key_pair, public_jwk, write_private_pem

DATA_DIR = Path(__file__).parent / "data" / "fhir_server"
SMALL_HOSPITAL = DATA_DIR / "small_hospital.json"


@pytest.fixture(scope="session")
def sekmet_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SekmetServer]]:
    started: list[SekmetServer] = []

    def start(**kwargs: Any) -> SekmetServer:
        server = SekmetServer(tmp_path_factory.mktemp("sekmet"), **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def sekmet_server(sekmet_factory: Callable[..., SekmetServer]) -> SekmetServer:
    return sekmet_factory()


@pytest.fixture(scope="session")
def small_hospital_server(sekmet_server: SekmetServer) -> SekmetServer:
    sekmet_server.load_bundle(json.loads(SMALL_HOSPITAL.read_text()))
    return sekmet_server


@dataclass(frozen=True)
class SmartSetup:
    server: SekmetServer
    client_id: str
    private_key: Path  # PEM of the registered RS384 key
    jwks: Path  # the same key as a private JWK set
    es384_client_id: str
    es384_private_key: Path  # PEM of a registered P-384 key
    wrong_key: Path  # a PEM key the server does not know


@pytest.fixture(scope="session")
def smart_server(
    sekmet_factory: Callable[..., SekmetServer], tmp_path_factory: pytest.TempPathFactory
) -> SmartSetup:
    keys = tmp_path_factory.mktemp("smart-keys")
    rsa_key = generate_key_pair("RS384")
    ec_key = generate_key_pair("ES384")
    wrong = generate_key_pair("RS384")
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key)) | {"alg": "RS384", "kid": "rsa-1"}
    jwks_path = keys / "client.jwks.json"
    jwks_path.write_text(json.dumps({"keys": [private_jwk]}))
    server = sekmet_factory(
        auth_types=("smart",),
        smart_clients=[
            {
                "client_id": "fhir-cohort-test",
                "jwks": {"keys": [public_jwk(rsa_key, "RS384", "rsa-1")]},
                "scopes": "system/*.read",
            },
            {
                "client_id": "fhir-cohort-test-ec",
                "jwks": {"keys": [public_jwk(ec_key, "ES384", "ec-1")]},
                "scopes": "system/*.rs",
            },
        ],
    )
    server.load_bundle(json.loads(SMALL_HOSPITAL.read_text()))
    return SmartSetup(
        server=server,
        client_id="fhir-cohort-test",
        private_key=write_private_pem(rsa_key, keys / "client.pem"),
        jwks=jwks_path,
        es384_client_id="fhir-cohort-test-ec",
        es384_private_key=write_private_pem(ec_key, keys / "client-ec.pem"),
        wrong_key=write_private_pem(wrong, keys / "wrong.pem"),
    )
