"""Re-running a bulk screen or export against a real sekmet-fhir server: a completed export is
reused only with --reuse-export; otherwise a new export sees the data added in between."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.cli import main
from tests.conftest_server import SMALL_HOSPITAL
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(sekmet_factory: Callable[..., SekmetServer]) -> SekmetServer:
    """A server of its own: the tests add patients to it."""
    server = sekmet_factory()
    server.load_bundle(json.loads(SMALL_HOSPITAL.read_text()))
    return server


def _add_patient(server: SekmetServer, pid: str) -> None:
    server.load_resources([{"resourceType": "Patient", "id": pid, "gender": "female"}])


def _screen(
    capsys: pytest.CaptureFixture[str], server: SekmetServer, out: Path, *extra: str
) -> tuple[dict[str, Any], set[str], str]:
    code = main(
        ["screen", "--source", server.base_url, "--as-of", "2026-11-24", "--out", str(out), *extra]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    run = json.loads((out / "run.json").read_text())
    with (out / "patients.csv").open(newline="") as fh:
        patients = {row["patient_id"] for row in csv.DictReader(fh)}
    return run, patients, printed.out


@pytest.mark.parametrize("strategy", ["bulk", "auto"])
def test_a_rerun_exports_anew_unless_reuse_export_is_given(
    capsys: pytest.CaptureFixture[str], server: SekmetServer, tmp_path: Path, strategy: str
) -> None:
    # bulk: the same --out (snapshot inside it); auto -> bulk: new --out, the same --cache
    opts = ["--strategy", strategy, "--auto-threshold", "0"]
    cache = ["--cache", str(tmp_path / "cache")] if strategy == "auto" else []

    def out(n: int) -> Path:
        return tmp_path / ("out" if strategy == "bulk" else f"out{n}")

    run1, patients1, _ = _screen(capsys, server, out(1), *opts, *cache)
    assert run1["source"]["fetch"]["strategy"] == "bulk"
    _add_patient(server, "added-1")

    run2, patients2, printed2 = _screen(capsys, server, out(2), *opts, *cache)
    fetch2 = run2["source"]["fetch"]
    assert fetch2["reused"] is False and fetch2["export"]["requests"] > 0
    assert patients2 == patients1 | {"added-1"}  # the new export sees the new patient
    assert run2["data_cut"] == fetch2["data_cut"] == fetch2["export"]["transactionTime"]
    assert run2["data_cut"] != run1["data_cut"]
    assert f"data cut: {run2['data_cut']} (export transactionTime; a new export)" in printed2
    _add_patient(server, "added-2")

    run3, patients3, printed3 = _screen(capsys, server, out(3), *opts, *cache, "--reuse-export")
    fetch3 = run3["source"]["fetch"]
    assert fetch3["reused"] is True and fetch3["export"]["requests"] == 0
    assert patients3 == patients2  # the reused data cut, stated as such
    assert run3["data_cut"] == run2["data_cut"]
    assert f"data cut: {run2['data_cut']} (export transactionTime; a completed export reused" in (
        printed3
    )


def test_export_command_reuses_only_with_the_flag(
    capsys: pytest.CaptureFixture[str], server: SekmetServer, tmp_path: Path
) -> None:
    out = tmp_path / "export"

    def export(*extra: str) -> str:
        code = main(["export", "--source", server.base_url, "--out", str(out), *extra])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        return printed.out

    def kickoffs() -> int:
        log = (out / "export_log.ndjson").read_text().splitlines()
        return sum(json.loads(line)["eventId"] == "kickoff" for line in log)

    assert "new export" in export()
    _add_patient(server, "added-1")
    assert "new export" in export()
    assert kickoffs() == 2
    assert "reused, no request sent" in export("--reuse-export")
    assert kickoffs() == 2
