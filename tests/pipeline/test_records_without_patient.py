"""Spec v1.1: a record whose patient has no Patient resource is counted in run.json per type."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from fhir_cohort.pipeline import screen

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def _write(folder: Path, rtype: str, resources: list[dict[str, Any]]) -> None:
    with (folder / f"{rtype}.000.ndjson").open("w") as fh:
        for r in resources:
            fh.write(json.dumps({"resourceType": rtype, **r}) + "\n")


def test_run_json_counts_records_without_a_patient(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sle = {"coding": [{"system": SCT, "code": "55464009"}]}
    _write(src, "Patient", [{"id": "p1", "birthDate": "1980-01-01", "gender": "female"}])
    _write(src, "Condition", [
        {"id": "c1", "subject": {"reference": "Patient/p1"}, "code": sle},
        {"id": "c2", "subject": {"reference": "Patient/ghost"}, "code": sle},
        {"id": "c3", "subject": {"reference": "Patient/ghost2"}, "code": sle},
    ])  # fmt: skip
    _write(src, "Observation", [
        {"id": "o1", "status": "final", "subject": {"reference": "Patient/ghost"},
         "code": {"coding": [{"system": LOINC, "code": "5130-0"}]},
         "effectiveDateTime": "2025-01-01", "valueString": "positive"},
    ])  # fmt: skip
    result = screen(src, as_of=date(2025, 6, 30), out_dir=tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["records_without_patient"]["Condition"] == 2
    assert run["records_without_patient"]["Observation"] == 1
    assert run["records_without_patient"]["MedicationRequest"] == 0
    assert list(result.patients["patient_id"]) == ["p1"]
