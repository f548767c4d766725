"""The shipped value_sets/*.json: FHIR-valid, sourced, and consistent with the trial spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.conceptmap import ConceptMap
from fhir.resources.R4B.valueset import ValueSet as FhirValueSet

from fhir_cohort.terminology import Terminology, default_directory

FOLDER = default_directory()
EXT_SOURCE = "https://fhir-cohort.github.io/StructureDefinition/source"
EXT_CONFIRMED = "https://fhir-cohort.github.io/StructureDefinition/confirmed"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

REQUIRED_IDS = [
    "sle",
    "lupus_unspecified",
    "sle_not_counted",
    "lupus_nephritis",
    "lupus_nephritis_severe_class",
    "cns_lupus",
    "seizure",
    "psychosis",
    "organic_brain_syndrome",
    "headache",
    "pregnancy",
    "lactation",
    "delivery",
    "pregnancy_status",
    "pregnancy_status_pregnant",
    "pregnancy_test_positive",
    "pregnancy_or_puerperium",
    "breastfeeding_status",
    "breastfeeding_status_breastfeeding",
    "hcg",
    "serious_comorbidity",
    "dialysis_procedures",
    "autoantibodies",
    "result_positive",
    "result_negative",
    "result_equivocal",
    "interpretation_positive",
    "interpretation_negative",
    "interpretation_equivocal",
    "glucocorticoids",
    "immunosuppressants",
    "antimalarials",
    "non_systemic_routes",
    "non_systemic_forms",
    # NCT04221477 (docs/trials/NCT04221477.md)
    "egfr",
    "urine_protein_creatinine_24h",
    "urine_protein_creatinine_other",
    "kidney_biopsy",
    "kidney_transplant",
    "kidney_failure_dialysis",
    "ckd_stage_4_5",
    "chronic_infection",
    "anti_cd20",
    "cyclophosphamide",
    "calcineurin_inhibitors",
]
# Value sets of the other trials (scripts/value_sets_trials.py), one list per trial.
TRIAL_IDS = {
    "NCT02504489": [
        "nsclc",
        "lung_cancer_unspecified",
        "lung_cancer_not_nsclc",
        "malignancy_other_than_lung",
        "myocardial_infarction",
        "arrhythmia",
        "heart_failure",
        "hiv",
        "viral_hepatitis",
        "stroke_tia",
        "ibd_or_ileus",
        "peptic_ulcer",
        "gilbert_syndrome",
        "ecog_performance_status",
        "ecog_0_to_2",
        "ecog_3_to_5",
        "lab_hemoglobin",
        "lab_neutrophils",
        "lab_platelets",
        "lab_bilirubin_total",
        "lab_ast",
        "lab_alt",
        "bp_systolic",
        "bp_diastolic",
        "lab_creatinine",
        "docetaxel",
        "platinum_agents",
        "antineoplastic_agents",
        "antineoplastic_dual_use",
    ],
}
MAPS = (
    "rxnorm-product-ingredient.json",
    "rxnorm-ingredient-moiety.json",
    "ndc-rxnorm.json",
    "snomed-rxnorm-ingredient.json",
)
# Agents known by name and name synonyms (not a FHIR resource; tests/terminology/
# test_medication_agents.py checks it).
AGENT_NAMES = "medication-agents.json"
VS_FILES = sorted(p for p in FOLDER.glob("*.json") if p.name not in (*MAPS, AGENT_NAMES))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def test_every_contract_id_has_a_file() -> None:
    every = REQUIRED_IDS + [vs_id for ids in TRIAL_IDS.values() for vs_id in ids]
    assert sorted(p.stem for p in VS_FILES) == sorted(every)


@pytest.mark.parametrize("path", VS_FILES, ids=lambda p: p.stem)
def test_value_set_is_valid_r4b_with_contract_shape(path: Path) -> None:
    data = _load(path)
    vs = FhirValueSet.model_validate(data)
    assert vs.url == f"https://fhir-cohort.github.io/ValueSet/{path.stem}"
    assert vs.status == "active"
    assert vs.version
    assert vs.description and len(vs.description) > 40
    assert vs.compose.include
    for include in vs.compose.include:
        assert include.system and include.concept
        for concept in include.concept:
            assert concept.code and concept.display


@pytest.mark.parametrize("path", VS_FILES, ids=lambda p: p.stem)
def test_every_concept_has_a_source_and_confirmed_flag(path: Path) -> None:
    for include in _load(path)["compose"]["include"]:
        for concept in include["concept"]:
            ext = {e["url"]: e for e in concept.get("extension", [])}
            assert ext[EXT_SOURCE]["valueString"].strip(), concept["code"]
            assert ext[EXT_CONFIRMED]["valueCode"] in ("yes", "partial"), concept["code"]


@pytest.mark.parametrize("name", MAPS)
def test_concept_maps_are_valid_r4b(name: str) -> None:
    data = _load(FOLDER / name)
    cm = ConceptMap.model_validate(data)
    assert cm.group and cm.group[0].element
    for element in data["group"][0]["element"]:
        assert element["extension"][0]["valueString"].strip()


def test_no_code_is_both_sle_and_not_counted_or_unspecified(term: Terminology) -> None:
    sle = term.value_set("sle").concepts
    assert not sle & term.value_set("sle_not_counted").concepts
    assert not sle & term.value_set("lupus_unspecified").concepts


def test_sle_boundaries_follow_the_spec(term: Terminology) -> None:
    for code in ("M32.10", "M32.14", "M32.19", "M32.8", "M32.9"):
        assert term.contains("sle", ICD10, code)
    assert term.contains("sle", "http://hl7.org/fhir/sid/icd-9-cm", "710.0")
    assert term.contains("sle", SCT, "55464009")
    assert not term.contains("sle", ICD10, "M32.0")
    assert term.contains("sle_not_counted", ICD10, "M32.0")
    assert term.contains("sle_not_counted", ICD10, "L93.0")
    assert term.contains("lupus_unspecified", SCT, "200936003")


def test_severe_nephritis_is_the_class_iii_iv_v_subset(term: Terminology) -> None:
    severe = term.value_set("lupus_nephritis_severe_class").concepts
    assert severe <= term.value_set("lupus_nephritis").concepts
    assert {c for _, c in severe} == {"76521009", "36402006", "52042003"}
    assert term.contains("lupus_nephritis", ICD10, "M32.15")


def test_autoantibodies_exclude_plain_rnp_and_unconfirmed(term: Terminology) -> None:
    loinc = "http://loinc.org"
    assert term.contains("autoantibodies", loinc, "5130-0")  # anti-dsDNA
    assert term.contains("autoantibodies", loinc, "11090-8")  # anti-Sm
    assert term.contains("autoantibodies", loinc, "14030-1")  # Sm/RNP counts as anti-Sm
    for code in ("29374-6", "8091-1", "33939-6", "7465-1"):
        assert not term.contains("autoantibodies", loinc, code)


def test_interpretations_match_spec_rule_one(term: Terminology) -> None:
    v3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    codes = {
        vs: {c for _, c in term.value_set(vs).concepts}
        for vs in ("interpretation_positive", "interpretation_negative", "interpretation_equivocal")
    }
    assert codes["interpretation_positive"] == {"POS", "DET", "H", "HH", "HU", "A", "AA"}
    assert codes["interpretation_negative"] == {"NEG", "ND", "N", "L"}
    assert codes["interpretation_equivocal"] == {"IND", "E"}
    old_uri = "http://hl7.org/fhir/v3/ObservationInterpretation"
    assert term.contains("interpretation_positive", old_uri, "POS")
    assert term.contains("interpretation_positive", v3, "POS")


def test_pregnancy_sets_are_disjoint_where_outcomes_differ(term: Terminology) -> None:
    preg = term.value_set("pregnancy").concepts
    assert not preg & term.value_set("delivery").concepts
    assert term.contains("pregnancy", SCT, "72892002")  # Synthea "Normal pregnancy"
    assert term.contains("delivery", ICD10, "Z37.0")
    assert term.contains("delivery", SCT, "66348005")  # Synthea "Childbirth"
    assert term.contains("pregnancy_status_pregnant", "http://loinc.org", "LA15173-0")
    assert not term.contains("pregnancy_status_pregnant", SCT, "60001007")  # Not pregnant


def test_serious_comorbidity_covers_each_listed_illness(term: Terminology) -> None:
    for code in (
        "C50.911",
        "I50.9",
        "N18.6",
        "Z99.2",
        "K74.60",
        "K70.30",
        "B20",
        "Z21",
        "A15.0",
        "B18.1",
        "B18.2",
    ):
        assert term.contains("serious_comorbidity", ICD10, code), code
    assert not term.contains("serious_comorbidity", ICD10, "C44.91")  # skin BCC left out
    for code in ("46177005", "86406008", "128302006"):
        assert term.contains("serious_comorbidity", SCT, code)


def test_unconfirmed_agents_have_no_coded_rxcui(term: Terminology) -> None:
    """Quinacrine has no RxCUI in the sources; anifrolumab has products but no IN RxCUI."""
    names = {
        d.lower()
        for vs in ("immunosuppressants", "antimalarials")
        for d in term.value_set(vs).displays.values()
    }
    assert not any("quinacrine" in n for n in names)
    anifrolumab = {d for d in names if "anifrolumab" in d}
    assert anifrolumab and all("ml" in d for d in anifrolumab)  # products, not an ingredient
