"""The crawl against a real server: same answers as the on-disk screen, patient lists, deleted
and merged patients, --since, resume. One server for the module, loaded with scenario patients
of the bundled demo hospital."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import responses

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.errors import CrawlIncompleteError, OptionError, SourceError
from fhir_cohort.fhir.capability import Capability
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.crawl import (
    CrawlPlan,
    PatientList,
    _Crawler,
    crawl,
    read_patient_list,
)
from fhir_cohort.fhir.fetch import read_state
from fhir_cohort.pipeline import screen
from fhir_cohort.progress import Progress
from fhir_cohort.remote import ServerOptions, crawl_plan
from fhir_cohort.requirements import Requirements
from fhir_cohort.terminology import Terminology
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "fhir_cohort" / "demo_data"
AS_OF = date(2026, 11, 24)
SYSTEM = "urn:fhir-cohort:synth"
# every 10th scenario patient: eligible, review and ineligible ones, most record types
PICK = 10


def _demo() -> Iterator[dict[str, Any]]:
    for path in sorted(DEMO.glob("*.ndjson")):
        if not path.name.startswith("Encounter"):
            for line in path.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)


def _subject(res: dict[str, Any]) -> str | None:
    ref = (res.get("subject") or res.get("patient") or {}).get("reference", "")
    return ref.split("/")[-1] if ref.startswith("Patient/") else None


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Chosen scenario patients with their records, as a folder on disk."""
    everything = list(_demo())
    ids = sorted(r["id"] for r in everything if r["resourceType"] == "Patient")
    chosen = set([i for i in ids if i.startswith("s-")][::PICK])
    keep = [
        r
        for r in everything
        if (r["resourceType"] == "Patient" and r["id"] in chosen)
        or r["resourceType"] == "Medication"
        or (r["resourceType"] != "Patient" and _subject(r) in chosen)
    ]
    folder = tmp_path_factory.mktemp("crawl-disk")
    by_type: dict[str, list[str]] = {}
    for r in keep:
        by_type.setdefault(r["resourceType"], []).append(json.dumps(r))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    return {"ids": sorted(chosen), "resources": keep, "folder": folder}


@pytest.fixture(scope="module")
def server(sekmet_factory: Callable[..., SekmetServer], hospital: dict[str, Any]) -> SekmetServer:
    srv = sekmet_factory()
    srv.load_resources(hospital["resources"])
    return srv


@pytest.fixture(scope="module")
def disk_rows(hospital: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("crawl-disk-out")
    return screen(hospital["folder"], as_of=AS_OF, out_dir=out).patients


def _group(server: SekmetServer, gid: str, members: list[str], **extra: Any) -> None:
    body = {
        "resourceType": "Group",
        "id": gid,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members],
        **extra,
    }
    resp = server.session.put(f"{server.base_url}/Group/{gid}", json=body)
    assert resp.status_code in (200, 201), resp.text


@functools.cache
def _terminology() -> Terminology:
    return Terminology.load()


@functools.cache
def _needs() -> Requirements:
    return Requirements.of(load_criteria(default_criteria_path()), _terminology())


def _plan(**kw: Any) -> CrawlPlan:
    return crawl_plan(_needs(), _terminology(), **kw)


def _fast_plan() -> CrawlPlan:
    """Codes filtered on arrival only: fewer and cheaper requests where codes do not matter."""
    return _plan(server_codes=False)


