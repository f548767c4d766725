"""Issue 9 items 4 and 5 end to end: a Condition id reused with another subject, and references
to another server, no longer make a patient eligible."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fhir_cohort.pipeline import DEMO_DATA, screen
from fhir_cohort.terminology import Terminology

AS_OF = date(2026, 11, 24)


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return screen(DEMO_DATA, as_of=AS_OF).patients


def _copy(tmp: Path, name: str) -> Path:
    out = tmp / name
    shutil.copytree(DEMO_DATA, out, ignore=shutil.ignore_patterns("Encounter*", "*.csv", "*.md"))
    return out


def _conditions(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "Condition.000.ndjson").read_text().splitlines()]


def _save(folder: Path, name: str, resources: list[dict[str, Any]]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in resources))


def _status(folder: Path) -> tuple[pd.Series, dict[str, Any]]:
    result = screen(folder, as_of=AS_OF)
    return result.patients.set_index("patient_id")["status"].sort_index(), result.run


def _sle_patient(baseline: pd.DataFrame, conditions: list[dict[str, Any]]) -> tuple[str, str]:
    """An eligible patient with exactly one SLE Condition, and that Condition's id."""
    term = Terminology.load()
    sle: dict[str, list[str]] = {}
    for c in conditions:
        if any(term.contains("sle", x["system"], x["code"]) for x in c["code"]["coding"]):
            sle.setdefault(c["subject"]["reference"].split("/")[1], []).append(c["id"])
    eligible = baseline.loc[baseline["status"] == "eligible", "patient_id"]
    pid = next(p for p in sorted(eligible) if len(sle.get(p, ())) == 1)
    return pid, sle[pid][0]


def test_reused_condition_id_with_another_subject(tmp_path: Path, baseline: pd.DataFrame) -> None:
    conditions = _conditions(DEMO_DATA)
    sle_pid, cid = _sle_patient(baseline, conditions)
    other = sorted(baseline.loc[baseline["status"] == "ineligible", "patient_id"])[0]
    (original,) = [c for c in conditions if c["id"] == cid]
    moved = {**original, "subject": {"reference": f"Patient/{other}"}}

    # Truth: the record belongs to the other patient only.
    truth = _copy(tmp_path, "truth")
    _save(truth, "Condition.000.ndjson", [moved if c["id"] == cid else c for c in conditions])
    expected, _ = _status(truth)
    assert expected[sle_pid] != "eligible"  # the test means something

    # Version 1 for the SLE patient, version 2 (the correction) for the other one, in a later
    # file or an earlier one: the latest version alone counts.
    for later in ("Condition.001.ndjson", "Condition.-01.ndjson"):
        versions = _copy(tmp_path, f"versions{later}")
        v1 = {**original, "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"}}
        v2 = {**moved, "meta": {"versionId": "2", "lastUpdated": "2025-02-01T00:00:00Z"}}
        _save(versions, "Condition.000.ndjson", [v1 if c["id"] == cid else c for c in conditions])
        _save(versions, later, [v2])
        got, run = _status(versions)
        pd.testing.assert_series_equal(got, expected)
        assert run["duplicates"]["subject_conflicts"] == {"Condition": 1}
        assert run["duplicates"]["conflicts_dropped"] == {}

    # Two copies with different subjects and nothing to order them: the fact goes to neither.
    nobody = _copy(tmp_path, "nobody")
    _save(nobody, "Condition.000.ndjson", [c for c in conditions if c["id"] != cid])
    expected_nobody, _ = _status(nobody)
    unordered = _copy(tmp_path, "unordered")
    _save(unordered, "Condition.001.ndjson", [moved])
    got, run = _status(unordered)
    pd.testing.assert_series_equal(got, expected_nobody)
    assert run["duplicates"]["conflicts_dropped"] == {"Condition": 1}
    assert cid not in json.dumps(run["duplicates"]) and sle_pid not in json.dumps(run)


def test_reference_to_another_server_is_not_a_local_patient(
    tmp_path: Path, baseline: pd.DataFrame
) -> None:
    conditions = _conditions(DEMO_DATA)
    sle_pid, cid = _sle_patient(baseline, conditions)
    for form in (f"https://elsewhere.example/fhir/Patient/{sle_pid}", f"urn:uuid:{sle_pid}"):
        src = _copy(tmp_path, form.split(":")[0])
        changed = [
            {**c, "subject": {"reference": form}} if c["id"] == cid else c for c in conditions
        ]
        _save(src, "Condition.000.ndjson", changed)
        got, run = _status(src)
        assert got[sle_pid] != "eligible"
        unresolved = run["unresolved_references"]
        assert unresolved["total"] == 1 and unresolved["per_type"] == {"Condition": 1}
        assert unresolved["locations"][0]["location"].endswith("Condition.000.ndjson:" + str(
            [c["id"] for c in conditions].index(cid) + 1))  # fmt: skip
    # With the other server's base declared as the source's own, it resolves again.
    src = tmp_path / "https"
    got, run = _status_with_base(src, "https://elsewhere.example/fhir/")
    assert got[sle_pid] == "eligible" and run["unresolved_references"]["total"] == 0


def _status_with_base(folder: Path, base: str) -> tuple[pd.Series, dict[str, Any]]:
    result = screen(folder, as_of=AS_OF, base_url=base)
    return result.patients.set_index("patient_id")["status"].sort_index(), result.run


def test_summary_names_duplicates_and_unresolved_references(tmp_path: Path) -> None:
    sle = {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}
    cond = {"resourceType": "Condition", "id": "c1", "code": sle,
            "subject": {"reference": "Patient/p1"}}  # fmt: skip
    _save(tmp_path, "Patient.ndjson", [{"resourceType": "Patient", "id": "p1"}])
    _save(tmp_path, "Condition.000.ndjson", [cond])
    _save(tmp_path, "Condition.001.ndjson", [cond, {**cond, "id": "c2", "subject": {
        "reference": "https://elsewhere.example/fhir/Patient/p1"}}])  # fmt: skip
    summary = screen(tmp_path, as_of=AS_OF).summary()
    assert "1 reference did not resolve (see run.json)" in summary
    assert "dropped 1 duplicate or superseded copy (see run.json)" in summary


def test_base_url_must_be_a_url(tmp_path: Path) -> None:
    from fhir_cohort.errors import OptionError

    with pytest.raises(OptionError, match="--base-url"):
        screen(DEMO_DATA, as_of=AS_OF, base_url="ehr.example.org/fhir")


def test_a_bulk_export_folder_resolves_against_its_recorded_base(tmp_path: Path) -> None:
    base = "https://ehr.example.org/fhir"
    sle = {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}
    _save(tmp_path, "Patient.ndjson", [{"resourceType": "Patient", "id": "p1"}])
    _save(tmp_path, "Condition.ndjson", [
        {"resourceType": "Condition", "id": "c1", "code": sle,
         "subject": {"reference": f"{base}/Patient/p1"}},
    ])  # fmt: skip
    assert screen(tmp_path, as_of=AS_OF).run["unresolved_references"]["total"] == 1
    manifest = {"transactionTime": "2026-01-01T00:00:00Z", "request": f"{base}/Patient/$export",
                "requiresAccessToken": True, "output": [], "error": []}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    run = screen(tmp_path, as_of=AS_OF).run
    assert run["unresolved_references"]["total"] == 0
    assert run["unresolved_references"]["bases"] == [base]
