"""The funnel fetch against a real server: snapshot contents, resume, ``since`` re-fetch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.fetch import (
    MEDICATION_TYPES,
    STATE_FILE,
    FetchPlan,
    fetch_snapshot,
    read_state,
)
from fhir_cohort.progress import Progress
from tests.conftest_server import SMALL_HOSPITAL
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ENTRY = (f"{SCT}|55464009", f"{ICD}|M32.14", f"{ICD}|M32.9")
OBS = (f"{LOINC}|5130-0", f"{LOINC}|82810-3")
PROC = (f"{SCT}|36969009",)


def _plan(**kw: Any) -> FetchPlan:
    return FetchPlan.standard(ENTRY, observation_codes=OBS, procedure_codes=PROC, **kw)


def _tokens(resource: Mapping[str, Any]) -> set[str]:
    return {
        f"{c.get('system')}|{c.get('code')}" for c in resource.get("code", {}).get("coding", [])
    }


def expected_snapshot(resources: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Oracle: what the funnel must fetch, computed directly from the loaded resources."""
    res = list(resources)
    subject = {
        (r["resourceType"], r["id"]): r.get("subject", {}).get("reference", "").split("/")[-1]
        for r in res
    }
    cohort = {
        subject[(r["resourceType"], r["id"])]
        for r in res
        if r["resourceType"] == "Condition" and _tokens(r) & set(ENTRY)
    }
    out: dict[str, set[str]] = {}
    for r in res:
        rtype, rid = r["resourceType"], r["id"]
        keep = False
        if rtype == "Patient":
            keep = rid in cohort
        elif rtype in ("Condition", *MEDICATION_TYPES):
            keep = subject[(rtype, rid)] in cohort
        elif rtype == "Observation":
            keep = subject[(rtype, rid)] in cohort and bool(_tokens(r) & set(OBS))
        elif rtype == "Procedure":
            keep = subject[(rtype, rid)] in cohort and bool(_tokens(r) & set(PROC))
        if keep:
            out.setdefault(rtype, set()).add(rid)
    meds = {
        r["medicationReference"]["reference"].split("/")[-1]
        for r in res
        if r["resourceType"] in MEDICATION_TYPES
        and subject[(r["resourceType"], r["id"])] in cohort
        and "medicationReference" in r
    }
    if meds:
        out["Medication"] = meds
    return out


def _hospital() -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(SMALL_HOSPITAL.read_text())["entry"]]


def _on_disk(directory: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted(directory.glob("*.ndjson")):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        out[path.name.removesuffix(".ndjson")] = lines
    return out


def _ids(snapshot: Mapping[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {t: {r["id"] for r in rs} for t, rs in snapshot.items()}


def test_funnel_fetches_exactly_the_cohort(
    small_hospital_server: SekmetServer, tmp_path: Path
) -> None:
    client = FhirClient(small_hospital_server.base_url)
    events: list[Progress] = []
    report = fetch_snapshot(
        client, _plan(), tmp_path, batch_size=2, workers=3, progress=events.append
    )
    snap = _on_disk(tmp_path)
    assert _ids(snap) == expected_snapshot(_hospital())
    for rtype, rows in snap.items():
        assert len(rows) == len({r["id"] for r in rows}), f"{rtype} has duplicates"
        assert all(r["resourceType"] == rtype for r in rows)
    assert report.patients == 4
    assert report.resources == {t: len(rs) for t, rs in snap.items()}
    assert report.requests == client.stats.requests
    assert report.bytes_received > 0
    # queries are reported without patient ids
    text = json.dumps(report.to_dict())
    assert "srv-p" not in text and "<2 ids>" in text
    assert events[-1].step == "write" and events[-1].done == 1
    state = read_state(tmp_path)
    assert state is not None and state["status"] == "complete"
    assert not (tmp_path / ".fetch_partial").exists()


def test_medications_are_read_when_not_included(
    small_hospital_server: SekmetServer, tmp_path: Path
) -> None:
    client = FhirClient(small_hospital_server.base_url)
    report = fetch_snapshot(client, _plan(medication_include=False), tmp_path, batch_size=3)
    assert _ids(_on_disk(tmp_path)) == expected_snapshot(_hospital())
    med_queries = [q for q in report.queries if q["stage"] == "medications"]
    assert med_queries and all(q["query"].startswith("Medication?_id=<") for q in med_queries)


def test_interrupted_fetch_resumes_without_refetching(
    small_hospital_server: SekmetServer, tmp_path: Path
) -> None:
    class Stop(Exception):
        pass

    def interrupt(event: Progress) -> None:
        if event.step == "follow-up" and event.done == 5:
            raise Stop

    first = FhirClient(small_hospital_server.base_url)
    with pytest.raises(Stop):
        fetch_snapshot(first, _plan(), tmp_path, batch_size=2, workers=2, progress=interrupt)
    state = read_state(tmp_path)
    assert state is not None and state["status"] == "in_progress"
    journaled = len(state["completed"])
    assert journaled >= 5 + 1  # entry query + 5 follow-ups

    second = FhirClient(small_hospital_server.base_url)
    sent: list[str] = []
    second.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.url))
    report = fetch_snapshot(second, _plan(), tmp_path, batch_size=2, workers=2)
    assert report.resumed_queries == journaled
    fresh = [q for q in report.queries if not q["resumed"]]
    # one request per query not yet done (each fits one page) plus the CapabilityStatement
    assert report.requests == len(fresh) + 1 == len(sent)
    assert _ids(_on_disk(tmp_path)) == expected_snapshot(_hospital())


def _put(server: SekmetServer, resources: list[dict[str, Any]]) -> None:
    server.load_resources(resources)


def test_since_merges_changes_and_fetches_new_patients_in_full(
    sekmet_factory: Callable[..., SekmetServer], tmp_path: Path
) -> None:
    server = sekmet_factory()
    hospital = _hospital()
    server.load_resources(hospital)
    client = FhirClient(server.base_url)
    fetch_snapshot(client, _plan(), tmp_path, batch_size=2)
    before = _on_disk(tmp_path)

    since = datetime.now(UTC)
    time.sleep(1.1)  # _lastUpdated=gt is compared at second precision
    by_key = {(r["resourceType"], r["id"]): r for r in hospital}
    changed_obs = dict(
        by_key[("Observation", "srv-o1")], valueQuantity={"value": 999, "unit": "[IU]/mL"}
    )
    new_sle = {
        "resourceType": "Condition",
        "id": "srv-c6-sle",
        "code": {"coding": [{"system": SCT, "code": "55464009"}]},
        "subject": {"reference": "Patient/srv-p6"},
    }
    outsider_obs = dict(by_key[("Observation", "srv-o5")], id="srv-o5-new")
    _put(server, [changed_obs, new_sle, outsider_obs])
    updated = [*[r for r in hospital if r["id"] != "srv-o1"], changed_obs, new_sle, outsider_obs]

    report = fetch_snapshot(
        FhirClient(server.base_url), _plan(), tmp_path, batch_size=2, since=since
    )
    after = _on_disk(tmp_path)
    assert _ids(after) == expected_snapshot(updated)
    assert report.since is not None and report.new_patients == 1 and report.patients == 5
    obs = {r["id"]: r for r in after["Observation"]}
    assert obs["srv-o1"]["valueQuantity"]["value"] == 999  # replaced by id
    # unchanged resources of the old cohort were not fetched again, only kept
    assert report.fetched.get("MedicationRequest", 0) == 0
    assert {r["id"] for r in before["MedicationRequest"]} <= {
        r["id"] for r in after["MedicationRequest"]
    }
    assert (tmp_path / STATE_FILE).exists()
