"""Flatten: resource dicts -> rows in the column order of engine.tables."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_cohort.engine.flatten import Flattener, make_line_filter
from fhir_cohort.engine.tables import (
    CONDITION_COLUMNS,
    MEDICATION_COLUMNS,
    OBSERVATION_COLUMNS,
    PATIENT_COLUMNS,
    Tables,
)
from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.sources import open_source

SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

RELEVANT = {
    (ICD10, "M3214"),  # SLE glomerular disease
    (SCT, "55464009"),  # SLE
    (SCT, "24484000"),  # severe
    (LOINC, "5130-2"),  # anti-dsDNA
    (LOINC, "82810-3"),  # pregnancy status
    (RXN, "6851"),  # methotrexate
    (RXN, "8640"),  # prednisone
}
WORDS = {"methotrexate", "prednisone", "rituximab"}
COLUMNS = {
    "patients": PATIENT_COLUMNS,
    "conditions": CONDITION_COLUMNS,
    "medications": MEDICATION_COLUMNS,
    "observations": OBSERVATION_COLUMNS,
}
SUBJ = {"reference": "Patient/p1"}


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def cc(*codings: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


def rows(resource: dict[str, Any], flattener: Flattener | None = None) -> list[dict[str, Any]]:
    """Rows as dicts (checking each has exactly its table's columns)."""
    f = flattener or Flattener(RELEVANT, WORDS)
    out = []
    for table, row in f.flatten(resource, "test:1"):
        assert len(row) == len(COLUMNS[table])
        out.append({"table": table, **dict(zip(COLUMNS[table], row, strict=True))})
    return out


def only(resource: dict[str, Any], flattener: Flattener | None = None) -> dict[str, Any]:
    got = rows(resource, flattener)
    assert len(got) == 1, got
    return got[0]


# -- Patient ---------------------------------------------------------------------------------


def test_patient_row() -> None:
    r = only({"resourceType": "Patient", "id": "p1", "birthDate": "1980-05", "gender": "female"})
    assert r == {
        "table": "patients",
        "patient_id": "p1",
        "birth_date_raw": "1980-05",
        "gender": "female",
        "deceased": None,
        "deceased_date": None,
        "deceased_high": None,
    }
    dead = only(
        {"resourceType": "Patient", "id": "p2", "deceasedDateTime": "2020-03-04T23:00:00-05:00"}
    )
    assert (dead["deceased"], dead["deceased_date"]) == (True, date(2020, 3, 4))
    alive = only({"resourceType": "Patient", "id": "p3", "deceasedBoolean": False})
    assert alive["deceased"] is False


# -- Condition / Procedure -------------------------------------------------------------------


def test_condition_rows_keep_only_relevant_codings_normalised() -> None:
    res = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": SUBJ,
        "clinicalStatus": cc(coding("http://terminology.hl7.org/CodeSystem/condition-clinical",
                                    "active")),
        "verificationStatus": cc(coding("x", "confirmed")),
        "code": cc(
            coding(ICD10, "m32.14", "Glomerular disease in SLE"),
            coding("urn:oid:2.16.840.1.113883.6.96", "55464009"),
            coding(SCT, "38341003", "Hypertension"),
        ),
        "severity": cc(coding(SCT, "24484000", "Severe")),
        "onsetPeriod": {"start": "2019-02-03"},
        "abatementDateTime": "2021-06-07T10:00:00Z",
        "recordedDate": "2019-02-05",
    }  # fmt: skip
    got = rows(res)
    assert [(r["system"], r["code"], r["display"]) for r in got] == [
        (ICD10, "M3214", "Glomerular disease in SLE"),
        (SCT, "55464009", None),
    ]
    first = got[0]
    assert first["patient_id"] == "p1" and first["resource_type"] == "Condition"
    assert (first["clinical_status"], first["verification_status"]) == ("active", "confirmed")
    assert first["onset_date"] == date(2019, 2, 3)
    assert (first["abatement_date"], first["has_abatement"]) == (date(2021, 6, 7), True)
    assert first["recorded_date"] == date(2019, 2, 5)
    assert first["severity_codes"] == (f"{SCT}|24484000",)


def test_condition_without_relevant_code_gives_nothing_and_no_checks() -> None:
    errors: list[MalformedResourceError] = []
    f = Flattener(RELEVANT, WORDS, on_error=errors.append)
    res = {"resourceType": "Condition", "id": "c", "code": cc(coding(SCT, "38341003"))}
    assert f.flatten(res, "x:1") == [] and errors == []


def test_condition_abatement_without_date() -> None:
    base = {"resourceType": "Condition", "id": "c", "subject": SUBJ,
            "code": cc(coding(SCT, "55464009"))}  # fmt: skip
    assert only({**base, "abatementString": "in childhood"})["has_abatement"] is True
    assert only({**base, "abatementBoolean": False})["has_abatement"] is False
    assert only(base)["has_abatement"] is False


