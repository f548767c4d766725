"""The probe finds each restriction a server enforces, in a bounded number of requests.

The fake servers (``responses``) enforce one vendor-like restriction each, answering the way
the vendors document: Epic's OperationOutcome 4111 (patient required) and 4112 (several
patients), Oracle's missing ``code`` parameter and ``_count`` cap, a lenient server that
ignores what it does not know. One probe runs against the real test server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.probe import MAX_PROBE_REQUESTS, probe
from tests.server.sekmet import SekmetServer

BASE = "https://ehr.example/fhir"
TYPES = ("Condition", "Observation", "MedicationRequest")


def _rows(rtype: str) -> list[dict[str, Any]]:
    n = 70 if rtype == "Observation" else 3  # 210 rows: more than the _count caps probed
    return [
        {
            "resourceType": rtype,
            "id": f"{rtype[:3].lower()}-{p}-{i}",
            "subject": {"reference": f"Patient/{p}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": f"{i}-0"}]},
        }
        for p in ("p1", "p2", "p3")
        for i in range(n)
    ]


_ROWS = {t: _rows(t) for t in TYPES}


@dataclass
class FakeServer:
    """A FHIR server with three patients' records and the restrictions asked for."""

    software: str = "Fake FHIR"
    patient_required: bool = False  # Epic 4111 / Oracle
    patient_search: bool = True  # Patient?_count=1 allowed
    one_patient: bool = False  # Epic 4112
    code: Mapping[str, str] = field(default_factory=dict)  # type -> rejected | ignored
    max_count: int | None = None
    count_error: bool = False  # a _count above the cap is refused, not cut
    last_updated: str = "honoured"  # honoured | rejected | ignored
    include: bool = True
    export: tuple[str, ...] = ("system",)
    seen: list[str] = field(default_factory=list)

    def rows(self, rtype: str) -> list[dict[str, Any]]:
        return _ROWS[rtype]

    def outcome(self, code: str) -> tuple[int, dict[str, str], str]:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "details": {"coding": [{"code": code}]},
                    # diagnostics may quote the request: never kept by the probe
                    "diagnostics": "Patient p1 secret",
                }
            ],
        }
        return 400, {}, json.dumps(body)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlsplit(request.url)
        rtype = url.path.rsplit("/", 1)[-1]
        params = dict(parse_qsl(url.query))
        self.seen.append(rtype)
        if rtype == "metadata":
            return 200, {}, json.dumps(self.statement())
        patient = params.get("patient")
        if rtype == "Patient":
            if not self.patient_search:
                return self.outcome("4111")
            rows = [{"resourceType": "Patient", "id": p} for p in ("p1", "p2", "p3")]
        else:
            if self.patient_required and not patient:
                return self.outcome("4111")
            if patient and "," in patient and self.one_patient:
                return self.outcome("4112")
            rows = self.rows(rtype)
            if patient:
                ids = set(patient.split(","))
                rows = [r for r in rows if r["subject"]["reference"][8:] in ids]
        if "code" in params:
            how = self.code.get(rtype, "honoured")
            if how == "rejected":
                return self.outcome("not-supported")
            if how == "honoured":
                rows = [
                    r for r in rows if params["code"].endswith("|" + r["code"]["coding"][0]["code"])
                ]
        if "_lastUpdated" in params:
            if self.last_updated == "rejected":
                return self.outcome("not-supported")
            if self.last_updated == "honoured":
                rows = []
        if "_include" in params and not self.include:
            return self.outcome("not-supported")
        count = int(params.get("_count", "10"))
        if self.max_count and count > self.max_count:
            if self.count_error:
                return self.outcome("invalid-count")
            count = self.max_count
        page = rows[:count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
            "link": [{"relation": "next", "url": f"{BASE}/{rtype}?page=2"}]
            if len(rows) > count
            else [],
        }
        return 200, {}, json.dumps(bundle)

    def statement(self) -> dict[str, Any]:
        resources: list[dict[str, Any]] = [
            {"type": t, "searchParam": [{"name": "patient"}, {"name": "code"}]} for t in TYPES
        ]
        if "group" in self.export:
            resources.append({"type": "Group", "operation": [{"name": "export"}]})
        return {
            "resourceType": "CapabilityStatement",
            "software": {"name": self.software},
            "rest": [
                {
                    "mode": "server",
                    "resource": resources,
                    "operation": [{"name": "export"}] if "system" in self.export else [],
                }
            ],
        }


def _probe(server: FakeServer, **kwargs: Any) -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for rtype in ("metadata", "Patient", *TYPES):
            mock.add_callback(responses.GET, f"{BASE}/{rtype}", callback=server)
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
    assert profile.max_count.value == 1000
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
        for rtype in ("metadata", "Patient", *TYPES):
            mock.add_callback(responses.GET, f"{BASE}/{rtype}", callback=server)
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
    assert {f.origin for f in (profile.population_search, profile.max_count)} == {"probe"}
    assert profile.requests <= MAX_PROBE_REQUESTS + 1
