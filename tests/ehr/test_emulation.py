"""The EHR emulation answers as the vendors document (every rule of every profile, swept), and
whatever no rule refuses passes through unchanged (compared with the server's direct answer)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.ehr.conftest import GROUP_MEMBERS, IDS
from tests.ehr.emulator import EhrEmulator, parse
from tests.ehr.profiles import (
    EPIC,
    EPIC_OO_SYSTEM,
    ORACLE,
    PROFILES,
    CountCap,
    Example,
    NoMetaLastUpdated,
    OneExportAtATime,
    Profile,
    Rule,
)
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

FHIR_JSON = {"Accept": "application/fhir+json"}
SLE = "http://snomed.info/sct|55464009"
LOINC = "http://loinc.org|5130-0"


def _sweep() -> list[Any]:
    cases = []
    for profile in PROFILES.values():
        for rule in profile.rules:
            for i, example in enumerate(rule.examples):
                cases.append(
                    pytest.param(profile.name, rule, example, id=f"{profile.name}-{rule.name}-{i}")
                )
    return cases


def _code(profile: Profile, outcome: dict[str, Any]) -> str:
    issue = outcome["issue"][0]
    if profile.vendor == "epic" and "details" in issue:
        coding = issue["details"]["coding"][0]
        assert coding["system"] == EPIC_OO_SYSTEM
        return str(coding["code"])
    return str(issue["code"])


def _send(ehr: EhrEmulator, method: str, target: str, **headers: str) -> requests.Response:
    return requests.request(
        method, f"{ehr.base_url}/{target}", headers={**FHIR_JSON, **headers}, timeout=30
    )


def _kick_off(ehr: EhrEmulator) -> requests.Response:
    resp = _send(ehr, "GET", f"Group/{IDS['group']}/$export?_type=Patient", Prefer="respond-async")
    assert resp.status_code == 202, resp.text
    return resp


def _wait_done(status_url: str) -> requests.Response:
    """Poll a Bulk status URL until done: bounded, at a tenth of a second (the test server
    finishes a three-patient export at once)."""
    for _ in range(300):
        resp = requests.get(status_url, headers={"Accept": "application/json"}, timeout=30)
        if resp.status_code != 202:
            return resp
        time.sleep(0.1)
    raise AssertionError("export did not finish")


@pytest.mark.parametrize(("name", "rule", "example"), _sweep())
def test_every_rule_answers_as_documented(
    ehr: Callable[[str], EhrEmulator], name: str, rule: Rule, example: Example
) -> None:
    emulator = ehr(name)
    if isinstance(rule, OneExportAtATime):
        _kick_off(emulator)  # the export already running
    resp = _send(emulator, example.method, example.target.format(**IDS), **example.headers)
    assert resp.status_code == example.status, resp.text
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert _code(PROFILES[name], outcome) == example.code
    assert emulator.stats.rejected[rule.name] >= 1


def test_every_refusing_rule_has_examples() -> None:
    """A rule that can refuse a request is swept: it has at least one example."""
    for profile in PROFILES.values():
        for rule in profile.rules:
            refuses = type(rule).reject is not Rule.reject or type(rule).respond is not Rule.respond
            if refuses:
                assert rule.examples, f"{profile.name}: {rule.name} has no example"
            assert rule.source, f"{profile.name}: {rule.name} names no source"


def test_every_rule_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ehr_emulation.md").read_text()
    for profile in PROFILES.values():
        section = doc.split(f"(`{profile.name.upper()}`)", 1)[1].split("\n## ", 1)[0]
        for rule in profile.rules:
            assert f"| `{rule.name}` |" in section, f"{profile.name}: {rule.name}"


# Requests a screening client or SMART Fetch sends; each is either refused by a rule (swept
# above) or must come back as the server's own answer.
REQUESTS = (
    "Condition?patient={patient}",
    "Condition?patient={patient}&code=" + SLE,
    "Condition?subject=Patient/{patient}&clinical-status=active",
    "Condition?patient={patient}&_count=1",
    "Condition?patient={patient}&code=" + SLE + "&_count=1",
    "Condition?code=" + SLE,
    "Condition?patient={patient},{patient2}",
    "Observation?patient={patient2}&code=" + LOINC,
    "Observation?patient={patient2}&code=" + LOINC + "&_count=1",
    "Observation?patient={patient2}",
    "MedicationRequest?patient={patient2}",
    "MedicationRequest?patient={patient2}&_include=MedicationRequest:medication",
    "MedicationDispense?patient={patient}",
    "MedicationStatement?patient={patient}",
    "Procedure?patient={patient}",
    "Patient?_id={patient}",
    "Patient/{patient}",
    "Condition/{condition}",
    "Group/{group}",
    "Medication?_id=srv-m-hcq,srv-m-mmf",
)


def _all_pages(base: str, target: str) -> tuple[int, list[dict[str, Any]]]:
    resp = requests.get(f"{base}/{target}", headers=FHIR_JSON, timeout=30)
    doc = resp.json()
    if resp.status_code != 200 or doc.get("resourceType") != "Bundle":
        return resp.status_code, [doc]
    entries = list(doc.get("entry") or [])
    url = next((lk["url"] for lk in doc.get("link", []) if lk["relation"] == "next"), None)
    while url:
        assert url.startswith(base), "a next link leaves the emulator"
        page = requests.get(url, headers=FHIR_JSON, timeout=30).json()
        entries += page.get("entry") or []
        url = next((lk["url"] for lk in page.get("link", []) if lk["relation"] == "next"), None)
    return 200, entries


def _normal(entries: list[dict[str, Any]], base: str, strip: bool) -> list[str]:
    out = []
    for entry in entries:
        if "resource" not in entry:
            entry = {"resource": entry}
        entry = json.loads(json.dumps(entry).replace(base, "BASE"))
        res = entry["resource"]
        if res.get("resourceType") == "OperationOutcome":
            continue
        if strip:
            meta = res.get("meta") or {}
            meta.pop("lastUpdated", None)
            if "meta" in res and not meta:
                del res["meta"]
        out.append(json.dumps(entry, sort_keys=True))
    return sorted(out)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_allowed_requests_pass_through_unchanged(
    ehr: Callable[[str], EhrEmulator], upstream: SekmetServer, name: str
) -> None:
    emulator = ehr(name)
    profile = PROFILES[name]
    strip = profile.rule(NoMetaLastUpdated) is not None
    passed = 0
    for template in REQUESTS:
        target = template.format(**IDS)
        req = parse("GET", target, b"", FHIR_JSON)
        if any(rule.reject(req, emulator) for rule in profile.rules):
            continue  # refused: the sweep checks the answer
        status, got = _all_pages(emulator.base_url, target)
        direct_status, direct = _all_pages(upstream.base_url, target)
        assert status == direct_status == 200, (target, got)
        assert _normal(got, emulator.base_url, strip) == _normal(
            direct, upstream.base_url, strip
        ), target
        passed += 1
    assert passed >= 8, f"{name}: only {passed} requests passed"
    assert emulator.stats.requests >= passed


def test_epic_post_filter_reads_every_row_of_the_patient(ehr: Callable[[str], EhrEmulator]) -> None:
    emulator = ehr("epic")
    status, entries = _all_pages(
        emulator.base_url, f"Condition?patient={IDS['patient']}&code={SLE}"
    )
    assert status == 200 and len(entries) == 1
    assert emulator.stats.rows_read == 2  # both of the patient's conditions were read


def test_epic_ignores_last_updated_with_a_warning(
    ehr: Callable[[str], EhrEmulator], upstream: SekmetServer
) -> None:
    emulator = ehr("epic")
    target = f"Condition?patient={IDS['patient']}&_lastUpdated=gt2999-01-01"
    doc = _send(emulator, "GET", target).json()
    outcomes = [e for e in doc["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert [e["search"]["mode"] for e in outcomes] == ["outcome"]
    issue = outcomes[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and issue["details"]["coding"][0]["code"] == "4122"
    rows = [e for e in doc["entry"] if e not in outcomes]
    assert len(rows) == 2  # the filter was ignored, not applied
    assert all("lastUpdated" not in e["resource"].get("meta", {}) for e in rows)
    direct = requests.get(f"{upstream.base_url}/{target}", headers=FHIR_JSON, timeout=30).json()
    assert direct.get("total", 0) == 0  # the real server did filter


def test_epic_paging_session_expires(ehr: Callable[[str], EhrEmulator]) -> None:
    emulator = ehr("epic")
    first = _send(emulator, "GET", f"Condition?patient={IDS['patient']}&_count=1").json()
    nxt = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    assert "sessionID=" in nxt
    emulator.expire_sessions()
    resp = requests.get(nxt, headers=FHIR_JSON, timeout=30)
    assert resp.status_code == 400
    assert _code(EPIC, resp.json()) == "4113"


def test_oracle_count_cap_and_default() -> None:
    cap = ORACLE.rule(CountCap)
    assert isinstance(cap, CountCap)
    asked = parse("GET", "Observation?patient=a&_count=500", b"", {})
    assert cap.rewrite(asked).values("_count") == ["200"]
    assert cap.rewrite(parse("GET", "Observation?patient=a", b"", {})).values("_count") == ["50"]
    small = parse("GET", "Observation?patient=a&_count=10", b"", {})
    assert cap.rewrite(small) == small
    other = parse("GET", "Condition?patient=a&_count=500", b"", {})
    assert cap.rewrite(other) == other


def test_post_search_form_is_checked_like_a_get(ehr: Callable[[str], EhrEmulator]) -> None:
    emulator = ehr("epic")
    resp = requests.post(
        f"{emulator.base_url}/Condition/_search",
        data={"code": SLE},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert resp.status_code == 400 and _code(EPIC, resp.json()) == "4111"
    ok = requests.post(
        f"{emulator.base_url}/Condition/_search",
        data={"patient": IDS["patient"], "code": SLE},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert ok.status_code == 200 and len(ok.json()["entry"]) == 1


def _params(cs: dict[str, Any]) -> dict[str, set[str]]:
    return {
        r["type"]: {p["name"] for p in r.get("searchParam", [])} for r in cs["rest"][0]["resource"]
    }


def test_capability_statement_as_each_vendor_publishes_it(
    ehr: Callable[[str], EhrEmulator], upstream: SekmetServer
) -> None:
    direct = requests.get(f"{upstream.base_url}/metadata", headers=FHIR_JSON, timeout=30).json()
    plain = _send(ehr("plain"), "GET", "metadata").json()
    direct = json.loads(json.dumps(direct).replace(upstream.root_url, ehr("plain").root_url))
    assert {**plain, "date": None} == {**direct, "date": None}

    epic = _send(ehr("epic"), "GET", "metadata").json()
    assert epic["software"]["name"] == "Epic"
    params = _params(epic)
    assert "code" in params["Condition"]  # listed, though a search needs the patient
    assert "MedicationStatement" not in params
    assert not any("_lastUpdated" in names for names in params.values())
    group = next(r for r in epic["rest"][0]["resource"] if r["type"] == "Group")
    assert [op["name"] for op in group["operation"]] == ["group-export"]
    assert "operation" not in epic["rest"][0]  # no system-level export

    oracle = _send(ehr("oracle"), "GET", "metadata").json()
    params = _params(oracle)
    assert "code" not in params["Condition"] and "code" not in params["MedicationRequest"]
    assert "code" in params["Observation"]
    assert all("searchInclude" not in r for r in oracle["rest"][0]["resource"])


@pytest.mark.parametrize("name", ["epic", "oracle"])
def test_group_export_round_trip_and_one_at_a_time(
    ehr: Callable[[str], EhrEmulator], name: str
) -> None:
    emulator = ehr(name)
    status_url = _kick_off(emulator).headers["Content-Location"]
    assert status_url.startswith(emulator.root_url)
    busy = _send(emulator, "GET", f"Group/{IDS['group']}/$export", Prefer="respond-async")
    assert busy.status_code == 429
    emulator.finish_exports()
    manifest = _wait_done(status_url).json()
    [patients] = [o for o in manifest["output"] if o["type"] == "Patient"]
    assert patients["url"].startswith(emulator.root_url)
    lines = requests.get(patients["url"], timeout=30).text.splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(GROUP_MEMBERS)
    again = _send(emulator, "GET", f"Group/{IDS['group']}/$export", Prefer="respond-async")
    if name == "oracle":
        assert again.status_code == 202  # released when the job completed
    else:
        assert again.status_code == 429  # Epic: until the client deletes it
        assert requests.delete(status_url, timeout=30).status_code in (200, 202, 204)
        again = _send(emulator, "GET", f"Group/{IDS['group']}/$export", Prefer="respond-async")
        assert again.status_code == 202
    requests.delete(again.headers["Content-Location"], timeout=30)


def test_counts_are_what_the_client_received(ehr: Callable[[str], EhrEmulator]) -> None:
    emulator = ehr("oracle")
    received = 0
    for target in ("metadata", f"Patient/{IDS['patient']}", "Condition?code=" + SLE):
        received += len(_send(emulator, "GET", target).content)
    stats = emulator.stats.as_dict()
    assert stats["requests"] == 3 and stats["bytes"] == received
    assert stats["rejected"] == {"no_code_param": 1}
    assert stats["statuses"] == {200: 2, 400: 1}
