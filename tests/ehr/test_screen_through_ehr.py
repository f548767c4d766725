"""Screening through the emulated EHRs (issue 11 item 4): the funnel fails fast on a
patient-scoped EHR instead of answering wrongly; ``auto`` on a Group answers as the on-disk
screen of the records the profile serves does, on every profile."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fhir_cohort.cli import exit_code_for
from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.errors import CrawlIncompleteError, FhirCohortError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.fetch import read_state
from fhir_cohort.pipeline import screen
from fhir_cohort.remote import ServerOptions, fetch
from fhir_cohort.requirements import requirements
from fhir_cohort.terminology import Terminology
from tests.conftest_server import SMALL_HOSPITAL
from tests.ehr.conftest import GROUP_ID, GROUP_MEMBERS
from tests.ehr.emulator import EhrEmulator
from tests.ehr.profiles import PROFILES, TypeNotOffered
from tests.server.sekmet import SekmetServer

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 24)
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def disk_rows(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], pd.DataFrame]:
    """``disk_rows(profile)``: the on-disk screen of the small hospital's records that the
    profile serves (an EHR that offers no MedicationStatement has none to give)."""
    cache: dict[frozenset[str], pd.DataFrame] = {}

    def get(name: str) -> pd.DataFrame:
        rule = PROFILES[name].rule(TypeNotOffered)
        offered = rule.offered if isinstance(rule, TypeNotOffered) else None
        by_type: dict[str, list[str]] = {}
        for entry in json.loads(SMALL_HOSPITAL.read_text())["entry"]:
            res = entry["resource"]
            if offered is None or res["resourceType"] in offered:
                by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
        key = frozenset(by_type)
        if key not in cache:
            folder = tmp_path_factory.mktemp("small-hospital-ndjson")
            for rtype, lines in by_type.items():
                (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
            out = tmp_path_factory.mktemp("disk-out")
            cache[key] = screen(folder, as_of=AS_OF, out_dir=out).patients
        return cache[key]

    return get


@pytest.mark.parametrize("name", ["epic", "oracle"])
def test_funnel_on_a_patient_scoped_ehr_fails_fast(
    ehr: Callable[[str], EhrEmulator], name: str, tmp_path: Path
) -> None:
    emulator = ehr(name)
    options = ServerOptions(strategy="funnel", cache_dir=tmp_path / "cache")
    with pytest.raises(FhirCohortError):
        screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    # The CapabilityStatement, and at most the refused server-wide entry search.
    assert emulator.stats.requests <= 2
    assert not (tmp_path / "out" / "patients.csv").exists()


@pytest.mark.parametrize("name", ["epic", "oracle", "plain"])
def test_auto_on_a_group_answers_as_the_disk_screen(
    ehr: Callable[[str], EhrEmulator],
    name: str,
    disk_rows: Callable[[str], pd.DataFrame],
    tmp_path: Path,
) -> None:
    emulator = ehr(name)
    options = ServerOptions(strategy="auto", bulk_group=GROUP_ID, cache_dir=tmp_path / "cache")
    result = screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    got = result.patients.set_index("patient_id").sort_index()
    want = disk_rows(name).set_index("patient_id").sort_index().loc[sorted(GROUP_MEMBERS)]
    pd.testing.assert_frame_equal(got.astype(str), want.astype(str))


SWEEP_PATIENT = "sweep-p"


@pytest.fixture(scope="module")
def sweep(upstream: SekmetServer) -> Iterator[dict[str, set[str]]]:
    """A patient (not of the Group) with, for every LOINC code the trial's observation queries
    read, one Observation coded with it and one panel whose component alone carries it."""
    terminology = Terminology.load()
    needs = requirements(load_criteria(default_criteria_path()), terminology)
    codes = sorted({t.split("|", 1)[1] for t in needs.observation_tokens if t.startswith(LOINC)})
    assert len(codes) > 20
    lab = [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]
    subject = {"reference": f"Patient/{SWEEP_PATIENT}"}
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": SWEEP_PATIENT}]
    ids: dict[str, set[str]] = {"code": set(), "component": set()}
    for i, code in enumerate(codes):
        coded = {"system": LOINC, "code": code}
        value = {"value": 1.0, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"}
        base = {"resourceType": "Observation", "status": "final", "category": lab}
        base |= {"subject": subject, "effectiveDateTime": "2026-01-05"}
        resources.append(
            base | {"id": f"sweep-code-{i}", "code": {"coding": [coded]}, "valueQuantity": value}
        )
        panel = {"text": "a panel coded only locally"}
        component = [{"code": {"coding": [coded]}, "valueQuantity": value}]
        resources.append(base | {"id": f"sweep-panel-{i}", "code": panel, "component": component})
        ids["code"].add(f"sweep-code-{i}")
        ids["component"].add(f"sweep-panel-{i}")
    upstream.load_resources(resources)
    yield ids
    upstream.transaction(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"request": {"method": "DELETE", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources
            ],
        }
    )


@pytest.mark.parametrize(
    ("name", "route"),
    [
        # Epic: code search, and the panels by component-code with the categories Epic wants
        ("epic", ("code=", "category=exam,imaging,laboratory,social-history,survey,vital-signs")),
        # Oracle: no component-code; the patient's Observations whole, filtered on arrival
        ("oracle", ()),
        ("plain", ("code=", "component-code=")),
    ],
)
def test_every_needed_code_is_found_as_code_and_as_component(
    ehr: Callable[[str], EhrEmulator],
    sweep: dict[str, set[str]],
    name: str,
    route: tuple[str, ...],
    tmp_path: Path,
) -> None:
    """Each LOINC code the criteria read, as Observation.code and as a panel's component, on
    every emulated profile: the probe picks the route the server takes, none is skipped."""
    emulator = ehr(name)
    listing = tmp_path / "patients.txt"
    listing.write_text(SWEEP_PATIENT + "\n")
    options = ServerOptions(strategy="auto", patients=listing, cache_dir=tmp_path / "cache")
    trial = load_criteria(default_criteria_path())
    loaded = fetch(
        emulator.base_url, trial, Terminology.load(), options, default_cache=tmp_path / "c"
    )
    assert loaded.strategy == "crawl" and loaded.unsearched == ()
    lines = (loaded.path / "Observation.ndjson").read_text().splitlines()
    got = {json.loads(line)["id"] for line in lines}
    assert sweep["code"] <= got, sorted(sweep["code"] - got)
    assert sweep["component"] <= got, sorted(sweep["component"] - got)
    # refused once at most: the probe's search without a category, which finds the rule
    assert emulator.stats.rejected.get("observation_category_or_code", 0) <= 1
    searches = [q["query"] for q in loaded.report.queries if q["query"].startswith("Observation")]
    assert len(searches) == max(1, len(route))
    for part in route:
        assert any(part in q for q in searches), (part, searches)


def test_no_way_to_search_panels_is_said_and_kept_from_eligible(
    ehr: Callable[[str], EhrEmulator],
    disk_rows: Callable[[str], pd.DataFrame],
    tmp_path: Path,
) -> None:
    """A server that wants a category where none is known, with component-code refused: the
    panel search cannot be sent. The crawl says so (run.json, summary) and no answer is a
    confident eligible: those patients are kept for review."""
    emulator = ehr("plain")
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "limits:\n"
        "  observation_category_required: {value: true}\n"
        "  component_code: {value: rejected}\n"
    )
    options = ServerOptions(
        strategy="crawl",
        bulk_group=GROUP_ID,
        cache_dir=tmp_path / "cache",
        server_profile=str(profile),
    )
    result = screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    cohort = result.run["source"]["fetch"]["cohort"]
    assert cohort["unsearched"] == ["Observation by component-code"]
    assert "allows no search for Observation by component-code" in result.summary()
    want = disk_rows("plain").set_index("patient_id").loc[sorted(GROUP_MEMBERS)]
    got = result.patients.set_index("patient_id").sort_index()
    assert "eligible" not in set(got["status"])
    assert (got["status"] == want["status"].replace("eligible", "review")).all()


def test_a_patient_whose_searches_fail_does_not_stop_the_others(
    ehr: Callable[[str], EhrEmulator],
    disk_rows: Callable[[str], pd.DataFrame],
    tmp_path: Path,
) -> None:
    """One patient's Condition search fails after every retry: the crawl finishes the other
    searches (journaled), then stops with counts, not ids, and screens nobody; the same
    command again asks only for the task that failed, and answers as the disk screen."""
    emulator = ehr("epic")
    failing = GROUP_MEMBERS[1]

    def outage(req: Any) -> int | None:
        hit = req.resource_type == "Condition" and failing in ",".join(req.values("patient"))
        return 503 if hit else None

    emulator.fail = outage
    options = ServerOptions(
        strategy="crawl", bulk_group=GROUP_ID, cache_dir=tmp_path / "cache", server_profile="epic"
    )
    trial = load_criteria(default_criteria_path())
    run_key = {"as_of": AS_OF.isoformat()}
    client = FhirClient(emulator.base_url, sleep=lambda s: None)
    with pytest.raises(CrawlIncompleteError) as err:
        fetch(
            emulator.base_url,
            trial,
            Terminology.load(),
            options,
            default_cache=tmp_path / "c",
            client=client,
            run_key=run_key,
        )
    message = str(err.value)
    # 7 tasks of 3 patients: Condition, Procedure, 3 medication types, Observation twice
    assert "1 of 7 tasks failed" in message and "searches of 3 patients" in message
    assert "HTTP 503" in message and "Run the same command again" in message
    assert not any(p in message for p in GROUP_MEMBERS)
    assert exit_code_for(err.value) == 5
    # every other type's task finished and is journaled; nothing was screened
    state = read_state(tmp_path / "cache")
    assert state is not None and state["status"] == "in_progress"
    crawled = [e for e in state["completed"].values() if e["stage"] == "crawl"]
    assert len(crawled) == 6
    assert not (tmp_path / "out").exists()

    emulator.reset()  # the outage is over
    result = screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    searched = {t for t, n in emulator.stats.searches.items() if n}
    assert searched <= {"Condition", "Medication"}, emulator.stats.searches
    assert emulator.stats.searches["Condition"] == len(GROUP_MEMBERS)
    got = result.patients.set_index("patient_id").sort_index()
    want = disk_rows("epic").set_index("patient_id").sort_index().loc[sorted(GROUP_MEMBERS)]
    pd.testing.assert_frame_equal(got.astype(str), want.astype(str))
