"""--strategy auto chooses from the server's profile and says why; the funnel against a server
that needs a patient on every search fails fast, saying to use a Group or a patient list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.errors import CapabilityError, OptionError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.server_profile import Fact, ServerProfile, load_profile
from fhir_cohort.remote import Loaded, ServerOptions, choose_strategy, fetch, server_profile
from fhir_cohort.requirements import requirements
from fhir_cohort.terminology import Terminology
from tests.fhir.fake_ehr import BASE, GROUP, FakeServer, serve

TRIAL = load_criteria(default_criteria_path())
TERMINOLOGY = Terminology.load()
ALL_LEVELS = frozenset({"system", "patient", "group"})


def _profile(**facts: object) -> ServerProfile:
    values = {k: Fact(v, "probe", "test") for k, v in facts.items() if k != "condition_code"}
    codes = {}
    if "condition_code" in facts:
        codes["Condition"] = Fact(facts["condition_code"], "probe", "test")
    return ServerProfile(code_honoured=codes, **values)  # type: ignore[arg-type]


def _choose(profile: ServerProfile, total: int = 10, **kwargs: object) -> tuple[str, str]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{BASE}/Condition", json={"resourceType": "Bundle", "total": total})
        return choose_strategy(FhirClient(BASE), TRIAL, TERMINOLOGY, 100, profile=profile, **kwargs)


SCOPED = {"population_search": False, "bulk_levels": frozenset({"group"})}
OPEN = {"population_search": True, "condition_code": "honoured"}


@pytest.mark.parametrize(
    ("facts", "kwargs", "total", "chosen", "why"),
    [
        (SCOPED, {"patients": True}, 0, "crawl", "cannot be searched without a patient"),
        (SCOPED, {"patients": True, "group_export": True}, 0, "bulk", "exports Groups"),
        (OPEN | {"bulk_levels": ALL_LEVELS}, {"patients": True}, 0, "crawl", "patient list"),
        (OPEN | {"bulk_levels": frozenset()}, {}, 0, "funnel", "does not advertise $export"),
        (OPEN | {"bulk_levels": frozenset({"group"})}, {}, 0, "funnel", "at system level"),
        (OPEN | {"bulk_levels": ALL_LEVELS}, {}, 5000, "bulk", "5000 Conditions (> 100)"),
        (OPEN | {"bulk_levels": ALL_LEVELS}, {}, 7, "funnel", "7 Conditions (<= 100)"),
        (
            OPEN | {"condition_code": "rejected", "bulk_levels": ALL_LEVELS},
            {},
            0,
            "bulk",
            "does not filter Condition by code (rejected",
        ),
        (
            OPEN | {"condition_code": "ignored", "bulk_levels": frozenset()},
            {},
            0,
            "full",
            "does not filter Condition by code (ignored",
        ),
    ],
)
def test_auto_chooses_from_the_profile_and_says_why(
    facts: dict, kwargs: dict, total: int, chosen: str, why: str
) -> None:
    strategy, reason = _choose(_profile(**facts), total, **kwargs)
    assert (strategy, why in reason) == (chosen, True), reason


@pytest.mark.parametrize("profile", [_profile(**SCOPED), load_profile("epic")])
def test_auto_without_a_patient_list_on_a_patient_scoped_server_says_what_to_give(
    profile: ServerProfile,
) -> None:
    with pytest.raises(CapabilityError) as err:
        _choose(profile)
    assert "--group ID" in str(err.value) and "--patients FILE" in str(err.value)


def _fetch(server: FakeServer, tmp_path: Path, **options: object) -> Loaded:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve(mock, server)
        client = FhirClient(BASE, sleep=lambda s: None)
        return fetch(
            BASE,
            TRIAL,
            TERMINOLOGY,
            ServerOptions(**options),  # type: ignore[arg-type]
            default_cache=tmp_path / "cache",
            client=client,
        )


@pytest.mark.parametrize("strategy", ["funnel", "auto"])
def test_the_funnel_on_an_epic_like_server_fails_fast(tmp_path: Path, strategy: str) -> None:
    server = FakeServer(software="Epic", patient_required=True, patient_search=False)
    with pytest.raises(CapabilityError) as err:
        _fetch(server, tmp_path, strategy=strategy)
    message = str(err.value)
    assert "cannot be searched without a patient" in message and "4111" in message
    assert "--group ID" in message and "--patients FILE" in message
    # funnel: the CapabilityStatement, the refused entry search, one probe; auto: the probe
    assert len(server.seen) <= 5
    assert "Condition" in server.seen


def test_a_server_profile_fails_the_funnel_before_any_request(tmp_path: Path) -> None:
    server = FakeServer()
    with pytest.raises(CapabilityError, match="--group ID"):
        _fetch(server, tmp_path, strategy="funnel", server_profile="oracle-health")
    assert server.seen == []


def test_auto_records_the_profile_in_the_fetch_record(tmp_path: Path) -> None:
    server = FakeServer(export=())
    loaded = _fetch(server, tmp_path, strategy="auto")
    # typed for the pipeline, a dict for run.json
    assert loaded.strategy == "funnel" and loaded.profile is not None
    assert loaded.path == tmp_path / "cache" and loaded.data_cut == loaded.report.started_at
    record = loaded.to_json()
    assert record["strategy"] == "funnel"
    assert record["why"] == "the server does not advertise $export"
    profile = record["server_profile"]
    assert profile["population_search"]["value"] is True
    assert profile["population_search"]["origin"] == "probe"
    assert profile["bulk_levels"] == {
        "value": [],
        "origin": "capabilities",
        "source": "GET metadata: no $export operation",
    }
    json.dumps(record)  # run.json can hold it


def test_a_bad_server_profile_is_an_option_error_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--server-profile"):
        ServerOptions(server_profile=str(tmp_path / "missing.yaml"))


def test_the_probe_of_a_patient_scoped_server_goes_on_with_a_group_member() -> None:
    server = FakeServer(
        software="Epic", patient_required=True, patient_search=False, one_patient=True
    )
    options = ServerOptions(strategy="auto", bulk_level="group", bulk_group=GROUP)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve(mock, server)
        profile = server_profile(FhirClient(BASE), requirements(TRIAL, TERMINOLOGY), options)
    assert GROUP in server.seen  # one Group read gave the patient
    assert profile.multi_patient.origin == "probe" and profile.multi_patient.value is False
    assert profile.code("Observation").origin == "probe"
    assert "p1" not in json.dumps(profile.to_json())


def test_an_open_server_is_probed_without_reading_the_group() -> None:
    server = FakeServer()
    options = ServerOptions(strategy="auto", bulk_level="group", bulk_group=GROUP)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve(mock, server)
        server_profile(FhirClient(BASE), requirements(TRIAL, TERMINOLOGY), options)
    assert GROUP not in server.seen
