"""Funnel plan values and failure paths of fetch_snapshot (mocked server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import responses

from fhir_cohort.errors import CapabilityError, FhirHttpError, SourceError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.fetch import EntrySearch, FetchPlan, FollowUp, fetch_snapshot, read_state

BASE = "https://ehr.test/fhir"
SLE = "http://snomed.info/sct|55464009"


def _cap(types: dict[str, list[str]]) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": t, "searchParam": [{"name": p} for p in ps], "searchInclude": ["*"]}
                    for t, ps in types.items()
                ],
            }
        ],
    }


def test_plan_accepts_triples_and_lists_its_needs() -> None:
    plan = FetchPlan(
        entry=(("Condition", "code", [SLE, SLE]),),  # type: ignore[arg-type]
        follow_ups=(
            FollowUp("Patient", patient_param="_id"),
            FollowUp("Observation", codes=("l|1",)),
        ),
    )
    assert plan.entry == (EntrySearch("Condition", "code", (SLE,)),)
    assert plan.needs() == {
        "Condition": {"code"},
        "Patient": {"_id"},
        "Observation": {"patient", "code"},
    }
    assert "_lastUpdated" in plan.needs(since=True)["Observation"]
    std = FetchPlan.standard([SLE])
    assert "Medication" in std.needs()
    assert std.fingerprint() == FetchPlan.standard([SLE]).fingerprint()
    assert std.fingerprint() != FetchPlan.standard([SLE], observation_codes=["l|1"]).fingerprint()
    with pytest.raises(ValueError):
        FetchPlan(entry=(), follow_ups=())


@responses.activate
def test_missing_capabilities_fail_before_any_search(tmp_path: Path) -> None:
    responses.get(f"{BASE}/metadata", json=_cap({"Condition": ["code"], "Patient": []}))
    with pytest.raises(CapabilityError) as err:
        fetch_snapshot(FhirClient(BASE), FetchPlan.standard([SLE]), tmp_path)
    msg = str(err.value)
    assert "MedicationRequest is not searchable" in msg and "Condition.patient" in msg
    assert len(responses.calls) == 1
    assert read_state(tmp_path) is None


@responses.activate
def test_since_needs_a_complete_snapshot(tmp_path: Path) -> None:
    plan = FetchPlan(entry=(("Condition", "code", (SLE,)),), follow_ups=())
    responses.get(f"{BASE}/metadata", json=_cap({"Condition": ["code"]}))
    with pytest.raises(SourceError, match="needs a complete earlier snapshot"):
        fetch_snapshot(FhirClient(BASE), plan, tmp_path, since=datetime(2024, 1, 1, tzinfo=UTC))


@responses.activate
def test_a_failing_query_keeps_the_journal_for_resume(tmp_path: Path) -> None:
    plan = FetchPlan(
        entry=(("Condition", "code", (SLE,)),),
        follow_ups=(FollowUp("Condition"),),
    )
    responses.get(f"{BASE}/metadata", json=_cap({"Condition": ["code", "patient"]}))
    hit = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/p1"},
                },
                "search": {"mode": "match"},
            }
        ],
    }
    responses.get(
        f"{BASE}/Condition",
        json=hit,
        match=[responses.matchers.query_param_matcher({"code": SLE}, strict_match=False)],
    )
    responses.get(
        f"{BASE}/Condition",
        status=500,
        match=[responses.matchers.query_param_matcher({"patient": "p1"}, strict_match=False)],
    )
    client = FhirClient(BASE, max_retries=1, sleep=lambda s: None)
    with pytest.raises(FhirHttpError, match="giving up"):
        fetch_snapshot(client, plan, tmp_path)
    state = read_state(tmp_path)
    assert state is not None and state["status"] == "in_progress" and len(state["completed"]) == 1
    assert not list(tmp_path.glob("*.ndjson"))  # the snapshot is only written when complete
