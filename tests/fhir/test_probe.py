"""The probe finds each restriction a server enforces (tests/fhir/fake_ehr.py), in a bounded
number of requests; one probe runs against the real test server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses

from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.probe import MAX_PROBE_REQUESTS, probe
from tests.fhir.fake_ehr import BASE, TYPES, FakeServer, serve
from tests.server.sekmet import SekmetServer


def _probe(server: FakeServer, **kwargs: Any) -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve(mock, server)
        client = FhirClient(BASE, sleep=lambda s: None)
        profile = probe(client, **kwargs)
    assert profile.requests == len(server.seen) <= MAX_PROBE_REQUESTS + 1
    assert "secret" not in json.dumps(profile.to_json())  # no diagnostics text, no ids
    assert "p1" not in json.dumps(profile.to_json())
    return profile


def test_a_plain_server_allows_everything() -> None:
    profile = _probe(FakeServer())
    assert profile.population_search.value is True
    assert all(profile.code(t).value == "honoured" for t in TYPES)
    assert profile.multi_patient.value is True
    # 210 rows fit in a page of 1000: no cap seen, none claimed
    assert profile.max_count.value is None and profile.page_size(1000) == 1000
    assert any("no cap seen" in note for note in profile.notes)
    assert profile.include_medication.value is True
    assert profile.last_updated.value is True
    assert profile.bulk_levels.value == frozenset({"system"})
    assert profile.vendor is None


def test_epic_like_patient_required_is_found_and_explained() -> None:
    profile = _probe(FakeServer(software="Epic", patient_required=True, patient_search=False))
    fact = profile.population_search
    assert fact.value is False and fact.origin == "probe"
    assert "HTTP 400" in fact.source and "4111" in fact.source
    assert profile.vendor == "epic"  # recognised from software.name; its file fills the rest
    assert profile.multi_patient.origin == "vendor" and profile.multi_patient.value is False
    assert profile.code("Condition").value == "post-filter"
    assert profile.requests <= 4  # nothing to probe patient-scoped without a patient


def test_epic_like_with_a_patient_probes_the_patient_scoped_limits() -> None:
    server = FakeServer(
        software="Epic",
        patient_required=True,
        patient_search=False,
        one_patient=True,
        last_updated="rejected",
        export=("group",),
    )
    profile = _probe(server, patient="p1")
    assert profile.patient_scoped
    assert profile.multi_patient.origin == "probe" and profile.multi_patient.value is False
    assert "4112" in profile.multi_patient.source
    assert profile.last_updated.value is False and profile.last_updated.origin == "probe"
    assert profile.code("Condition").value == "honoured"  # with patient, the filter works
    assert profile.bulk_levels.value == frozenset({"group"})


def test_oracle_like_no_code_parameter_and_count_cap() -> None:
    server = FakeServer(
        software="Cerner Millennium",
        patient_required=True,
        code={"Condition": "rejected", "MedicationRequest": "rejected"},
        max_count=200,
        count_error=True,
        include=False,
    )
    profile = _probe(server)  # Patient?_count=1 gives the patient to probe with
    assert profile.vendor == "oracle-health"
    assert profile.code("Condition").value == "rejected"
    assert profile.code("Condition").origin == "probe"
    assert profile.code("MedicationRequest").value == "rejected"
    assert profile.code("Observation").value == "honoured"
    assert not profile.sends_code("Condition") and profile.sends_code("Observation")
    assert profile.max_count.value == 200 and "invalid-count" in profile.max_count.source
    assert profile.include_medication.value is False


@pytest.mark.parametrize("how", ["ignored", "rejected"])
def test_a_code_the_server_does_not_filter_by(how: str) -> None:
    profile = _probe(FakeServer(code=dict.fromkeys(TYPES, how)))
    for rtype in TYPES:
        assert profile.code(rtype).value == how and not profile.sends_code(rtype)


def test_a_count_cap_that_cuts_the_page() -> None:
    profile = _probe(FakeServer(max_count=100))
    assert profile.max_count.value == 100 and profile.page_size(1000) == 100
    assert profile.max_count.note == "the page was cut"


def test_a_documented_cap_stands_when_the_probe_sees_none() -> None:
    # Oracle-like, but the patient's few rows fit any page: the documentation's 200 stays
    server = FakeServer(software="Cerner Millennium", patient_required=True)
    profile = _probe(server, patient="p1")
    assert profile.max_count.value == 200 and profile.max_count.origin == "vendor"


@pytest.mark.parametrize("how", ["ignored", "rejected"])
def test_no_last_updated(how: str) -> None:
    profile = _probe(FakeServer(last_updated=how))
    assert profile.last_updated.value is False


def test_one_patient_per_request_on_a_population_server() -> None:
    profile = _probe(FakeServer(one_patient=True))
    assert profile.multi_patient.value is False and profile.patients_per_request(50) == 1


def test_the_budget_bounds_the_requests() -> None:
    server = FakeServer()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve(mock, server)
        profile = probe(FhirClient(BASE), budget=3)
    assert profile.requests == 4  # the CapabilityStatement and three searches
    assert profile.population_search.value is True


@pytest.mark.integration
def test_probe_of_the_real_test_server_is_a_plain_profile(
    small_hospital_server: SekmetServer,
) -> None:
    profile = probe(FhirClient(small_hospital_server.base_url))
    assert profile.vendor is None and profile.software
    assert profile.population_search.value is True
    assert all(profile.sends_code(t) for t in TYPES)
    assert profile.multi_patient.value is True
    assert profile.last_updated.value is True
    assert profile.include_medication.value is True
    assert "system" in (profile.bulk_levels.value or ())
    assert profile.population_search.origin == "probe"
    assert profile.requests <= MAX_PROBE_REQUESTS + 1