def test_structural_problems_reported_or_raised() -> None:
    errors: list[MalformedResourceError] = []
    f = Flattener(RELEVANT, WORDS, on_error=errors.append)
    no_subject = {"resourceType": "Condition", "id": "c9", "code": cc(coding(SCT, "55464009"))}
    assert f.flatten(no_subject, "Condition.ndjson:7") == []
    group = {**no_subject, "subject": {"reference": "Group/1"}}
    assert f.flatten(group, "Condition.ndjson:8") == []
    no_id = {"resourceType": "Patient"}
    assert f.flatten(no_id, "Patient.ndjson:3") == []
    assert [(e.location, e.reason) for e in errors] == [
        ("Condition.ndjson:7", "Condition without a Patient subject"),
        ("Condition.ndjson:8", "Condition without a Patient subject"),
        ("Patient.ndjson:3", "Patient without id"),
    ]
    strict = Flattener(RELEVANT, WORDS, strict=True)
    with pytest.raises(MalformedResourceError):
        strict.flatten(no_subject, "Condition.ndjson:7")


def test_procedure_row() -> None:
    r = only({
        "resourceType": "Procedure", "id": "pr1", "status": "completed", "subject": SUBJ,
        "code": cc(coding(SCT, "55464009")),
        "performedPeriod": {"start": "2022-01-01T08:00:00+01:00", "end": "2022-01-02"},
    })  # fmt: skip
    assert r["resource_type"] == "Procedure"
    assert r["clinical_status"] == "procedure:completed"
    assert r["verification_status"] is None
    assert r["onset_date"] == date(2022, 1, 1)
    assert (r["abatement_date"], r["has_abatement"], r["severity_codes"]) == (None, False, ())


def test_unhandled_types_give_nothing() -> None:
    assert rows({"resourceType": "Encounter", "id": "e1", "subject": SUBJ}) == []


# -- Medication intervals (spec I3.1), one worked example per rule ------------------------------

MTX = {"medicationCodeableConcept": cc(coding(RXN, "6851", "methotrexate"), text="MTX 2.5 mg")}


def med(rtype: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": rtype, "id": "m", "subject": SUBJ, **MTX, **fields}


def interval(resource: dict[str, Any]) -> tuple[Any, Any, str]:
    r = only(resource)
    return r["start"], r["end"], r["end_rule"]


D = date


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        # MedicationStatement
        (med("MedicationStatement", status="completed",
             effectivePeriod={"start": "2023-01-01", "end": "2023-06-30"}),
         (D(2023, 1, 1), D(2023, 6, 30), "explicit")),
        (med("MedicationStatement", status="active", effectivePeriod={"start": "2023-01-01"}),
         (D(2023, 1, 1), None, "to_asof")),
        (med("MedicationStatement", status="on-hold", effectivePeriod={"start": "2023-01-01"}),
         (D(2023, 1, 1), None, "to_asof")),
        (med("MedicationStatement", status="completed", effectivePeriod={"start": "2023-01-01"}),
         (D(2023, 1, 1), None, "unknown")),
        (med("MedicationStatement", status="active", effectiveDateTime="2023-01-01"),
         (D(2023, 1, 1), None, "unknown")),
        (med("MedicationStatement", status="active", effectiveDateTime="2023-01-01",
             dosage=[{"timing": {"repeat": {"boundsDuration": {"value": 12, "code": "wk"}}}}]),
         (D(2023, 1, 1), D(2023, 3, 25), "explicit")),  # 84 days, inclusive end
        (med("MedicationStatement", status="completed", effectiveDateTime="2023-01-01",
             dosage=[{"timing": {"repeat": {"boundsPeriod": {"start": "2023-01-01",
                                                             "end": "2023-05-01"}}}}]),
         (D(2023, 1, 1), D(2023, 5, 1), "explicit")),
        # MedicationRequest: start from boundsPeriod, else validityPeriod, else authoredOn
        (med("MedicationRequest", status="completed", authoredOn="2022-12-20",
             dispenseRequest={"validityPeriod": {"start": "2022-12-25"}},
             dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {
                 "start": "2023-01-01", "end": "2023-04-01"}}}}]),
         (D(2023, 1, 1), D(2023, 4, 1), "explicit")),
        (med("MedicationRequest", status="completed", authoredOn="2022-12-20",
             dispenseRequest={"validityPeriod": {"start": "2023-01-01"}},
             dosageInstruction=[{"timing": {"repeat": {"boundsDuration": {"value": 3,
                                                                          "code": "mo"}}}}]),
         (D(2023, 1, 1), D(2023, 3, 31), "explicit")),  # 90 days, inclusive end
        (med("MedicationRequest", status="completed", authoredOn="2023-01-01",
             dispenseRequest={"expectedSupplyDuration": {"value": 30, "unit": "days",
                                                         "code": "d"},
                              "numberOfRepeatsAllowed": 2}),
         (D(2023, 1, 1), D(2023, 3, 31), "explicit")),  # 30 d x (1 + 2)
        (med("MedicationRequest", status="completed", authoredOn="2023-01-01",
             dispenseRequest={"expectedSupplyDuration": {"value": 4, "code": "wk"}}),
         (D(2023, 1, 1), D(2023, 1, 28), "explicit")),  # no repeats
        (med("MedicationRequest", status="active", authoredOn="2023-01-01T09:00:00-05:00"),
         (D(2023, 1, 1), None, "to_asof")),
        (med("MedicationRequest", status="stopped", authoredOn="2023-01-01"),
         (D(2023, 1, 1), None, "unknown")),
        # MedicationDispense
        (med("MedicationDispense", status="completed", whenHandedOver="2023-01-01T10:00:00Z",
             whenPrepared="2022-12-30", daysSupply={"value": 90, "unit": "days"}),
         (D(2023, 1, 1), D(2023, 3, 31), "explicit")),
        (med("MedicationDispense", status="completed", whenPrepared="2023-01-01",
             daysSupply={"value": 28}),
         (D(2023, 1, 1), D(2023, 1, 28), "explicit")),
        (med("MedicationDispense", status="completed", whenHandedOver="2023-01-01"),
         (D(2023, 1, 1), None, "unknown")),
        # MedicationAdministration
        (med("MedicationAdministration", status="completed",
             effectiveDateTime="2023-01-01T10:00:00Z"),
         (D(2023, 1, 1), D(2023, 1, 1), "per_dose")),
        (med("MedicationAdministration", status="completed",
             effectivePeriod={"start": "2023-01-01", "end": "2023-01-03"}),
         (D(2023, 1, 1), D(2023, 1, 3), "per_dose")),
    ],
)  # fmt: skip
def test_medication_intervals(resource: dict[str, Any], expected: tuple[Any, Any, str]) -> None:
    assert interval(resource) == expected


