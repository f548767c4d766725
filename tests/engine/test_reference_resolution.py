"""Issue 9 item 5: every resource type the reader maps x every reference form resolves only as
FHIR says, and the rest is counted as unresolved with its file:line (never by the URL tail)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cohort.engine.flatten import Flattener
from fhir_cohort.engine.read import read_tables
from fhir_cohort.engine.tables import MEDICATION_COLUMNS
from fhir_cohort.fhir.references import ReferenceResolver
from fhir_cohort.fhir.sources import open_source

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
RELEVANT = {(SCT, "55464009"), (LOINC, "5130-2"), (RXN, "6851"), (RXN, "8640")}
WORDS = {"methotrexate", "rituximab"}
BASE = "https://ehr.example.org/fhir"
OTHER = "https://elsewhere.example/fhir"
ROW_TYPES = (
    "Condition",
    "Procedure",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
)
TABLE = {"Condition": "conditions", "Procedure": "conditions", "Observation": "observations"}


def resource(rtype: str, subject: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": f"{rtype[:4].lower()}1"}
    if subject is not None:
        r["subject"] = subject
    if rtype.startswith("Medication"):
        r["status"] = "active"
        r["medicationCodeableConcept"] = {"coding": [{"system": RXN, "code": "6851"}]}
    elif rtype == "Observation":
        r["status"] = "final"
        r["code"] = {"coding": [{"system": LOINC, "code": "5130-2"}]}
    else:
        r["code"] = {"coding": [{"system": SCT, "code": "55464009"}]}
    r.update(extra)
    return r


CONTAINED_X = [{"resourceType": "Patient", "id": "x"}]
# (name, subject, bases, contained, expected patient id or unresolved form)
SUBJECTS: list[tuple[str, dict[str, Any], list[str], list[Any] | None, str]] = [
    ("relative", {"reference": "Patient/x"}, [], None, "=x"),
    ("versioned", {"reference": "Patient/x/_history/2"}, [], None, "=x"),
    ("typed", {"reference": "Patient/x", "type": "Patient"}, [], None, "=x"),
    ("absolute own base", {"reference": f"{BASE}/Patient/x"}, [BASE], None, "=x"),
    ("absolute own versioned", {"reference": f"{BASE}/Patient/x/_history/1"}, [BASE], None, "=x"),
    ("absolute other base", {"reference": f"{OTHER}/Patient/x"}, [BASE], None,
     "absolute_other_base"),
    ("absolute without base", {"reference": f"{BASE}/Patient/x"}, [], None, "absolute_no_base"),
    ("contained present", {"reference": "#x"}, [BASE], CONTAINED_X, "contained_patient"),
    ("contained absent", {"reference": "#x"}, [BASE], None, "contained_missing"),
    ("urn:uuid in NDJSON", {"reference": "urn:uuid:x"}, [BASE], None, "urn"),
    ("identifier only", {"identifier": {"system": "urn:mrn", "value": "x"}, "type": "Patient"},
     [BASE], None, "identifier"),
    ("type contradicts", {"reference": "Patient/x", "type": "Group"}, [], None, "type_mismatch"),
    ("conditional", {"reference": "Patient?identifier=x"}, [], None, "conditional"),
]  # fmt: skip


@pytest.mark.parametrize("rtype", ROW_TYPES)
@pytest.mark.parametrize(("name", "subject", "bases", "contained", "expected"), SUBJECTS)
def test_subject_sweep(
    rtype: str,
    name: str,
    subject: dict[str, Any],
    bases: list[str],
    contained: list[Any] | None,
    expected: str,
) -> None:
    errors: list[Any] = []
    f = Flattener(RELEVANT, WORDS, on_error=errors.append, refs=ReferenceResolver(bases))
    extra = {"contained": contained} if contained else {}
    out = f.flatten(resource(rtype, subject, **extra), "Some.ndjson:7") + f.finish()
    assert errors == []
    if expected.startswith("="):
        assert out and {row[0] for _, row in out} == {expected[1:]}
        assert {t for t, _ in out} == {TABLE.get(rtype, "medications")}
        assert not f.ledger.unresolved
    else:
        assert out == [], name
        assert dict(f.ledger.unresolved) == {(rtype, "subject", expected): 1}
        assert f.ledger.unresolved_at == [("Some.ndjson:7", rtype, "subject", expected)]


def _med_row(out: list[tuple[str, Any]]) -> dict[str, Any]:
    ((table, row),) = out
    assert table == "medications"
    return dict(zip(MEDICATION_COLUMNS, row, strict=True))


LOCAL_MED = {"resourceType": "Medication", "id": "m",
             "code": {"coding": [{"system": RXN, "code": "6851"}]}}  # fmt: skip
CONTAINED_M = [{"resourceType": "Medication", "id": "m",
                "code": {"coding": [{"system": RXN, "code": "8640"}]}}]  # fmt: skip
# (reference, bases, contained, expected code or unresolved form). The local Medication m is
# coded 6851, the contained one 8640; an unresolved reference falls back to its display.
MED_REFS: list[tuple[str, list[str], list[Any] | None, str]] = [
    ("Medication/m", [], None, "6851"),
    ("Medication/m/_history/4", [], None, "6851"),
    (f"{BASE}/Medication/m", [BASE], None, "6851"),
    (f"{OTHER}/Medication/m", [BASE], None, "absolute_other_base"),
    (f"{BASE}/Medication/m", [], None, "absolute_no_base"),
    ("#m", [], CONTAINED_M, "8640"),
    ("#m", [], None, "contained_missing"),
    ("urn:uuid:m", [], None, "urn"),
]


@pytest.mark.parametrize("rtype", [t for t in ROW_TYPES if t.startswith("Medication")])
@pytest.mark.parametrize(("ref", "bases", "contained", "expected"), MED_REFS)
def test_medication_reference_sweep(
    rtype: str, ref: str, bases: list[str], contained: list[Any] | None, expected: str
) -> None:
    f = Flattener(RELEVANT, WORDS, refs=ReferenceResolver(bases))
    f.add_medication(LOCAL_MED)
    r = resource(rtype, {"reference": "Patient/p"})
    del r["medicationCodeableConcept"]
    r["medicationReference"] = {"reference": ref, "display": "Rituximab 500 mg"}
    if contained:
        r["contained"] = contained
    row = _med_row(f.flatten(r, "M.ndjson:3") + f.finish())
    if expected.isdigit():
        assert row["code"] == expected and not f.ledger.unresolved
    else:
        # Never the local Medication m: the display alone, and the reference counted.
        assert (row["code"], row["text"]) == (None, "Rituximab 500 mg")
        assert dict(f.ledger.unresolved) == {(rtype, "medicationReference", expected): 1}


def _bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _read(path: Path, **kw: Any) -> tuple[Any, Any]:
    return read_tables(open_source(path), relevant=RELEVANT, medication_words=WORDS, **kw)


def test_bundle_references_resolve_within_their_bundle_only(tmp_path: Path) -> None:
    u_pat, u_med = "urn:uuid:0b8c3a3e-1", "urn:uuid:0b8c3a3e-2"
    entries = [
        {"fullUrl": u_pat, "resource": {"resourceType": "Patient", "id": "p1"}},
        {"fullUrl": f"{OTHER}/Patient/p2", "resource": {"resourceType": "Patient", "id": "p2"}},
        {"fullUrl": u_med, "resource": {**LOCAL_MED, "id": "m1"}},
        {"resource": resource("Condition", {"reference": u_pat}, id="c1")},
        {"resource": resource("Condition", {"reference": f"{OTHER}/Patient/p2"}, id="c2")},
        {"resource": resource("Condition", {"reference": "urn:uuid:not-here"}, id="c3")},
        {"resource": resource("Condition", {"reference": f"{OTHER}/Patient/p1"}, id="c4")},
        {"resource": {**resource("MedicationRequest", {"reference": u_pat}, id="mr1"),
                      "medicationReference": {"reference": u_med}}},
    ]  # fmt: skip
    del entries[-1]["resource"]["medicationCodeableConcept"]
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(_bundle(entries)))
    tables, report = _read(path)
    got = sorted(
        zip(tables.conditions["resource_id"], tables.conditions["patient_id"], strict=True)
    )
    # c2 names an entry's fullUrl; c4 another server's Patient p1 (not the entry): unresolved.
    assert got == [("c1", "p1"), ("c2", "p2")]
    assert list(tables.medications["code"]) == ["6851"]
    assert report.unresolved["per_form"] == {"absolute_no_base": 1, "urn": 1}
    assert sorted(d["location"] for d in report.unresolved["locations"]) == [
        f"{path}#entry[5]",
        f"{path}#entry[6]",
    ]


def test_ndjson_forms_and_bases_from_the_export(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"x"}\n')
    subjects = [s for _, s, _, _, _ in SUBJECTS]
    lines = [json.dumps(resource("Condition", s, id=f"c{i}")) for i, s in enumerate(subjects)]
    (tmp_path / "Condition.ndjson").write_text("\n".join(lines) + "\n")
    _, plain = _read(tmp_path)
    _, with_base = _read(tmp_path, base_urls=[BASE])
    assert plain.unresolved["bases"] == [] and with_base.unresolved["bases"] == [BASE]
    # The three references with the own base resolve only once the base is known; without a
    # base every absolute one is unresolved, the other server's included.
    assert plain.unresolved["total"] == with_base.unresolved["total"] + 3
    assert plain.unresolved["per_form"]["absolute_no_base"] == 4
    assert with_base.unresolved["per_form"]["absolute_other_base"] == 1
    locs = {d["location"] for d in with_base.unresolved["locations"]}
    assert f"{tmp_path / 'Condition.ndjson'}:6" in locs  # absolute other base, line 6
    text = json.dumps(with_base.unresolved)
    assert "elsewhere" not in text and '"x"' not in text  # no references, no ids


def test_unresolved_subject_is_not_an_unmapped_code(tmp_path: Path) -> None:
    """A record nobody's (its subject did not resolve) is counted once, as unresolved, and its
    relevant code is not reported as matching no value set."""
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"x"}\n')
    lines = [resource("Condition", {"reference": f"{OTHER}/Patient/x"}, id="c1")]
    (tmp_path / "Condition.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))
    tables, report = _read(tmp_path)
    assert tables.conditions.empty and report.unresolved["total"] == 1
    assert report.unmapped.rows() == []