def test_group_crawl_screens_like_the_disk(
    server: SekmetServer,
    hospital: dict[str, Any],
    disk_rows: pd.DataFrame,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = hospital["ids"]
    _group(server, "crawl-all", [*ids, "gone-patient"])
    caplog.set_level(logging.DEBUG)
    result = screen(
        server.base_url,
        as_of=AS_OF,
        out_dir=tmp_path / "out",
        # auto: the probe, then the crawl the patient list calls for, fitted to the profile
        server=ServerOptions(strategy="auto", bulk_group="crawl-all", concurrency=3),
    )
    crawled = result.patients.set_index("patient_id").sort_index()
    disk = disk_rows.set_index("patient_id").sort_index()
    assert len(disk) == len(ids)
    pd.testing.assert_frame_equal(crawled.astype(str), disk.astype(str))
    fetch = result.run["source"]["fetch"]
    assert fetch["strategy"] == "crawl" and "patient list" in fetch["why"]
    assert fetch["server_profile"]
    cohort = fetch["cohort"]
    assert cohort["listed"] == len(ids) + 1 and cohort["screened"] == len(ids)
    assert cohort["not_found"] == 1
    # requests: metadata, Group, then per patient Patient + 8 searches (Observation by code
    # and by component-code), and a few tasks' worth of Medication reads at most
    per_patient = 1 + 8
    probe = fetch["server_profile"].get("requests", 20)
    assert fetch["requests"] <= 2 + per_patient * len(ids) + 2 + probe
    # counts only: no patient id in the fetch record, the summary or the log
    text = json.dumps(fetch) + result.summary()
    assert not any(i in text for i in ids)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("fhir_cohort")]
    leaks = [m for m in ours if any(i in m for i in ids)]
    assert not leaks
    assert "1 not on the server (deleted)" in result.summary()


def test_patient_file_with_identifiers(
    server: SekmetServer, hospital: dict[str, Any], tmp_path: Path
) -> None:
    ids = hospital["ids"][:6]
    listing = tmp_path / "patients.txt"
    lines = ["# MRNs and ids", *ids[:3], "", *(f"{SYSTEM}|{i}" for i in ids[3:])]
    lines += [f"{SYSTEM}|no-such-mrn", f"{SYSTEM}|{ids[0]}"]
    listing.write_text("\n".join(lines) + "\n")
    plist = read_patient_list(listing)
    assert plist.ids == tuple(ids[:3]) and len(plist.identifiers) == 5
    client = FhirClient(server.base_url)
    events: list[Progress] = []
    report = crawl(
        client, _plan(server_codes=False), plist, tmp_path / "cache", progress=events.append
    )
    assert report.cohort is not None
    c = report.cohort
    assert (c["identifiers"], c["identifiers_resolved"], c["identifiers_unresolved"]) == (5, 4, 1)
    assert c["screened"] == 6 and c["source"] == "file"
    patients = (tmp_path / "cache" / "Patient.ndjson").read_text().splitlines()
    assert sorted(json.loads(p)["id"] for p in patients) == sorted(ids)
    assert {e.step for e in events} >= {"identifiers", "patients", "crawl", "write"}
    # no id and no identifier value (an MRN) in the report or the queries the journal lists
    # (the journal's patient list is private, as the funnel's)
    state = read_state(tmp_path / "cache")
    assert state is not None
    written = json.dumps(report.to_dict()) + json.dumps(state["queries"])
    assert "identifier=<1 ids>" in written
    assert not any(i in written for i in ids)
    # one line per kind of search in the report, not one per patient
    assert len(report.queries) < 20
    # the snapshot folder is a patient list too
    again = read_patient_list(tmp_path / "cache")
    assert sorted(again.ids) == sorted(ids) and again.source == "snapshot"