def test_medication_row_fields_and_routes() -> None:
    r = only(med(
        "MedicationRequest", status="active", intent="order", doNotPerform=False,
        authoredOn="2023-01-01",
        dosageInstruction=[
            {"route": cc(coding(SCT, "26643006", "Oral"), text="by mouth")},
            {"route": cc(coding(SCT, "26643006"), text="by mouth")},
        ],
    ))  # fmt: skip
    assert (r["resource_type"], r["status"], r["intent"], r["do_not_perform"]) == (
        "MedicationRequest", "active", "order", False,
    )  # fmt: skip
    assert (r["system"], r["code"], r["display"], r["text"]) == (
        RXN, "6851", "methotrexate", "MTX 2.5 mg",
    )  # fmt: skip
    assert r["route_codes"] == (f"{SCT}|26643006",) and r["route_text"] == "Oral; by mouth"
    assert (r["form_codes"], r["form_text"]) == ((), None)
    adm = only(med("MedicationAdministration", effectiveDateTime="2023-01-01",
                   dosage={"route": cc(coding(SCT, "47625008", "IV"))}))  # fmt: skip
    assert adm["route_codes"] == (f"{SCT}|47625008",) and adm["intent"] is None


def test_contained_medication_with_form() -> None:
    r = only({
        "resourceType": "MedicationStatement", "id": "ms", "status": "active", "subject": SUBJ,
        "contained": [{"resourceType": "Medication", "id": "med1",
                       "code": cc(coding(RXN, "8640", "prednisone"), text="Prednisone"),
                       "form": cc(coding(SCT, "385055001", "Tablet"), text="tablet")}],
        "medicationReference": {"reference": "#med1"},
        "effectivePeriod": {"start": "2023-01-01"},
    })  # fmt: skip
    assert (r["code"], r["text"]) == ("8640", "Prednisone")
    assert (r["form_codes"], r["form_text"]) == ((f"{SCT}|385055001",), "Tablet; tablet")


def test_separate_medication_before_and_after_its_user() -> None:
    medication = {"resourceType": "Medication", "id": "m1", "code": cc(coding(RXN, "6851"))}
    user = {
        "resourceType": "MedicationRequest",
        "id": "mr",
        "status": "active",
        "subject": SUBJ,
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2023-01-01",
    }
    f = Flattener(RELEVANT, WORDS)
    f.add_medication(medication)
    assert [row[7] for _, row in f.flatten(user, "x:1")] == ["6851"]
    # Stream order reversed: the user is held back until finish().
    g = Flattener(RELEVANT, WORDS)
    assert g.flatten(user, "x:1") == []
    assert g.flatten(medication, "y:1") == []
    late = g.finish()
    assert [(t, row[2], row[7]) for t, row in late] == [("medications", "mr", "6851")]
    assert g.finish() == []


def test_unresolved_medication_reference_falls_back_to_display() -> None:
    errors: list[MalformedResourceError] = []
    f = Flattener(RELEVANT, WORDS, on_error=errors.append, strict=True)
    user = {
        "resourceType": "MedicationRequest",
        "id": "mr",
        "status": "active",
        "subject": SUBJ,
        "medicationReference": {"reference": "Medication/zz", "display": "Rituximab 500 mg"},
    }
    assert f.flatten(user, "x:4") == []
    ((table, row),) = f.finish()
    assert table == "medications"
    r = dict(zip(MEDICATION_COLUMNS, row, strict=True))
    assert (r["system"], r["code"], r["text"]) == (None, None, "Rituximab 500 mg")
    assert [(e.location, e.reason) for e in errors] == [
        ("x:4", "MedicationRequest references a Medication not in the source")
    ]


