"""Real-world medication encodings screen end to end: NDC in any layout, SNOMED product coded
by display only, tall-man free text, anifrolumab's NDC, local routes in v3 / EDQM / dm+d."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from fhir_cohort.pipeline import screen

NDC = "http://hl7.org/fhir/sid/ndc"
SCT = "http://snomed.info/sct"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
EDQM = "http://standardterms.edqm.eu"


def _statement(rid: str, concept: dict, route: dict | None = None) -> dict:
    res = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept,
        "effectivePeriod": {"start": "2025-06-01", "end": "2026-06-01"},
    }
    if route:
        res["dosage"] = [{"route": route}]
    return res


def _screen(tmp_path: Path, statements: list[dict]) -> dict[str, str]:
    """Screen one patient; note of each medication record's therapy evidence row by id."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}
    (tmp_path / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    lines = "\n".join(json.dumps(s) for s in statements) + "\n"
    (tmp_path / "MedicationStatement.ndjson").write_text(lines)
    ev = screen(tmp_path, as_of=date(2026, 6, 1)).evidence
    ev = ev[(ev["criterion_id"] == "therapy") & ev["resource_id"].notna()]
    return dict(zip(ev["resource_id"], ev["note"].astype(str), strict=True))


@pytest.mark.parametrize("ndc", ["68462-502-01", "68462-0502-01", "68462050201"])
def test_ndc_in_any_layout_names_the_agent(tmp_path: Path, ndc: str) -> None:
    notes = _screen(tmp_path, [_statement("m1", {"coding": [{"system": NDC, "code": ndc}]})])
    assert notes["m1"].startswith("azathioprine (immunosuppressants)")


def test_codes_displays_and_text_of_every_kind(tmp_path: Path) -> None:
    notes = _screen(
        tmp_path,
        [
            _statement("anifro", {"coding": [{"system": NDC, "code": "0310-3040-00"}]}),
            _statement(
                "snomed",
                {
                    "coding": [
                        {"system": SCT, "code": "0", "display": "Product containing prednisolone"}
                    ]
                },
            ),
            _statement("tallman", {"text": "azaTHIOprine 50MG TABS 1 PO BID"}),
            _statement("substance", {"coding": [{"system": SCT, "code": "387420009"}]}),
            _statement(
                "inhaled",
                {"text": "budesonide 180 mcg"},
                {"coding": [{"system": V3_ROUTE, "code": "RESPINHL"}]},
            ),
            _statement(
                "skin",
                {"text": "hydrocortisone 1%"},
                {"coding": [{"system": EDQM, "code": "20003000"}]},
            ),
            _statement(
                "dmd",
                {"text": "prednisolone 0.5% drops"},
                {"coding": [{"system": SCT, "code": "18679011000001101"}]},
            ),
            _statement(
                "oral",
                {"text": "prednisone 5 mg"},
                {"coding": [{"system": EDQM, "code": "20053000"}]},
            ),
        ],
    )
    assert notes["anifro"].startswith("anifrolumab (immunosuppressants)")
    assert notes["snomed"].startswith("prednisolone (glucocorticoids) matched by text")
    assert notes["substance"].startswith("cyclophosphamide (immunosuppressants)")
    assert notes["tallman"].startswith("azathioprine (immunosuppressants) matched by text")
    for rid in ("inhaled", "skin", "dmd"):
        assert "not counted" in notes[rid], rid
    assert notes["oral"].startswith("prednisone (glucocorticoids)")
