"""SearchQuery values and paging, against mocked HTTP."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st
from responses import matchers

from fhir_cohort.errors import FhirHttpError, OptionError, OriginError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.search import SearchQuery

BASE = "https://ehr.test/fhir"

names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
values = st.text(min_size=0, max_size=20)
pairs = st.lists(st.tuples(names, values), max_size=6)


@given(pairs, names, values)
def test_with_param_returns_a_new_value_and_keeps_order(
    params: list[tuple[str, str]], name: str, value: str
) -> None:
    q = SearchQuery("Condition", tuple(params))
    q2 = q.with_param(name, value)
    assert q.to_params() == params  # unchanged
    assert q2.to_params() == [*params, (name, value)]
    assert hash(q2) == hash(SearchQuery("Condition", (*params, (name, value))))


@given(
    st.lists(st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=3), min_size=1)
)
def test_describe_never_shows_patient_ids(ids: list[str]) -> None:
    q = SearchQuery("Observation", (("patient", ",".join(ids)), ("code", "http://loinc.org|1-8")))
    shown = q.describe()
    assert f"patient=<{len(ids)} ids>" in shown and "code=http://loinc.org|1-8" in shown
    assert shown.count("=") == 2


def test_resource_type_is_validated() -> None:
    with pytest.raises(ValueError):
        SearchQuery("condition")
    with pytest.raises(ValueError):
        SearchQuery("Condition?code=x")


def _page(ids: list[str], next_url: str | None = None, rtype: str = "Condition") -> dict:
    links = [{"relation": "self", "url": "ignored"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"resource": {"resourceType": rtype, "id": i}, "search": {"mode": "match"}} for i in ids
        ],
    }


def _qs(query: str) -> list:
    return [matchers.query_string_matcher(query)]


def _client(**kw: object) -> FhirClient:
    return FhirClient(BASE, sleep=lambda s: None, rng=lambda: 0.0, **kw)  # type: ignore[arg-type]


@responses.activate
def test_next_links_are_followed_verbatim_and_count_is_sent() -> None:
    # an opaque, server-owned next link: must not be rebuilt from our parameters
    nxt = "https://other-host.test/page?_getpages=abc&_getpagesoffset=2&_bundletype=searchset"
    responses.get(
        f"{BASE}/Condition", json=_page(["1", "2"], nxt), match=_qs("code=x%7Cy&_count=2")
    )
    responses.get(
        nxt, json=_page(["3"]), match=_qs("_getpages=abc&_getpagesoffset=2&_bundletype=searchset")
    )
    q = SearchQuery("Condition", (("code", "x|y"),))
    client = _client(allow_origins=["https://other-host.test"])  # another origin: allowed here
    ids = [e.resource["id"] for e in client.iter_resources(q, count=2)]
    assert ids == ["1", "2", "3"]
    assert responses.calls[1].request.url == nxt


@responses.activate
def test_a_next_link_to_another_origin_is_refused_unless_allowed() -> None:
    nxt = "https://other-host.test/page?patient=secret-77"
    responses.get(f"{BASE}/Condition", json=_page(["1"], nxt))
    with pytest.raises(OriginError) as err:
        list(_client().search(SearchQuery("Condition")))
    msg = str(err.value)
    assert "https://other-host.test" in msg and "https://ehr.test" in msg
    assert "--allow-origin https://other-host.test" in msg and "secret-77" not in msg
    assert len(responses.calls) == 1  # nothing was sent to the other origin


@responses.activate
def test_a_page_with_a_cut_body_is_fetched_again() -> None:
    nxt = f"{BASE}/Condition?page=2"
    good = json.dumps(_page(["2"]))
    responses.get(f"{BASE}/Condition", json=_page(["1"], nxt), match=_qs("_count=1000"))
    responses.get(nxt, body=good[: len(good) // 2], match=_qs("page=2"))  # a 200, cut
    responses.get(nxt, body=good, match=_qs("page=2"))
    client = _client()
    ids = [e.resource["id"] for e in client.iter_resources(SearchQuery("Condition"))]
    assert ids == ["1", "2"] and client.stats.retries == 1


@responses.activate
def test_connection_reset_mid_paging_retries_the_page() -> None:
    nxt2, nxt3 = f"{BASE}/Condition?page=2", f"{BASE}/Condition?page=3"
    responses.get(f"{BASE}/Condition", json=_page(["1", "2"], nxt2), match=_qs("_count=1000"))
    responses.get(
        nxt2, body=requests.ConnectionError("Connection reset by peer"), match=_qs("page=2")
    )
    responses.get(nxt2, json=_page(["3", "4"], nxt3), match=_qs("page=2"))
    responses.get(nxt3, json=_page(["5"]), match=_qs("page=3"))
    client = _client()
    ids = [e.resource["id"] for e in client.iter_resources(SearchQuery("Condition"))]
    assert ids == ["1", "2", "3", "4", "5"]  # nothing twice, nothing lost
    assert client.stats.retries == 1


@responses.activate
def test_a_next_link_that_loops_is_an_error() -> None:
    p2, p3 = f"{BASE}/Condition?page=2", f"{BASE}/Condition?page=3"
    responses.get(f"{BASE}/Condition", json=_page(["1"], p2), match=_qs("_count=1000"))
    responses.get(p2, json=_page(["2"], p3), match=_qs("page=2"))
    responses.get(p3, json=_page(["3"], p2), match=_qs("page=3"))
    with pytest.raises(FhirHttpError, match="paging loop") as err:
        list(_client().search(SearchQuery("Condition")))
    assert err.value.url == f"{BASE}/Condition"


@responses.activate
def test_a_page_that_is_not_a_bundle_is_a_clear_error() -> None:
    nxt = f"{BASE}/Condition?page=2&patient=secret-77"
    responses.get(f"{BASE}/Condition", json=_page(["1"], nxt), match=_qs("_count=1000"))
    responses.get(
        nxt, json={"resourceType": "OperationOutcome"}, match=_qs("page=2&patient=secret-77")
    )
    pages = _client().search(SearchQuery("Condition"))
    assert next(pages)["entry"][0]["resource"]["id"] == "1"
    with pytest.raises(FhirHttpError, match="expected a Bundle") as err:
        next(pages)
    assert err.value.url == f"{BASE}/Condition" and "secret-77" not in str(err.value)


@responses.activate
def test_a_page_that_is_not_json_is_a_clear_error() -> None:
    responses.get(f"{BASE}/Condition", body="{truncated", match=_qs("_count=1000"))
    with pytest.raises(FhirHttpError, match=r"giving up after 6 attempts.*not valid JSON"):
        list(_client().search(SearchQuery("Condition")))


@responses.activate
def test_a_long_query_page_with_invalid_json_is_posted_again() -> None:
    ids = ",".join(f"patient-{i:04d}" for i in range(200))
    responses.post(f"{BASE}/Condition/_search", body="<html>gateway</html>")
    responses.post(f"{BASE}/Condition/_search", json=_page(["1"]))
    client = _client()
    entries = list(client.iter_resources(SearchQuery("Condition", (("patient", ids),))))
    assert [e.resource["id"] for e in entries] == ["1"] and client.stats.retries == 1


def test_bad_queries_are_option_errors() -> None:
    with pytest.raises(OptionError):
        SearchQuery("condition")
    with pytest.raises(OptionError):
        SearchQuery("Condition", (("", "x"),))


@responses.activate
def test_long_query_is_posted_as_a_form() -> None:
    ids = ",".join(f"patient-{i:04d}" for i in range(200))
    responses.post(f"{BASE}/Condition/_search", json=_page(["1"]))
    entries = list(_client().iter_resources(SearchQuery("Condition", (("patient", ids),))))
    assert [e.resource["id"] for e in entries] == ["1"]
    req = responses.calls[0].request
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "patient=patient-0000%2Cpatient-0001" in req.body
    assert req.url == f"{BASE}/Condition/_search"


@responses.activate
def test_include_entries_and_outcome_entries() -> None:
    page = _page(["mr1"], rtype="MedicationRequest")
    page["entry"] += [
        {"resource": {"resourceType": "Medication", "id": "m1"}, "search": {"mode": "include"}},
        {
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "diagnostics": "x"}],
            },
            "search": {"mode": "outcome"},
        },
    ]
    responses.get(f"{BASE}/MedicationRequest", json=page)
    got = [
        (e.resource["id"], e.mode)
        for e in _client().iter_resources(SearchQuery("MedicationRequest"))
    ]
    assert got == [("mr1", "match"), ("m1", "include")]


@responses.activate
def test_an_error_outcome_inside_a_strict_search_fails() -> None:
    page = _page([])
    page["entry"] = [
        {
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "diagnostics": "ignored param"}],
            },
            "search": {"mode": "outcome"},
        }
    ]
    responses.get(f"{BASE}/Condition", body=json.dumps(page))
    with pytest.raises(FhirHttpError, match="ignored param"):
        list(_client().search(SearchQuery("Condition")))
