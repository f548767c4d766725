"""The vendor profile files: every one loads, every known limit cites its documentation, and
--server-profile files are checked before any request."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fhir_cohort.errors import OptionError
from fhir_cohort.fhir.server_profile import (
    FACT_NAMES,
    PROFILE_DIR,
    Fact,
    ServerProfile,
    combine,
    detect_vendor,
    load_profile,
    vendor_file,
    vendor_names,
)

VENDORS = ("azure", "epic", "google", "hapi", "healthlake", "medplum", "oracle-health")


def test_every_vendor_of_the_issue_has_a_file() -> None:
    assert vendor_names() == VENDORS


@pytest.mark.parametrize("name", VENDORS)
def test_every_limit_cites_its_source_or_says_unverified(name: str) -> None:
    raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    vendor = vendor_file(name)  # parses and checks the schema
    assert raw["vendor"] == name and vendor.profile.vendor == name
    limits = raw["limits"]
    # every fact of the schema is stated, known or not, so a gap is a decision, not an omission
    assert set(limits) == {*FACT_NAMES, "code_honoured"}
    entries = [(k, v) for k, v in limits.items() if k != "code_honoured"]
    entries += [(f"code_honoured.{t}", v) for t, v in limits["code_honoured"].items()]
    assert {"Condition", "Observation", "MedicationRequest"} <= set(limits["code_honoured"])
    for key, entry in entries:
        if entry["value"] is None:
            assert entry.get("unverified"), f"{name} {key}: unknown without a reason"
            assert not entry.get("sources"), f"{name} {key}: unknown yet sourced"
        else:
            assert entry.get("sources"), f"{name} {key}: a value without its source"
            assert set(entry["sources"]) <= set(raw["sources"]), f"{name} {key}"
    for tag, src in raw["sources"].items():
        assert src.get("what"), f"{name} {tag}"
        assert str(src.get("url", "")).startswith("https://") or (src.get("repo") and src["path"])
    for note in raw.get("notes") or []:
        assert note["sources"] and set(note["sources"]) <= set(raw["sources"])
    # the parsed facts carry the citation (tag and address), for run.json
    for fname in FACT_NAMES:
        fact = getattr(vendor.profile, fname)
        if fact.known:
            assert fact.origin == "vendor" and fact.source.startswith("[")


def test_documented_ehr_limits() -> None:
    epic, oracle = vendor_file("epic").profile, vendor_file("oracle-health").profile
    for ehr in (epic, oracle):
        assert ehr.patient_scoped and ehr.multi_patient.value is False
        assert ehr.bulk_levels.value == frozenset({"group"})
        assert ehr.one_export_at_a_time.value is True
    assert epic.code("Condition").value == "post-filter" and epic.sends_code("Condition")
    assert epic.last_updated.value is False
    assert epic.max_count.value is None  # not published: not invented
    assert oracle.code("Condition").value == "rejected" and not oracle.sends_code("Condition")
    assert oracle.code("MedicationRequest").value == "rejected"
    assert oracle.sends_code("Observation") and oracle.page_size(1000) == 200
    assert oracle.type_param_repeat_ok.value is False
    # Epic: an Observation search needs a code or a category, of the six it takes
    assert epic.observation_category_required.value is True
    assert epic.observation_categories.value == frozenset(
        {"social-history", "vital-signs", "imaging", "laboratory", "survey", "exam"}
    )
    assert epic.component_code.value is None  # listed, behaviour undocumented: probed
    assert oracle.observation_category_required.value is False
    assert oracle.component_code.value == "rejected"
    assert vendor_file("healthlake").profile.max_count.value == 100
    assert vendor_file("azure").profile.max_count.value == 1000


@pytest.mark.parametrize(
    ("statement", "base", "vendor"),
    [
        ({"software": {"name": "Epic", "version": "May 2026"}}, "", "epic"),
        ({"publisher": "Cerner"}, "", "oracle-health"),
        ({"software": {"name": "Cerner Millennium FHIR Server"}}, "", "oracle-health"),
        ({"software": {"name": "HAPI FHIR Server"}}, "", "hapi"),
        ({"software": {"name": "Microsoft FHIR Server"}}, "", "azure"),
        ({}, "https://x.fhir.azurehealthcareapis.com", "azure"),
        ({}, "https://healthcare.googleapis.com/v1/projects/p/fhir", "google"),
        ({}, "https://healthlake.us-east-1.amazonaws.com/datastore/d/r4", "healthlake"),
        ({"software": {"name": "Medplum"}}, "", "medplum"),
        ({"software": {"name": "SEKMET FHIR R4 Tester"}}, "http://127.0.0.1:1/fhir", None),
    ],
)
def test_vendor_detection(statement: dict, base: str, vendor: str | None) -> None:
    found = detect_vendor(statement, base)
    assert (found[0] if found else None) == vendor


def test_combine_takes_the_first_known_value_with_its_origin() -> None:
    probed = ServerProfile(population_search=Fact(True, "probe", "GET Condition?_count=1"))
    documented = vendor_file("epic").profile
    both = combine(probed, documented)
    assert both.population_search.origin == "probe" and both.population_search.value is True
    assert both.multi_patient.origin == "vendor"  # the probe did not measure it
    assert both.max_count.source == "UNVERIFIED"  # unknown, and why
    assert both.vendor == "epic"


def test_server_profile_by_name_or_file(tmp_path: Path) -> None:
    assert load_profile("epic").vendor_why == "--server-profile"
    own = tmp_path / "site.yaml"
    own.write_text(
        "vendor: epic\n"
        "limits:\n"
        "  multi_patient: {value: true}\n"
        "  max_count: {value: 50}\n"
        "  code_honoured:\n"
        "    Observation: {value: honoured}\n"
    )
    profile = load_profile(str(own))
    assert profile.multi_patient == Fact(True, "user", f"--server-profile {own}", "")
    assert profile.page_size(1000) == 50 and profile.sends_code("Observation")
    assert profile.population_search.origin == "vendor"  # the rest from Epic's file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits: {max_count: {value: 0}}", "max_count"),
        ("limits: {multi_patient: {value: 'yes'}}", "multi_patient"),
        ("limits: {bulk_levels: {value: [everything]}}", "bulk_levels"),
        ("limits: {code_honoured: {Condition: {value: maybe}}}", "code_honoured.Condition"),
        ("limits: {patient_required: {value: true}}", "unknown limits"),
        ("limits: {max_count: {value: 5, sources: [X1]}}", "X1"),
        ("- a list", "not a mapping"),
    ],
)
def test_a_bad_profile_file_is_an_option_error(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(OptionError, match=message):
        load_profile(str(bad))


def test_an_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(OptionError, match="epic, google"):
        load_profile("meditech")
