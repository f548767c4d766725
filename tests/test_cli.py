"""The CLI through its real entry point (the installed console script)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.cli import EXIT_CRITERIA, EXIT_DATA, EXIT_OK

EXE = shutil.which("fhir-cohort") or str(Path(sys.executable).parent / "fhir-cohort")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


def test_help_explains_commands_and_exit_codes() -> None:
    top = run("--help")
    assert top.returncode == EXIT_OK
    assert "screen" in top.stdout and "valuesets" in top.stdout and "exit codes" in top.stdout
    sub = run("screen", "--help")
    for option in ("--source", "--criteria", "--as-of", "--out", "--strict", "--validate"):
        assert option in sub.stdout


def test_valuesets_lists_every_value_set() -> None:
    out = run("valuesets")
    assert out.returncode == EXIT_OK
    for vs in ("sle", "glucocorticoids", "autoantibodies", "serious_comorbidity"):
        assert f"\n{vs} " in out.stdout


def test_screen_demo_writes_private_outputs(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    res = run("screen", "--as-of", "2026-11-24", "--out", str(out_dir))
    assert res.returncode == EXIT_OK, res.stderr
    assert "all patients" in res.stdout and str(out_dir) in res.stdout
    names = {"patients.csv", "evidence.csv", "attrition.csv", "group.json", "run.json"}
    assert names <= {p.name for p in out_dir.iterdir()}
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o600
    patients = pd.read_csv(out_dir / "patients.csv", dtype=str)
    run_rec = json.loads((out_dir / "run.json").read_text())
    assert run_rec["as_of"] == "2026-11-24"
    assert run_rec["counts"]["patients"] == len(patients) == 496
    assert len(run_rec["criteria"]["sha256"]) == 64
    assert "sle" in run_rec["value_sets"]


def test_screen_synthea_has_no_errors_and_no_candidates(tmp_path: Path, synthea13: Path) -> None:
    res = run(
        "screen",
        "--source",
        str(synthea13),
        "--as-of",
        "2026-11-24",
        "--out",
        str(tmp_path),
        "--validate",
    )
    assert res.returncode == EXIT_OK, res.stderr
    run_rec = json.loads((tmp_path / "run.json").read_text())
    assert run_rec["skipped"] == {} and run_rec["errors"] == []
    assert run_rec["read"]["Patient"] == 13
    assert run_rec["read"]["MedicationRequest"] == 1745
    patients = pd.read_csv(tmp_path / "patients.csv", dtype=str)
    assert len(patients) == 13
    assert set(patients["status"]) == {"ineligible"}
    assert (patients["sle"] == "not_met").all()
    group = json.loads((tmp_path / "group.json").read_text())
    assert group["quantity"] == 0 and "member" not in group


@pytest.mark.parametrize(
    ("content", "code"),
    [("criteria: []\nid: x\n", EXIT_CRITERIA), (None, EXIT_DATA)],
)
def test_errors_map_to_exit_codes(tmp_path: Path, content: str | None, code: int) -> None:
    if content is not None:
        crit = tmp_path / "bad.yaml"
        crit.write_text(content)
        res = run("screen", "--criteria", str(crit), "--out", str(tmp_path / "o"))
    else:
        res = run("screen", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert res.returncode == code
    assert res.stderr.startswith("fhir-cohort: error:")
    assert "Traceback" not in res.stderr


def test_strict_stops_on_a_malformed_line_and_names_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Patient.000.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}\n'
        '{"resourceType": "Patient", "id": "p2", "birthDate": "19\n'
    )
    lenient = run("screen", "--source", str(src), "--out", str(tmp_path / "a"), "-q")
    assert lenient.returncode == EXIT_OK
    rec = json.loads((tmp_path / "a" / "run.json").read_text())
    assert rec["skipped"] == {"Patient": 1}
    assert rec["errors"][0]["location"].endswith("Patient.000.ndjson:2")
    strict = run("screen", "--source", str(src), "--out", str(tmp_path / "b"), "--strict")
    assert strict.returncode == EXIT_DATA
    assert "Patient.000.ndjson:2" in strict.stderr
    # No resource content (PHI) in the message.
    assert "19" not in strict.stderr.split("Patient.000.ndjson:2", 1)[1]


def test_unmapped_csv_lists_what_a_synthea_export_codes_outside_the_value_sets(
    tmp_path: Path, synthea13: Path
) -> None:
    source = synthea13
    res = run(
        "screen", "--source", str(source), "--as-of", "2026-11-24", "--out", str(tmp_path), "-q"
    )
    assert res.returncode == EXIT_OK, res.stderr
    table = pd.read_csv(tmp_path / "unmapped.csv", dtype={"code": str}, keep_default_na=False)
    found = {(r.resource_type, r.code): r for r in table.itertuples()}
    # Counted by hand in the export (grep of its NDJSON files).
    hypertension = found[("Condition", "59621000")]
    assert hypertension.system == "http://snomed.info/sct" and hypertension.count == 2
    assert hypertension.display == "Essential hypertension (disorder)"
    lisinopril = found[("MedicationRequest", "314076")]
    assert lisinopril.display == "lisinopril 10 MG Oral Tablet" and lisinopril.count == 238
    run_rec = json.loads((tmp_path / "run.json").read_text())
    assert run_rec["unmapped"]["per_type"]["MedicationRequest"]["records"] >= 238


def test_unmapped_csv_lists_hba1c_from_a_synthea_style_observation_file(tmp_path: Path) -> None:
    """synthea-bulk-13 has no Observation file: Synthea's own HbA1c coding (LOINC 4548-4, as
    its heart/cardiac_labs module writes it) in a Bulk Observation file is listed with its
    count; with --unmapped-text a free-text medication is listed by its text."""
    src = tmp_path / "src"
    src.mkdir()
    obs = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {
                        "system": "http://loinc.org",
                        "code": "4548-4",
                        "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                    }
                ],
                "text": "Hemoglobin A1c/Hemoglobin.total in Blood",
            },
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-01-01",
            "valueQuantity": {"value": 5.9, "unit": "%", "code": "%"},
        }
        for i in range(17)
    ]
    med = {
        "resourceType": "MedicationStatement",
        "id": "m1",
        "status": "active",
        "medicationCodeableConcept": {"text": "HOUSE MIXTURE 10ML PO"},
        "subject": {"reference": "Patient/p1"},
    }
    (src / "Observation.000.ndjson").write_text("\n".join(json.dumps(o) for o in obs) + "\n")
    (src / "MedicationStatement.000.ndjson").write_text(json.dumps(med) + "\n")
    (src / "Patient.000.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    out = tmp_path / "out"
    res = run(
        "screen",
        "--source",
        str(src),
        "--as-of",
        "2026-11-24",
        "--out",
        str(out),
        "-q",
        "--unmapped-text",
    )
    assert res.returncode == EXIT_OK, res.stderr
    table = pd.read_csv(out / "unmapped.csv", dtype={"code": str}, keep_default_na=False)
    rows = {(r.resource_type, r.system, r.code, r.display, r.count) for r in table.itertuples()}
    assert (
        "Observation",
        "http://loinc.org",
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        17,
    ) in rows
    assert ("MedicationStatement", "", "", "HOUSE MIXTURE 10ML PO", 1) in rows
    assert json.loads((out / "run.json").read_text())["unmapped"]["free_text_listed"] is True
