"""Bulk ``$export`` against a real sekmet-fhir server: the folder reads as an on-disk source."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.cli import EXIT_OK, main
from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.auth import SmartBackendAuth, load_signing_key
from fhir_cohort.fhir.bulk import (
    LOG_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    BulkExportRequest,
    ExportResult,
    run_export,
)
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.progress import Progress
from tests.conftest_server import SMALL_HOSPITAL, SmartSetup
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

SLE_FILTER = (
    "Condition?code=http://snomed.info/sct|55464009,http://hl7.org/fhir/sid/icd-10-cm|M32.14"
)


# A Group (an EHR's registry) of two of the small hospital's six patients.
GROUP = {
    "resourceType": "Group",
    "id": "registry-1",
    "type": "person",
    "actual": True,
    "member": [{"entity": {"reference": f"Patient/srv-p{i}"}} for i in (1, 3)],
}


def _loaded() -> list[dict[str, Any]]:
    bundle = json.loads(SMALL_HOSPITAL.read_text())
    return [e["resource"] for e in bundle["entry"]] + [GROUP]


def _keys(resources: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["resourceType"], r["id"]) for r in resources}


@pytest.fixture(scope="module")
def bulk_server(sekmet_factory: Callable[..., SekmetServer]) -> SekmetServer:
    """A server of our own holding exactly the small hospital (system exports see it all)."""
    server = sekmet_factory()
    server.load_resources(_loaded())
    return server


def _read(folder: Path) -> set[tuple[str, str]]:
    errors: list[MalformedResourceError] = []
    found = {
        (res["resourceType"], res["id"])
        for res, _ in open_source(folder).iter_resources(on_error=errors.append)
    }
    assert errors == []  # bookkeeping files (state, log, manifest, errors/) are not read as data
    return found


def _export(client: FhirClient, request: BulkExportRequest, out: Path, **kw: Any) -> ExportResult:
    return run_export(client, request, out, poll_cap_seconds=0.2, deadline_seconds=60, **kw)


def test_system_export_holds_every_loaded_resource(
    bulk_server: SekmetServer, tmp_path: Path
) -> None:
    events: list[Progress] = []
    result = _export(
        FhirClient(bulk_server.base_url), BulkExportRequest(), tmp_path, progress=events.append
    )
    assert _read(tmp_path) == _keys(_loaded())
    assert all(f.path.name.endswith(".ndjson.gz") for f in result.files)
    assert sum(f.lines for f in result.files) == len(_loaded())
    assert result.transaction_time
    assert result.errors.files == 0
    assert {e.step for e in events} >= {"kickoff", "downloading", "complete"}
    log_events = [
        json.loads(line)["eventId"] for line in (tmp_path / LOG_FILE).read_text().splitlines()
    ]
    assert log_events[0] == "kickoff" and log_events[-1] == "export_complete"
    assert "status_complete" in log_events and "download_complete" in log_events
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert {o["type"] for o in manifest["output"]} == {t for t, _ in _keys(_loaded())}


def test_patient_export_holds_the_patient_compartments(
    bulk_server: SekmetServer, tmp_path: Path
) -> None:
    _export(FhirClient(bulk_server.base_url), BulkExportRequest(level="patient"), tmp_path)
    # Medication resources belong to no patient compartment; everything else does here (a
    # Group through its members, as in R4's Patient CompartmentDefinition).
    expected = {k for k in _keys(_loaded()) if k[0] != "Medication"}
    assert _read(tmp_path) == expected


def test_type_filter_keeps_only_matching_resources(
    bulk_server: SekmetServer, tmp_path: Path
) -> None:
    request = BulkExportRequest(
        level="patient", types=("Patient", "Condition"), type_filters=(SLE_FILTER,)
    )
    result = _export(FhirClient(bulk_server.base_url), request, tmp_path)
    wanted = {
        ("http://snomed.info/sct", "55464009"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "M32.14"),
    }
    expected_conditions = {
        ("Condition", r["id"])
        for r in _loaded()
        if r["resourceType"] == "Condition"
        and any((c["system"], c["code"]) in wanted for c in r["code"]["coding"])
    }
    patients = {k for k in _keys(_loaded()) if k[0] == "Patient"}
    assert len(expected_conditions) == 3  # both codes of the OR matched (comma kept in one filter)
    assert _read(tmp_path) == patients | expected_conditions
    assert result.resources_by_type() == {"Condition": 3, "Patient": len(patients)}


def test_unsupported_elements_come_back_as_a_summarised_error_file(
    bulk_server: SekmetServer, tmp_path: Path
) -> None:
    request = BulkExportRequest(types=("Patient",), elements=("id", "gender"))
    result = _export(FhirClient(bulk_server.base_url), request, tmp_path)
    # sekmet ignores _elements and says so in an OperationOutcome error file
    assert result.errors.files == 1
    assert result.errors.by_severity == {"warning": 1}
    assert result.errors.by_code == {"not-supported": 1}
    assert result.error_files[0].parent.name == "errors"
    assert _read(tmp_path) == {k for k in _keys(_loaded()) if k[0] == "Patient"}


def test_smart_protected_export_downloads_with_the_token(
    smart_server: SmartSetup, tmp_path: Path
) -> None:
    auth = SmartBackendAuth(
        smart_server.client_id, load_signing_key(pem_path=smart_server.private_key)
    )
    client = FhirClient(smart_server.server.base_url, auth=auth)
    request = BulkExportRequest(types=("Patient", "Condition"))
    _export(client, request, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["requiresAccessToken"] is True
    expected = {k for k in _keys(_loaded()) if k[0] in ("Patient", "Condition")}
    assert _read(tmp_path) == expected


def test_group_export_from_the_cli_holds_the_members_compartments_only(
    bulk_server: SekmetServer, tmp_path: Path
) -> None:
    """The EHR path (Epic, Oracle Health: Group-level only), end to end through ``main``."""
    out = tmp_path / "export"
    argv = ["export", "--source", bulk_server.base_url, "--out", str(out), "-q"]
    argv += ["--level", "group", "--group", GROUP["id"], "--no-type-filter", "--poll-max", "0.2"]
    assert main(argv) == EXIT_OK
    members = {"Patient/srv-p1", "Patient/srv-p3"}
    expected = {
        (r["resourceType"], r["id"])
        for r in _loaded()
        if (f"Patient/{r['id']}" in members and r["resourceType"] == "Patient")
        or (r.get("subject") or r.get("patient") or {}).get("reference") in members
    }
    assert {t for t, _ in expected} >= {"Patient", "Condition", "Observation", "Procedure"}
    assert _read(out) == expected
    state = json.loads((out / STATE_FILE).read_text())
    assert state["kickoffs"] == 1 and state["kickoff_url"].endswith("/Group/registry-1/$export")
