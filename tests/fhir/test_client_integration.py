"""The client against a real FHIR server (sekmet-fhir started by the test suite)."""

from __future__ import annotations

import json

import pytest
import requests

from fhir_cohort.errors import CapabilityError, FhirHttpError
from fhir_cohort.fhir.capability import check_plan, fetch_capability
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.search import MAX_GET_QUERY_CHARS, SearchQuery
from tests.conftest_server import SMALL_HOSPITAL
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration


def _loaded(rtype: str) -> set[str]:
    bundle = json.loads(SMALL_HOSPITAL.read_text())
    return {e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype}


def test_paging_follows_next_links_exactly(small_hospital_server: SekmetServer) -> None:
    sent: list[str] = []
    client = FhirClient(small_hospital_server.base_url)
    client.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.url))
    pages = list(client.search(SearchQuery("Condition"), count=2))
    ids = [e["resource"]["id"] for p in pages for e in p.get("entry", [])]
    assert len(pages) > 1
    assert sorted(ids) == sorted(_loaded("Condition"))  # nothing lost, nothing twice
    nexts = [next(lk["url"] for lk in p["link"] if lk["relation"] == "next") for p in pages[:-1]]
    assert sent[1:] == nexts  # every later request is the server's next link, verbatim
    assert "_count=2" in sent[0]


def test_count_is_capped_by_the_server_not_by_us(small_hospital_server: SekmetServer) -> None:
    client = FhirClient(small_hospital_server.base_url)
    pages = list(client.search(SearchQuery("Observation"), count=1000))
    assert len(pages) == 1
    assert {e["resource"]["id"] for e in pages[0]["entry"]} == _loaded("Observation")


def test_strict_handling_rejects_an_unknown_parameter(small_hospital_server: SekmetServer) -> None:
    query = SearchQuery("Patient", (("no-such-param", "x"),))
    with pytest.raises(FhirHttpError) as err:
        list(FhirClient(small_hospital_server.base_url).search(query))
    assert err.value.status == 400
    assert "no-such-param" in (err.value.outcome or "")
    assert err.value.url == f"{small_hospital_server.base_url}/Patient"  # no query string
    # lenient handling: the server ignores it (and says so in an outcome entry)
    lenient = FhirClient(small_hospital_server.base_url, strict_search=False)
    ids = {e.resource["id"] for e in lenient.iter_resources(query)}
    assert ids == _loaded("Patient")


def test_long_queries_use_post_search(small_hospital_server: SekmetServer) -> None:
    ids = [f"unknown-{i:05d}" for i in range(200)] + ["srv-p1", "srv-p3"]
    query = SearchQuery("Condition", (("patient", ",".join(ids)),))
    assert len(query.query_string()) > MAX_GET_QUERY_CHARS
    methods: list[str] = []
    client = FhirClient(small_hospital_server.base_url)
    client.session.hooks["response"].append(lambda r, *a, **k: methods.append(r.request.method))
    got = {e.resource["subject"]["reference"] for e in client.iter_resources(query)}
    assert methods == ["POST"]
    assert got == {"Patient/srv-p1", "Patient/srv-p3"}


def test_include_entries_come_with_search_mode_include(
    small_hospital_server: SekmetServer,
) -> None:
    query = SearchQuery(
        "MedicationRequest",
        (("patient", "srv-p1"), ("_include", "MedicationRequest:medication")),
    )
    entries = list(FhirClient(small_hospital_server.base_url).iter_resources(query))
    modes = {(e.resource["resourceType"], e.resource["id"]): e.mode for e in entries}
    assert modes == {
        ("MedicationRequest", "srv-mr1"): "match",
        ("Medication", "srv-m-hcq"): "include",
    }


def test_capability_check_lists_everything_missing(small_hospital_server: SekmetServer) -> None:
    cap = fetch_capability(FhirClient(small_hospital_server.base_url))
    assert cap.supports_param("Condition", "code")
    assert cap.supports_include("MedicationRequest:medication")
    assert check_plan(cap, {"Condition": {"code", "patient"}, "Patient": {"_id"}}) == []
    with pytest.raises(CapabilityError) as err:
        check_plan(cap, {"Condition": {"code", "bogus-a"}, "NotAType": {"x"}})
    assert "Condition.bogus-a" in str(err.value) and "NotAType" in str(err.value)


def test_read_and_not_found(small_hospital_server: SekmetServer) -> None:
    client = FhirClient(small_hospital_server.base_url)
    assert client.read("Patient", "srv-p2")["gender"] == "female"
    with pytest.raises(FhirHttpError) as err:
        client.read("Patient", "does-not-exist")
    assert err.value.status == 404


def test_counters_add_up(small_hospital_server: SekmetServer) -> None:
    client = FhirClient(small_hospital_server.base_url)
    list(client.search(SearchQuery("Condition"), count=3))
    stats = client.stats.snapshot()
    raw = requests.get(f"{small_hospital_server.base_url}/Condition", params={"_count": "1000"})
    assert stats["requests"] == 3  # 7 conditions, 3 per page
    resources = [json.dumps(e["resource"], separators=(",", ":")) for e in raw.json()["entry"]]
    assert stats["bytes_received"] > sum(map(len, resources))  # every page body is counted