def _copy(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with scenario ids ``s-...`` renamed ``m-...`` (a copy this test may change)."""
    text = json.dumps(resource).replace('"s-', '"m-').replace('"Patient/s-', '"Patient/m-')
    return dict(json.loads(text))


def test_deleted_merged_since_and_left(
    server: SekmetServer, hospital: dict[str, Any], tmp_path: Path
) -> None:
    srv = server
    originals = hospital["ids"][:5]
    srv.load_resources(
        _copy(r)
        for r in hospital["resources"]
        if r["resourceType"] != "Medication" and (r["id"] in originals or _subject(r) in originals)
    )
    ids = [_copy({"id": i})["id"] for i in originals]
    assert all(i.startswith("m-") for i in ids)
    a, b, c, d, e = ids
    _group(srv, "g-merge", [a, b, c, d, e])
    client = FhirClient(srv.base_url)
    cache = tmp_path / "cache"
    # created mode: --since compares creation dates the test sets, so no clock is involved
    # (_lastUpdated=gt compares at second precision: a change in the same second is missed)
    plan = _plan(since_mode="created")
    first = crawl(client, plan, PatientList.of_group("g-merge"), cache, run_key={"run": 1})
    assert first.cohort and first.cohort["screened"] == 5
    assert first.cohort["new_since_last_run"] == 0  # no last run to compare with
    since = datetime(2030, 1, 1, tzinfo=UTC)  # after every record of the demo hospital

    # a deleted, b merged into c, e left the Group; c gets a new Condition
    assert srv.session.delete(f"{srv.base_url}/Patient/{a}").status_code in (200, 204)
    patient_b = srv.session.get(f"{srv.base_url}/Patient/{b}").json()
    patient_b["link"] = [{"other": {"reference": f"Patient/{c}"}, "type": "replaced-by"}]
    patient_b["active"] = False
    assert srv.session.put(f"{srv.base_url}/Patient/{b}", json=patient_b).ok
    _group(srv, "g-merge", [a, b, c, d])
    new_condition = {
        "resourceType": "Condition",
        "id": "crawl-new-condition",
        "subject": {"reference": f"Patient/{c}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
        "recordedDate": "2030-06-01",
    }
    srv.load_resources([new_condition])

    second = crawl(
        client, plan, PatientList.of_group("g-merge"), cache, since=since, run_key={"run": 2}
    )
    got = second.cohort
    assert got is not None
    assert (got["listed"], got["not_found"], got["merged"], got["screened"]) == (4, 1, 1, 2)
    assert got["left_since_last_run"] == 3 and got["new_since_last_run"] == 0
    assert got["since_mode"] == "created"
    snap = {json.loads(line)["id"] for line in (cache / "Patient.ndjson").read_text().splitlines()}
    assert snap == {c, d}  # the deleted, the merged-away and the one who left are gone
    conditions = [json.loads(x) for x in (cache / "Condition.ndjson").read_text().splitlines()]
    assert "crawl-new-condition" in {x["id"] for x in conditions}
    assert {_subject(x) for x in conditions} <= {c, d}
    # Conditions created since only; types without a creation date the server lists
    # (Observation.issued is not searchable there) were fetched whole
    assert second.fetched.get("Condition") == 1
    statements = (cache / "MedicationStatement.ndjson").read_text().splitlines()
    assert second.fetched.get("MedicationStatement", 0) == len(statements) > 0


def test_interrupted_crawl_resumes(
    server: SekmetServer, hospital: dict[str, Any], tmp_path: Path
) -> None:
    ids = hospital["ids"][:4]
    plist = PatientList(tuple(ids))
    client = FhirClient(server.base_url)

    def stop(p: Progress) -> None:
        if p.step == "crawl" and (p.done or 0) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crawl(client, _fast_plan(), plist, tmp_path, workers=1, progress=stop, task_patients=1)
    state = read_state(tmp_path)
    assert state is not None and state["status"] == "in_progress"
    done = len(state["completed"])
    fresh = FhirClient(server.base_url)
    report = crawl(fresh, _fast_plan(), plist, tmp_path, workers=1, task_patients=1)
    assert report.resumed_queries == done
    whole = crawl(
        FhirClient(server.base_url), _fast_plan(), plist, tmp_path / "again", task_patients=1
    )
    assert report.requests < whole.requests
    assert report.resources == whole.resources


def test_server_side_codes_or_client_filter_same_snapshot(
    server: SekmetServer, hospital: dict[str, Any], tmp_path: Path
) -> None:
    """Observations filtered by the server (code, component-code) or on arrival (the reader's
    line filter) screen alike; several patients per request give the same snapshot."""
    plist = PatientList(tuple(hospital["ids"][:4]))
    client = FhirClient(server.base_url)
    by_server = crawl(client, _plan(), plist, tmp_path / "server")
    by_client = crawl(client, _plan(server_codes=False), plist, tmp_path / "client")
    batched = crawl(client, _plan(batch=4), plist, tmp_path / "batched")
    assert batched.resources == by_server.resources
    assert batched.requests < by_server.requests
    assert by_client.requests < by_server.requests  # no component-code search

    def observations(folder: str) -> dict[str, str]:
        lines = (tmp_path / folder / "Observation.ndjson").read_text().splitlines()
        return {json.loads(x)["id"]: x for x in lines}

    server_side, client_side = observations("server"), observations("client")
    # the line filter keeps whatever the server's code filter returned (a superset: any
    # relevant code counts), and drops the rest of the patients' Observations
    assert server_side.items() <= client_side.items()
    every = {
        r["id"]
        for r in hospital["resources"]
        if r["resourceType"] == "Observation" and _subject(r) in plist.ids
    }
    assert set(client_side) <= every


def test_group_not_on_the_server(server: SekmetServer, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Group nope is not on the server"):
        crawl(FhirClient(server.base_url), _plan(), PatientList.of_group("nope"), tmp_path)


# -- without a server ---------------------------------------------------------------------------


def test_patient_list_errors_name_lines_not_content(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    for text, where in (
        ("ok-1\nsecret mrn 123\n", ":2:"),
        ("urn:x|\n", ":1:"),
        ("# only a comment\n\n", "names no patient"),
    ):
        path.write_text(text)
        with pytest.raises(OptionError, match=where) as err:
            read_patient_list(path)
        assert "secret" not in str(err.value) and "urn:x" not in str(err.value)
    with pytest.raises(OptionError, match="no such file"):
        read_patient_list(tmp_path / "missing.txt")
    with pytest.raises(OptionError, match="not a FHIR id"):
        PatientList.of_group("a b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "crawl"}, "needs --group ID or --patients"),
        ({"strategy": "funnel", "bulk_group": "g"}, "--group is used only with"),
        ({"strategy": "bulk", "bulk_group": "g"}, "--group is used only with"),
        ({"strategy": "funnel", "patients": Path("x")}, "--patients is used only"),
        ({"strategy": "crawl", "patients": Path("x"), "bulk_group": "g"}, "give one"),
        ({"strategy": "crawl", "bulk_group": "g", "crawl_batch": 0}, "--crawl-batch"),
        ({"strategy": "bulk", "bulk_level": "group"}, "needs --group"),
    ],
)
def test_list_options_checked_before_any_request(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        ServerOptions(**kwargs)


def test_group_serves_crawl_and_group_export() -> None:
    from fhir_cohort.remote import plans_from_entry

    ServerOptions(strategy="bulk", bulk_level="group", bulk_group="g")
    # a crawl (or auto with a list) does not plan from one trial's entry: several trials fit
    for options in (
        ServerOptions(strategy="crawl", bulk_group="g"),
        ServerOptions(strategy="auto", bulk_group="g"),
        ServerOptions(strategy="crawl", patients=Path("l.txt")),
    ):
        assert not plans_from_entry(options)
    assert plans_from_entry(ServerOptions(strategy="auto"))
    assert plans_from_entry(ServerOptions(strategy="funnel"))


@pytest.mark.parametrize(
    ("listed", "mode", "expected"),
    [
        (True, "updated", {"Condition": "_lastUpdated", "Procedure": "_lastUpdated"}),
        (False, "created", {"Condition": "recorded-date", "Procedure": None}),
        (True, "created", {"Condition": "recorded-date", "Procedure": None}),
    ],
)
def test_since_by_updated_or_created(
    listed: bool, mode: str, expected: dict[str, str | None], tmp_path: Path
) -> None:
    """Created mode uses a creation date where the server lists one, and fetches a type
    without one whole (Procedure); auto picks updated only when _lastUpdated is listed."""
    params = [{"name": "recorded-date"}, *([{"name": "_lastUpdated"}] if listed else [])]
    cap = Capability.from_statement(
        {
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {"type": t, "searchParam": params} for t in ("Patient", "Condition")
                    ]
                    + [{"type": "Procedure", "searchParam": [{"name": "patient"}]}],
                }
            ]
        }
    )
    crawler = _Crawler(
        FhirClient("http://127.0.0.1:9/fhir"),
        _plan(since_mode="auto"),
        PatientList(("p",)),
        tmp_path,
        workers=1,
        since=datetime(2026, 1, 1, tzinfo=UTC),
        progress=None,
        page_size=None,
        reuse="never",
        run_key=None,
    )
    crawler.since_mode = mode
    for rtype, param in expected.items():
        got = crawler._since_param(rtype, cap)
        assert (got[0] if got else None) == param
        if got:
            assert got[1] == "gt2026-01-01T00:00:00Z"


def test_cli_crawl_options() -> None:
    from fhir_cohort.cli import _server_options, build_parser

    argv = ["screen", "--source", "http://127.0.0.1:9/fhir", "--out", "o", "--strategy"]
    args = build_parser().parse_args([*argv, "crawl", "--patients", "l.txt", "--crawl-batch", "3"])
    options = _server_options(args)
    assert (options.patients, options.crawl_batch) == (Path("l.txt"), 3)
    args = build_parser().parse_args([*argv, "crawl", "--group", "g1"])
    assert _server_options(args).bulk_group == "g1"
    with pytest.raises(OptionError, match="needs --group ID or --patients"):
        _server_options(build_parser().parse_args([*argv, "crawl"]))


@responses.activate
def test_types_the_server_does_not_serve_are_skipped_and_reported(tmp_path: Path) -> None:
    """Epic has no MedicationStatement, Oracle Health no Medication: such a type holds nothing
    this server can give, so the crawl skips it and says so (the test server serves all)."""
    base = "http://ehr.test/fhir"
    statement = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "Patient", "searchParam": [{"name": "_id"}]},
                    {"type": "Condition", "searchParam": [{"name": "patient"}]},
                ],
            }
        ],
    }
    responses.get(f"{base}/metadata", json=statement)
    patient = {"resourceType": "Patient", "id": "p1"}
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
    }
    for rtype, res in (("Patient", patient), ("Condition", condition)):
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": res}]}
        responses.get(f"{base}/{rtype}", json=bundle)
    report = crawl(FhirClient(base), _plan(), PatientList(("p1",)), tmp_path)
    assert report.requests == 3
    assert report.resources == {"Condition": 1, "Patient": 1}
    assert report.cohort is not None
    assert report.cohort["types_not_served"] == [
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
    ]


@responses.activate
def test_auto_crawls_a_patient_list() -> None:
    from fhir_cohort.fhir.server_profile import ServerProfile
    from fhir_cohort.remote import choose_strategy

    base = "http://ehr.test/fhir"
    group_export = {"type": "Group", "operation": [{"name": "export"}]}
    responses.get(
        f"{base}/metadata",
        json={"resourceType": "CapabilityStatement", "rest": [{"resource": [group_export]}]},
    )
    client = FhirClient(base)
    terminology = _terminology()
    unknown = ServerProfile()  # nothing probed: the patient list decides
    picked = choose_strategy(client, _needs(), terminology, 10, profile=unknown, patients=True)
    assert picked[0] == "crawl"
    picked = choose_strategy(
        client, _needs(), terminology, 10, profile=unknown, patients=True, group_export=True
    )
    assert picked[0] == "bulk"


@responses.activate
def test_a_failing_server_stops_the_crawl_early(tmp_path: Path) -> None:
    """Every Condition search fails after its retries: more failing than working is the
    server, not one patient, so the stage stops after a few instead of trying every task."""
    base = "http://ehr.test/fhir"
    statement = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "Patient", "searchParam": [{"name": "_id"}]},
                    {"type": "Condition", "searchParam": [{"name": "patient"}]},
                ],
            }
        ],
    }
    responses.get(f"{base}/metadata", json=statement)
    ids = [f"p{i}" for i in range(40)]
    patients = [{"resource": {"resourceType": "Patient", "id": i}} for i in ids]
    responses.get(f"{base}/Patient", json={"resourceType": "Bundle", "entry": patients})
    responses.get(f"{base}/Condition", status=500)
    client = FhirClient(base, sleep=lambda s: None, max_retries=1)
    with pytest.raises(CrawlIncompleteError, match="more not run") as err:
        crawl(client, _plan(), PatientList(tuple(ids)), tmp_path, workers=1, task_patients=1)
    # Five failures stop the stage; two tasks per worker are in flight, so one more may have
    # finished (and failed) with the fifth, however late the stage's thread woke: 5 or 6,
    # never all 40.
    assert re.search(r"\b[56] of 40 tasks failed", str(err.value))
    assert not any(f"p{i}" in str(err.value).split("(")[0] for i in range(40))
    # two attempts per task; the one task a worker had started when the stage stopped aside
    assert sum(1 for c in responses.calls if "/Condition" in c.request.url) <= 6 * 2