def test_text_only_medication_rows() -> None:
    text_only = med("MedicationStatement", status="active", effectiveDateTime="2023-01-01",
                    medicationCodeableConcept={"text": "Prednisone 5 mg daily"})  # fmt: skip
    r = only(text_only)
    assert (r["system"], r["code"], r["display"], r["text"]) == (
        None, None, None, "Prednisone 5 mg daily",
    )  # fmt: skip
    # An unrelated product coded with an irrelevant code but a named ingredient: a text row.
    display_only = med(
        "MedicationRequest",
        status="active",
        medicationCodeableConcept=cc(coding(RXN, "105585", "Methotrexate 2.5 MG")),
    )
    assert only(display_only)["text"] == "Methotrexate 2.5 MG"
    # No word, no relevant code: nothing.
    lisinopril = med(
        "MedicationRequest",
        status="active",
        medicationCodeableConcept=cc(coding(RXN, "314076", "lisinopril 10 MG")),
    )
    assert rows(lisinopril) == []
    # words=None keeps every medication text.
    assert only(lisinopril, Flattener(RELEVANT, None))["text"] == "lisinopril 10 MG"


def test_ingredient_coded_medication() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "cmp",
        "ingredient": [{"itemCodeableConcept": cc(coding(RXN, "8640"))}],
    }
    f = Flattener(RELEVANT, WORDS)
    f.add_medication(medication)
    user = med("MedicationDispense", medicationReference={"reference": "Medication/cmp"})
    del user["medicationCodeableConcept"]
    assert only(user, f)["code"] == "8640"


# -- Medications: several dosage instructions, partial dates, open orders (spec v1.1) ---------

NDC = "http://hl7.org/fhir/sid/ndc"


