"""Auth end to end through the CLI: every auth failure exits 6, credentials that work screen
(issue 9 items 15 and 18), plain-http credentials exit 2 (item 8).

The console script's ``main`` in-process (same code, without ~5 s of start-up each): through
tests/cli_main.py (exit code, stdout, stderr as the script gives them) for the basic-auth
screens and the plain-http refusal, directly for the other failure paths.
Real servers (sekmet-fhir) wherever a server does it on demand; ``responses`` only for a 403
on a Bulk status or file URL after an accepted kick-off, which no real server gives on demand.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import responses

from fhir_cohort.cli import EXIT_AUTH, EXIT_OK, EXIT_USAGE, main
from tests.cli_main import run_main
from tests.conftest_server import SMALL_HOSPITAL, SmartSetup
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

AS_OF = "2026-11-24"
USERS = {"screener": "correct horse battery staple"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")}
    return run_main(args, env={**clean, **env})


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[int, str]]]:
    """``main`` in-process with exactly ``env``'s FHIR_COHORT_* variables: (exit code, stderr)."""
    root = logging.getLogger()
    saved = root.level, [list(h.filters) for h in root.handlers]

    def call(env: dict[str, str], *args: str) -> tuple[int, str]:
        for name in [k for k in os.environ if k.startswith("FHIR_COHORT_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main([*args])
        return code, capsys.readouterr().err

    yield call
    root.setLevel(saved[0])  # main() configured logging for the process: undo it
    for handler, filters in zip(root.handlers, saved[1], strict=False):
        handler.filters = filters


def _no_traceback_no_secret(res: subprocess.CompletedProcess[str], *secrets: str) -> None:
    assert res.stderr.startswith("fhir-cohort: error:"), res.stderr
    assert "Traceback" not in res.stderr
    for secret in secrets:
        assert secret not in res.stdout + res.stderr


@pytest.fixture(scope="module")
def basic_server(sekmet_factory: Callable[..., SekmetServer]) -> SekmetServer:
    server = sekmet_factory(auth_types=("basic",), users=USERS)
    server.load_bundle(json.loads(SMALL_HOSPITAL.read_text()))
    return server


# -- item 18: HTTP basic against the real server ------------------------------------------------


def test_basic_auth_with_the_right_credentials_screens(
    basic_server: SekmetServer, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text(USERS["screener"])
    env = {"FHIR_COHORT_BASIC_USER": "screener", "FHIR_COHORT_BASIC_PASSWORD_FILE": str(password)}
    out = tmp_path / "out"
    res = run(env, "screen", "--source", basic_server.base_url, "--as-of", AS_OF, "--out", str(out))
    assert res.returncode == EXIT_OK, res.stderr
    patients = pd.read_csv(out / "patients.csv", dtype=str)
    assert len(patients) > 0 and set(patients["patient_id"]) <= {f"srv-p{i}" for i in range(1, 7)}
    assert USERS["screener"] not in res.stdout + res.stderr


@pytest.mark.parametrize(
    "user,password",
    [("screener", "wrong password"), ("nobody", USERS["screener"])],
)
def test_basic_auth_with_wrong_credentials_exits_6(
    basic_server: SekmetServer, tmp_path: Path, user: str, password: str
) -> None:
    env = {"FHIR_COHORT_BASIC_USER": user, "FHIR_COHORT_BASIC_PASSWORD": password}
    res = run(env, "screen", "--source", basic_server.base_url, "--out", str(tmp_path / "o"))
    assert res.returncode == EXIT_AUTH, res.stderr
    assert "authentication failed" in res.stderr and "HTTP 401" in res.stderr
    _no_traceback_no_secret(res, *(p for p in [password] if p))


def test_no_credentials_against_a_basic_server_exits_6(
    basic_server: SekmetServer, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    code, _ = cli({}, "screen", "--source", basic_server.base_url, "--out", str(tmp_path / "o"))
    assert code == EXIT_AUTH


# -- item 15: every auth failure path exits 6 ---------------------------------------------------


def test_a_refused_bearer_token_exits_6_after_one_reauthentication(
    basic_server: SekmetServer, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    env = {"FHIR_COHORT_TOKEN": "not-a-valid-token"}
    code, err = cli(env, "screen", "--source", basic_server.base_url, "--out", str(tmp_path / "o"))
    assert code == EXIT_AUTH, err
    assert "HTTP 401" in err and "not-a-valid-token" not in err


def _smart_env(smart: SmartSetup, **overrides: str) -> dict[str, str]:
    env = {
        "FHIR_COHORT_CLIENT_ID": smart.client_id,
        "FHIR_COHORT_PRIVATE_KEY": str(smart.private_key),
    }
    return {k: v for k, v in {**env, **overrides}.items() if v}


@pytest.mark.parametrize(
    "case",
    [
        "token-401-wrong-key",
        "token-400-bad-scope",
        "token-401-unknown-client",
        "bad-key-file",
        "missing-key-file",
        "missing-client-id",
        "403-bulk-kickoff",
    ],
)
def test_smart_failures_exit_6(
    smart_server: SmartSetup, tmp_path: Path, case: str, cli: Callable[..., tuple[int, str]]
) -> None:
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    env = {
        "token-401-wrong-key": _smart_env(
            smart_server, FHIR_COHORT_PRIVATE_KEY=str(smart_server.wrong_key)
        ),
        "token-400-bad-scope": _smart_env(smart_server, FHIR_COHORT_SCOPE="system/Nothing.x"),
        "token-401-unknown-client": _smart_env(smart_server, FHIR_COHORT_CLIENT_ID="nobody"),
        "bad-key-file": _smart_env(smart_server, FHIR_COHORT_PRIVATE_KEY=str(bad_key)),
        "missing-key-file": _smart_env(
            smart_server, FHIR_COHORT_PRIVATE_KEY=str(tmp_path / "missing.pem")
        ),
        "missing-client-id": _smart_env(smart_server, FHIR_COHORT_CLIENT_ID=""),
        # a token whose scopes cover Patients only: the system $export kick-off is forbidden
        "403-bulk-kickoff": _smart_env(smart_server, FHIR_COHORT_SCOPE="system/Patient.read"),
    }[case]
    args = ["--source", smart_server.server.base_url, "--out", str(tmp_path / "o")]
    if case == "missing-client-id":
        args += ["--auth", "smart"]
    command = "export" if case == "403-bulk-kickoff" else "screen"
    code, err = cli(env, command, *args, "-q")
    assert code == EXIT_AUTH, err
    assert err.startswith("fhir-cohort: error:") and "BEGIN" not in err and "eyJ" not in err
    if case == "403-bulk-kickoff":
        assert "$export kick-off" in err and "HTTP 403" in err


# -- item 8: plain http with credentials ---------------------------------------------------------


def test_credentials_over_plain_http_to_a_remote_host_exit_2(tmp_path: Path) -> None:
    # refused before anything is sent: no server needed
    env = {"FHIR_COHORT_TOKEN": "tok-secret"}
    res = run(env, "screen", "--source", "http://ehr.example.org/fhir", "--out", str(tmp_path))
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "--allow-insecure-http" in res.stderr
    _no_traceback_no_secret(res, "tok-secret")


# -- 403 on a Bulk status or file URL: mocked (no real server does it on demand) ---------------

BASE = "https://ehr.test/fhir"
STATUS = f"{BASE}/bulk-status/job-1"


@pytest.mark.parametrize("where", ["status", "file"])
def test_403_on_a_bulk_status_or_file_exits_6(
    where: str, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    manifest = {
        "transactionTime": "2026-11-24T00:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": f"{BASE}/bulk-files/job-1/Patient.ndjson"}],
        "error": [],
    }
    forbidden = {
        "status": 403,
        "json": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "forbidden"}],
        },
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
        if where == "status":
            mock.get(STATUS, **forbidden)
        else:
            mock.get(STATUS, json=manifest)
            mock.get(manifest["output"][0]["url"], **forbidden)  # type: ignore[index]
        env = {"FHIR_COHORT_TOKEN": "tok-secret"}
        code, err = cli(env, "export", "--source", BASE, "--out", str(tmp_path / "export"), "-q")
    assert code == EXIT_AUTH, err
    assert "HTTP 403" in err and "tok-secret" not in err