def bounded(
    start: str | None = None,
    end: str | None = None,
    days: int | None = None,
    seq: int | None = None,
    route: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A dosage instruction bounded by a period and/or a duration in days."""
    rep: dict[str, Any] = {}
    if start or end:
        rep["boundsPeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if days is not None:
        rep["boundsDuration"] = {"value": days, "code": "d"}
    dose: dict[str, Any] = {"timing": {"repeat": rep}}
    if seq is not None:
        dose["sequence"] = seq
    if route is not None:
        dose["route"] = route
    return dose


def spans(resource: dict[str, Any]) -> list[tuple[Any, Any, str]]:
    return sorted((r["start"], r["end"], r["end_rule"]) for r in rows(resource))


def test_taper_of_three_sequenced_steps_is_three_exposures() -> None:
    # 40 mg for 7 days, then 20 mg for 7 days, then 10 mg for 14 days: not its first step.
    taper = med("MedicationRequest", status="completed", authoredOn="2023-01-01",
                dosageInstruction=[bounded(days=14, seq=3), bounded(days=7, seq=1),
                                   bounded(days=7, seq=2)])  # fmt: skip
    assert spans(taper) == [
        (D(2023, 1, 1), D(2023, 1, 7), "explicit"),
        (D(2023, 1, 8), D(2023, 1, 14), "explicit"),
        (D(2023, 1, 15), D(2023, 1, 28), "explicit"),
    ]
    # The same taper written with periods, a month-long gap before the last step.
    periods = med("MedicationStatement", status="completed", effectiveDateTime="2023-01-01",
                  dosage=[bounded("2023-01-01", "2023-01-31"), bounded("2023-02-01", "2023-02-28"),
                          bounded("2023-04-01", "2023-06-30")])  # fmt: skip
    assert spans(periods) == [
        (D(2023, 1, 1), D(2023, 1, 31), "explicit"),
        (D(2023, 2, 1), D(2023, 2, 28), "explicit"),
        (D(2023, 4, 1), D(2023, 6, 30), "explicit"),
    ]
    # Last step open-ended on an active order runs to S; unsequenced steps start together.
    open_last = med("MedicationRequest", status="active", authoredOn="2023-01-01",
                    dosageInstruction=[bounded(days=7, seq=1), {"sequence": 2}])  # fmt: skip
    assert spans(open_last) == [(D(2023, 1, 1), D(2023, 1, 7), "explicit"),
                                (D(2023, 1, 8), None, "to_asof")]  # fmt: skip
    together = med("MedicationRequest", status="completed", authoredOn="2023-01-01",
                   dosageInstruction=[bounded(days=7), bounded(days=30)])  # fmt: skip
    assert spans(together) == [(D(2023, 1, 1), D(2023, 1, 7), "explicit"),
                               (D(2023, 1, 1), D(2023, 1, 30), "explicit")]  # fmt: skip


def test_one_route_per_instruction() -> None:
    oral = cc(coding(SCT, "26643006", "Oral route"))
    inhaled = cc(coding("urn:oid:0.4.0.127.0.16.1.1.2.1", "20020000", "Inhalation use"))
    r = rows(med("MedicationRequest", status="completed", authoredOn="2023-01-01",
                 dosageInstruction=[bounded(days=7, seq=1, route=oral),
                                    bounded(days=7, seq=2, route=inhaled)]))  # fmt: skip
    assert [(x["start"], x["route_text"]) for x in r] == [
        (D(2023, 1, 1), "Oral route"), (D(2023, 1, 8), "Inhalation use"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({}, "to_asof"),
        ({"category": [cc(coding("http://terminology.hl7.org/CodeSystem/"
                                 "medicationrequest-category", "community"))]}, "to_asof"),
        ({"category": [cc(coding("http://terminology.hl7.org/CodeSystem/"
                                 "medicationrequest-category", "outpatient"))]}, "to_asof"),
        ({"category": [cc(coding("http://terminology.hl7.org/CodeSystem/"
                                 "medicationrequest-category", "inpatient"))]}, "unknown"),
        ({"courseOfTherapyType": cc(coding("http://terminology.hl7.org/CodeSystem/"
                                           "medicationrequest-course-of-therapy", "acute"))},
         "unknown"),
        ({"courseOfTherapyType": cc(coding("http://terminology.hl7.org/CodeSystem/"
                                           "medicationrequest-course-of-therapy",
                                           "continuous"))}, "to_asof"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("status", ["active", "on-hold"])
def test_open_inpatient_or_acute_order_has_unknown_duration(
    fields: dict[str, Any], rule: str, status: str
) -> None:
    r = med("MedicationRequest", status=status, authoredOn="2023-01-01", **fields)
    assert interval(r) == (D(2023, 1, 1), None, rule)
    # With an end the order is bounded whatever its category.
    r["dosageInstruction"] = [bounded(days=10)]
    assert interval(r) == (D(2023, 1, 1), D(2023, 1, 10), "explicit")


def test_partial_dates_are_ranges() -> None:
    r = only(med("MedicationStatement", status="completed",
                 effectivePeriod={"start": "2023-01", "end": "2026-04"}))  # fmt: skip
    # widest reading: first day of the start month .. last day of the end month
    assert (r["start"], r["end"]) == (D(2023, 1, 1), D(2026, 4, 30))
    assert (r["start_late"], r["end_early"]) == (D(2023, 1, 31), D(2026, 4, 1))
    y = only(med("MedicationDispense", whenHandedOver="2024", daysSupply={"value": 30}))
    assert (y["start"], y["start_late"], y["end_early"], y["end"]) == (
        D(2024, 1, 1), D(2024, 12, 31), D(2024, 1, 30), D(2025, 1, 29),
    )  # fmt: skip
    full = only(
        med(
            "MedicationStatement",
            status="completed",
            effectivePeriod={"start": "2023-01-05", "end": "2023-02-05T10:00:00Z"},
        )
    )
    assert (full["start"], full["start_late"], full["end_early"], full["end"]) == (
        D(2023, 1, 5), D(2023, 1, 5), D(2023, 2, 5), D(2023, 2, 5),
    )  # fmt: skip


@pytest.mark.parametrize("display", ["Inhalation", "Topical", "Ophthalmic route", "Per rectum"])
def test_route_and_form_displays_are_read(display: str) -> None:
    local = cc(coding("http://example.org/local-routes", "X1", display))
    r = only(med("MedicationRequest", status="active", authoredOn="2023-01-01",
                 dosageInstruction=[{"route": local}]))  # fmt: skip
    assert r["route_codes"] == ("http://example.org/local-routes|X1",)
    assert r["route_text"] == display
    f = Flattener(RELEVANT, WORDS)
    f.add_medication(
        {
            "resourceType": "Medication",
            "id": "f1",
            "code": MTX["medicationCodeableConcept"],
            "form": cc(coding(SCT, "X2", display), text="as given"),
        }
    )
    user = med("MedicationDispense", medicationReference={"reference": "Medication/f1"})
    del user["medicationCodeableConcept"]
    assert only(user, f)["form_text"] == f"{display}; as given"


def test_text_match_keeps_the_records_own_code() -> None:
    ndc = med(
        "MedicationDispense",
        whenHandedOver="2023-01-01",
        daysSupply={"value": 30},
        medicationCodeableConcept=cc(coding(NDC, "0054-4728-25", "PredniSONE 5 MG Tab")),
    )
    r = only(ndc)
    # The code as the engine compares it: NDC 4-4-2 normalised to 11 digits.
    assert (r["system"], r["code"], r["display"], r["text"]) == (
        NDC, "00054472825", "PredniSONE 5 MG Tab", "PredniSONE 5 MG Tab",
    )  # fmt: skip


def test_finish_reports_held_back_records_that_give_no_row() -> None:
    f = Flattener(RELEVANT, WORDS)
    unknown = {
        "resourceType": "MedicationRequest", "id": "r1", "subject": SUBJ, "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
    }  # fmt: skip
    assert f.flatten(unknown, "x:1") == []  # held back until Medication/m1 is seen
    f.add_medication(
        {"resourceType": "Medication", "id": "m1", "code": cc(coding(RXN, "314076", "lisinopril"))}
    )
    seen: list[dict] = []
    assert f.finish(seen.append) == []
    assert seen == [unknown]


@pytest.mark.parametrize("bad", [
    {"dosageInstruction": "x"}, {"dosageInstruction": [None, 3, {"timing": "x"}]},
    {"dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": "2023-13"}}}}]},
    {"dosageInstruction": [{"sequence": True}, {"sequence": "1"}]},
    {"category": "inpatient"}, {"courseOfTherapyType": [None]},
    {"dosageInstruction": [{"route": "oral"}, {"route": {"coding": [None, {"display": 3}]}}]},
])  # fmt: skip
def test_malformed_dosage_never_raises(bad: dict[str, Any]) -> None:
    r = only(med("MedicationRequest", status="active", authoredOn="2023-01-01", **bad))
    assert r["start"] == D(2023, 1, 1)


# Partial FHIR dates (year, year-month, full) and their day ranges.
partial_dates = st.dates(D(2015, 1, 1), D(2030, 12, 31)).flatmap(
    lambda d: st.sampled_from([d.isoformat(), d.isoformat()[:7], d.isoformat()[:4]])
)


def _days(lo: date, hi: date) -> set[date]:
    return {date.fromordinal(o) for o in range(lo.toordinal(), hi.toordinal() + 1)}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(partial_dates, partial_dates)
def test_partial_period_rows_bracket_every_reading(start: str, end: str) -> None:
    from fhir_cohort.fhir.wire import date_bounds

    r = only(med("MedicationStatement", status="completed",
                 effectivePeriod={"start": start, "end": end}))  # fmt: skip
    (s_lo, s_hi), (e_lo, e_hi) = date_bounds(start), date_bounds(end)
    # widest reading: first possible start .. last possible end; narrowest the reverse
    assert (r["start"], r["start_late"], r["end_early"], r["end"]) == (s_lo, s_hi, e_lo, e_hi)
    assert r["start"] <= r["start_late"] and r["end_early"] <= r["end"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(partial_dates, st.integers(1, 400))
def test_partial_supply_rows_shift_with_the_start(handed: str, days: int) -> None:
    from fhir_cohort.fhir.wire import date_bounds

    r = only(med("MedicationDispense", whenHandedOver=handed, daysSupply={"value": days}))
    lo, hi = date_bounds(handed)
    # a supply of N days from any reading D covers D .. D+N-1
    assert (r["start"], r["end_early"]) == (lo, date.fromordinal(lo.toordinal() + days - 1))
    assert (r["start_late"], r["end"]) == (hi, date.fromordinal(hi.toordinal() + days - 1))


step = st.tuples(st.dates(D(2020, 1, 1), D(2025, 12, 31)), st.integers(0, 200))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(step, min_size=1, max_size=6),
    st.sampled_from(["MedicationRequest", "MedicationStatement"]),
)
def test_instruction_rows_cover_exactly_the_union(
    steps: list[tuple[date, int]], rtype: str
) -> None:
    ivs = [(s, date.fromordinal(s.toordinal() + n)) for s, n in steps]
    dosage = [bounded(s.isoformat(), e.isoformat()) for s, e in ivs]
    key = "dosageInstruction" if rtype == "MedicationRequest" else "dosage"
    out = rows(med(rtype, status="completed", authoredOn="2019-01-01", **{key: dosage}))
    covered = set().union(*(_days(x["start"], x["end"]) for x in out))
    assert covered == set().union(*(_days(s, e) for s, e in ivs))
    assert len(out) == len(set(ivs))  # one row per distinct instruction exposure


# -- Observation ------------------------------------------------------------------------------


def obs(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final", "subject": SUBJ,
            "code": cc(coding(LOINC, "5130-2", "dsDNA Ab")), **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected_date"),
    [
        ({"effectiveDateTime": "2024-01-02T23:00:00-08:00", "issued": "2024-01-05"},
         date(2024, 1, 2)),
        ({"effectivePeriod": {"start": "2024-01-03"}}, date(2024, 1, 3)),
        ({"effectiveInstant": "2024-01-04T00:00:00Z"}, date(2024, 1, 4)),
        ({"issued": "2024-01-05T10:00:00.000+01:00"}, date(2024, 1, 5)),
        ({}, None),
    ],
)  # fmt: skip
def test_observation_date(fields: dict[str, Any], expected_date: date | None) -> None:
    assert only(obs(**fields))["date"] == expected_date


@pytest.mark.parametrize(
    ("quantity", "unit", "unit_code"),
    [
        ({"unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
         "mg/dL", "mg/dL"),
        # The UCUM code is kept apart from the unit text it may differ from.
        ({"unit": "mL/min/1.73m2", "system": "http://unitsofmeasure.org",
          "code": "mL/min/{1.73_m2}"}, "mL/min/1.73m2", "mL/min/{1.73_m2}"),
        # A code of another system is not UCUM: only the text (or that code) is kept.
        ({"unit": "cells/uL", "system": "http://example.org/units", "code": "CPU"},
         "cells/uL", None),
        ({"code": "g/L", "system": "http://unitsofmeasure.org"}, "g/L", "g/L"),
        ({"unit": "g/L"}, "g/L", None),
    ],
)  # fmt: skip
def test_observation_ucum_unit_code(quantity: dict[str, Any], unit: str, unit_code: str | None):
    q = only(obs(valueQuantity={"value": 1.5, **quantity}))
    assert (q["value_unit"], q["value_unit_code"]) == (unit, unit_code)


def test_observation_value_kinds() -> None:
    q = only(obs(valueQuantity={"value": 42, "comparator": ">", "unit": "IU/mL"},
                 referenceRange=[{"high": {"value": 30, "comparator": "<"}}],
                 interpretation=[cc(coding(V3, "H"))]))  # fmt: skip
    assert (q["value_type"], q["value_number"], q["value_comparator"], q["value_unit"]) == (
        "quantity", 42.0, ">", "IU/mL",
    )  # fmt: skip
    assert (q["ref_high"], q["ref_high_comparator"]) == (30.0, "<")
    assert q["interpretation_codes"] == (f"{V3}|H",)
    s = only(obs(valueString="Positive 1:320", referenceRange=[{"text": "<1:80"}]))
    assert (s["value_type"], s["value_string"], s["ref_high_string"]) == (
        "string", "Positive 1:320", "<1:80",
    )  # fmt: skip
    assert only(obs(referenceRange=[{"text": "normal"}]))["ref_high_string"] is None
    c = only(obs(valueCodeableConcept=cc(coding(SCT, "10828004", "Positive"))))
    assert (c["value_type"], c["value_codes"], c["value_string"]) == (
        "codeable", (f"{SCT}|10828004",), "Positive",
    )  # fmt: skip
    r = only(obs(valueRatio={"numerator": {"value": 1}, "denominator": {"value": 320}}))
    assert (r["value_type"], r["ratio_numerator"], r["ratio_denominator"]) == ("ratio", 1.0, 320.0)
    b = only(obs(valueBoolean=True))
    assert (b["value_type"], b["value_string"]) == ("boolean", "true")
    n = only(obs(dataAbsentReason=cc(coding("x", "not-performed"))))
    assert (n["value_type"], n["value_number"], n["value_codes"]) == ("none", None, ())


def test_observation_components() -> None:
    panel = {
        "resourceType": "Observation", "id": "panel", "status": "final", "subject": SUBJ,
        "code": cc(coding(LOINC, "99999-9", "ENA panel")),
        "effectiveDateTime": "2024-02-01",
        "component": [
            {"code": cc(coding(LOINC, "5130-2")), "valueQuantity": {"value": 5},
             "interpretation": [cc(coding(V3, "N"))]},
            {"code": cc(coding(LOINC, "11111-1")), "valueQuantity": {"value": 9}},
        ],
    }  # fmt: skip
    r = only(panel)
    assert (r["resource_id"], r["code"], r["value_number"], r["date"]) == (
        "panel", "5130-2", 5.0, date(2024, 2, 1),
    )  # fmt: skip
    assert r["interpretation_codes"] == (f"{V3}|N",)


def test_rows_build_tables() -> None:
    f = Flattener(RELEVANT, WORDS)
    found: dict[str, list[tuple]] = {k: [] for k in COLUMNS}
    for res in (
        {"resourceType": "Patient", "id": "p1"},
        obs(valueString="neg"),
        med("MedicationStatement", status="active", effectivePeriod={"start": "2023-01-01"}),
        {"resourceType": "Condition", "id": "c", "subject": SUBJ,
         "code": cc(coding(SCT, "55464009"))},
    ):  # fmt: skip
        for table, row in f.flatten(res, "x:1"):
            found[table].append(row)
    t = Tables.from_rows(**found)
    assert [len(t.patients), len(t.conditions), len(t.medications), len(t.observations)] == [
        1, 1, 1, 1,
    ]  # fmt: skip


# -- line filter ------------------------------------------------------------------------------

LINE_FILTER = make_line_filter(RELEVANT, WORDS)


def test_line_filter_examples() -> None:
    keep = [
        {"resourceType": "Patient", "id": "x"},
        {"resourceType": "Medication", "id": "x"},
        {"resourceType": "Condition", "code": cc(coding(ICD10, "M32.14"))},
        med("MedicationRequest", medicationReference={"reference": "Medication/1"}),
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "PREDNISONE"}},
    ]
    for r in keep:
        assert LINE_FILTER(orjson.dumps(r))
    drop = {"resourceType": "Condition", "subject": SUBJ, "code": cc(coding(SCT, "38341003"))}
    assert not LINE_FILTER(orjson.dumps(drop))
    assert LINE_FILTER(b'{"resourceType" : "Patient", "id": "x"}\n')


CODES = [
    (ICD10, "M32.14"), (ICD10, "m3214"), (ICD10, " M32.14 "), (SCT, "55464009"),
    (SCT, "38341003"), (LOINC, "5130-2"), (LOINC, "11111-1"), (RXN, "6851"), (RXN, "314076"),
    ("urn:oid:2.16.840.1.113883.6.96", "55464009"), (SCT, "24484000"), (None, "6851"),
    (ICD10, "\u2003M32.14"), (SCT, "55464009\u00a0"), (RXN, "8640\n"),  # need JSON escapes
]  # fmt: skip
TEXTS = ["Prednisone 5 mg", "methoTREXATE", "lisinopril", "rituximab-abbs", 'x"y', "é", ""]

codings_st = st.lists(
    st.builds(
        lambda sc, disp: {k: v for k, v in
                          (("system", sc[0]), ("code", sc[1]), ("display", disp)) if v},
        st.sampled_from(CODES), st.one_of(st.none(), st.sampled_from(TEXTS), st.text()),
    ),
    max_size=3,
)  # fmt: skip
concepts = st.builds(
    lambda cs, t: {"coding": cs, **({"text": t} if t is not None else {})},
    codings_st, st.one_of(st.none(), st.sampled_from(TEXTS), st.text()),
)  # fmt: skip
subject = st.sampled_from([SUBJ, {"reference": "urn:uuid:1"}, {}, {"reference": "Group/1"}])


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    rtype = draw(st.sampled_from([
        "Condition", "Procedure", "Observation", "MedicationRequest", "MedicationStatement",
        "MedicationDispense", "MedicationAdministration", "Encounter", "Patient",
    ]))  # fmt: skip
    r: dict[str, Any] = {"resourceType": rtype, "id": draw(st.text(min_size=1, max_size=5))}
    r["subject"] = draw(subject)
    if rtype.startswith("Medication"):
        how = draw(st.sampled_from(["cc", "contained", "ref"]))
        if how == "cc":
            r["medicationCodeableConcept"] = draw(concepts)
        elif how == "contained":
            r["contained"] = [{"resourceType": "Medication", "id": "c", "code": draw(concepts)}]
            r["medicationReference"] = {"reference": "#c"}
        else:
            r["medicationReference"] = {
                "reference": "Medication/sep",
                "display": draw(st.sampled_from(TEXTS)),
            }
        r["status"] = draw(st.sampled_from(["active", "completed", "stopped"]))
    else:
        r["code"] = draw(concepts)
        if rtype == "Observation":
            r["component"] = [{"code": draw(concepts), "valueString": draw(st.text())}]
            r["valueCodeableConcept"] = draw(concepts)
    # Writers order keys freely: resourceType may follow contained resources.
    keys = draw(st.permutations(list(r)))
    return {k: r[k] for k in keys}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(resources(), st.booleans())
def test_line_filter_never_rejects_a_line_that_gives_rows(
    resource: dict[str, Any], known_medication: bool
) -> None:
    f = Flattener(RELEVANT, WORDS)
    if known_medication:
        f.add_medication({"resourceType": "Medication", "id": "sep",
                          "code": cc(coding(RXN, "6851"))})  # fmt: skip
    out = f.flatten(copy.deepcopy(resource), "x:1") + f.finish()
    if out:
        assert LINE_FILTER(orjson.dumps(resource))
    # Same property with any-text mode (words=None).
    g = Flattener(RELEVANT, None)
    if g.flatten(copy.deepcopy(resource), "x:1") + g.finish():
        assert make_line_filter(RELEVANT, None)(orjson.dumps(resource))


# -- the real Synthea export -------------------------------------------------------------------


def test_synthea_export_flattens_without_errors(synthea13: Path) -> None:
    errors: list[MalformedResourceError] = []
    # Synthea codes lupus patients as SNOMED 200936003; none of these 13 has it.
    relevant = RELEVANT | {(SCT, "200936003"), (RXN, "314076")}
    f = Flattener(relevant, WORDS, on_error=errors.append)
    filt = make_line_filter(relevant, WORDS)
    counts: dict[str, int] = {}
    filtered_counts: dict[str, int] = {}
    src = open_source(synthea13)
    for res, loc in src.iter_resources(on_error=errors.append):
        for table, _ in f.flatten(res, loc):
            counts[table] = counts.get(table, 0) + 1
    f2 = Flattener(relevant, WORDS, on_error=errors.append)
    for res, loc in src.iter_resources(on_error=errors.append, line_filter=filt):
        for table, _ in f2.flatten(res, loc):
            filtered_counts[table] = filtered_counts.get(table, 0) + 1
    assert errors == []
    assert counts["patients"] == 13
    assert "conditions" not in counts  # no lupus
    assert counts["medications"] > 0  # lisinopril 10 MG (314076) is in this export
    assert filtered_counts == counts


def test_line_filter_keeps_codes_spelled_with_blanks() -> None:
    """normalize_code drops blanks inside ICD codes, so the filter must keep such lines."""
    from fhir_cohort.engine.flatten import make_line_filter

    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    for rtype in ("Condition", None):
        f = make_line_filter([(icd, "M3214")], [], rtype)
        for value in ("M32.14", "m32.14", "M32 .14", " M32.14 ", "M3214"):
            line = (
                '{"resourceType":"Condition","id":"c","code":{"coding":[{"system":"'
                + icd
                + '","code":"'
                + value
                + '"}]},"subject":{"reference":"Patient/p"}}\n'
            )
            assert f(line.encode()), (rtype, value)
        assert not f(b'{"resourceType":"Condition","code":{"coding":[{"code":"I10"}]}}\n')
