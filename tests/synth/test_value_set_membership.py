"""Every code the generator emits belongs to exactly the value sets its scenario intends.

This is what makes the expected answers trustworthy: a code that sat in one more value set
(say ICD-9 710.0 in lupus_nephritis) would silently change a criterion's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from fhir_cohort.synth import codes as C
from fhir_cohort.synth import iter_patients
from fhir_cohort.terminology import Terminology

AS_OF = date(2026, 11, 24)

# Code -> the value sets (of value_sets/) it must belong to, and no other.
INTENDED: dict[C.Code, set[str]] = {
    C.SLE: {"sle"},
    C.SLE_ORGAN: {"sle"},
    C.SLE_M3214: {"sle", "lupus_nephritis"},
    C.SLE_M329: {"sle"},
    C.SLE_M329_UNDOTTED: {"sle"},
    C.SLE_ICD9: {"sle"},
    C.LUPUS_UNSPECIFIED: {"lupus_unspecified"},
    C.DRUG_INDUCED_M320: {"sle_not_counted"},
    C.DISCOID_L930: {"sle_not_counted"},
    C.LN: {"sle", "lupus_nephritis"},
    C.LN_CLASS_II: {"sle", "lupus_nephritis"},
    C.LN_CLASS_IV: {"sle", "lupus_nephritis", "lupus_nephritis_severe_class"},
    C.CNS_LUPUS: {"sle", "cns_lupus"},
    C.SEIZURE: {"seizure"},
    C.EPILEPSY: {"seizure"},
    C.PSYCHOSIS: {"psychosis"},
    C.HEADACHE: {"headache"},
    C.MIGRAINE: {"headache"},
    C.PREGNANCY: {"pregnancy", "pregnancy_status_pregnant"},
    C.LACTATION: {"lactation", "breastfeeding_status_breastfeeding"},
    C.DELIVERY_O80: {"delivery"},
    C.PREGNANCY_STATUS: {"pregnancy_status"},
    C.HCG_URINE: {"hcg"},
    C.HEART_FAILURE: {"serious_comorbidity", "heart_failure"},
    C.HEART_FAILURE_I509: {"serious_comorbidity", "heart_failure"},
    C.HIV_B20: {"serious_comorbidity", "chronic_infection", "hiv"},
    C.MALIGNANCY: {"serious_comorbidity"},
    C.BREAST_CANCER: {"serious_comorbidity", "malignancy_other_than_lung"},
    C.ESKD: {"serious_comorbidity", "kidney_failure_dialysis"},
    C.DSDNA_IU: {"autoantibodies"},
    C.DSDNA_TITER: {"autoantibodies"},
    C.DSDNA_IF: {"autoantibodies"},
    C.NUCLEOSOME: {"autoantibodies"},
    C.SM_UNITS: {"autoantibodies"},
    C.SM_IF: {"autoantibodies"},
    C.SM_RNP: {"autoantibodies"},
    C.POSITIVE: {"result_positive"},
    C.NEGATIVE: {"result_negative"},
    C.I_POS: {"interpretation_positive"},
    C.I_HIGH: {"interpretation_positive"},
    C.I_NEG: {"interpretation_negative"},
    C.I_NORMAL: {"interpretation_negative"},
    C.I_IND: {"interpretation_equivocal"},
    C.ROUTE_TOPICAL: {"non_systemic_routes"},
    C.ROUTE_RESPIRATORY: {"non_systemic_routes"},
    C.PREDNISONE: {"glucocorticoids"},
    C.PREDNISONE_5_SCD: {"glucocorticoids"},
    C.HC_CREAM_SCD: {"glucocorticoids"},
    C.BUDESONIDE_DPI_SCD: {"glucocorticoids"},
    C.MMF: {"immunosuppressants"},
    C.MPA: {"immunosuppressants"},
    C.CELLCEPT_500_SBD: {"immunosuppressants"},
    C.AZATHIOPRINE: {"immunosuppressants"},
    C.METHOTREXATE: {"immunosuppressants", "antineoplastic_dual_use"},
    C.MTX_25_SCD: {"immunosuppressants", "antineoplastic_dual_use"},
    C.TACROLIMUS: {"immunosuppressants", "calcineurin_inhibitors"},
    C.CYCLOPHOSPHAMIDE: {"immunosuppressants", "cyclophosphamide", "antineoplastic_agents"},
    C.RITUXIMAB_SCD: {"immunosuppressants", "anti_cd20", "antineoplastic_agents"},
    C.BENLYSTA_400_SBD: {"immunosuppressants"},
    C.HYDROXYCHLOROQUINE: {"antimalarials"},
    # Noise: in no value set the criteria read.
    C.HYPERTENSION: set(),
    C.HYPERTENSION_I10: set(),
    C.DIABETES_T2: set(),
    C.DIABETES_E119: set(),
    C.LISINOPRIL: set(),
    C.METFORMIN: set(),
    C.ATORVASTATIN: set(),
    C.GLUCOSE: set(),
    C.CREATININE: {"lab_creatinine"},  # NCT02504489 reads it, NCT06038474 does not
    C.BODY_WEIGHT: set(),
    C.HEART_RATE: set(),
    C.COLONOSCOPY: set(),
    C.CHECKUP: set(),
    C.SEVERE: set(),  # a severity qualifier, named by the criteria file, not a value set
}
# Spec v1.1 codes. Value sets for them are being built elsewhere (issue 8), so these state what
# the spec demands without naming a value set the spec does not name: each code must be in
# every set of its first entry and in none of its second; ANY means "in some value set".
ANY = "<any value set>"
V11: dict[C.Code, tuple[set[str], set[str]]] = {
    C.SLE_M329_BLANK: ({"sle"}, {"sle_not_counted", "lupus_nephritis"}),
    C.HCG_QUANT: ({"hcg"}, set()),
    C.I_EQUIVOCAL: ({"interpretation_equivocal"}, {"interpretation_positive"}),
    C.BUDESONIDE: ({"glucocorticoids"}, {"immunosuppressants"}),
    C.HYDROCORTISONE: ({"glucocorticoids"}, {"immunosuppressants"}),
    C.CESAREAN: ({"delivery"}, {"pregnancy"}),
    # E4: every malignant neoplasm but skin BCC/SCC (C44); heart failure subtypes.
    C.CHF_CHRONIC: ({"serious_comorbidity"}, set()),
    C.MERKEL_C4A9: ({"serious_comorbidity"}, set()),
    C.CARCINOID_C7A00: ({"serious_comorbidity"}, set()),
    C.BCC_SKIN_C4491: (set(), {"serious_comorbidity"}),
    C.HEMODIALYSIS: ({ANY}, set()),
    C.DIALYSIS_DEPENDENCE_Z992: ({"serious_comorbidity"}, set()),
    # E3: antenatal codes are pregnancy, not delivery; suppressed lactation is not lactation.
    C.SUPERVISION_Z3400: ({ANY}, {"delivery", "lactation"}),
    C.HIGH_RISK_O0993: ({ANY}, {"delivery", "lactation"}),
    C.MATERNAL_CARE_O34211: ({ANY}, {"delivery", "lactation"}),
    C.FALSE_LABOUR_O479: ({ANY}, {"delivery", "lactation"}),
    C.SUPPRESSED_LACTATION_O925: (set(), {"lactation"}),
    C.PREG_TEST_POSITIVE_Z3201: ({ANY}, {"delivery", "lactation"}),
    C.BREASTFEEDING_STATUS: ({ANY}, set()),
    # Recognised by display or as a dose form; the spec names no value set for them.
    C.AZATHIOPRINE_SUBSTANCE: (set(), {"glucocorticoids", "antimalarials"}),
    C.FORM_OINTMENT: (set(), set()),
}
_BY_KEY = {(c.system, c.code): want for c, want in INTENDED.items()}
_V11_BY_KEY = {(c.system, c.code): rule for c, rule in V11.items()}


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return Terminology.load()


def _codings(node: Any) -> Iterator[tuple[str, str]]:
    """Every (system, code) under a resource, skipping status-like code systems."""
    if isinstance(node, dict):
        if (
            "system" in node
            and "code" in node
            and node["system"] in {C.SNOMED, C.ICD10, C.ICD9, C.LOINC, C.RXNORM, C.V3_INTERP}
        ):
            yield node["system"], node["code"]
        for v in node.values():
            yield from _codings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _codings(v)


def _emitted() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for rec in iter_patients(400, 3, AS_OF):
        for r in rec.resources:
            out.update(_codings(r))
    return out


def test_every_emitted_code_is_in_exactly_its_intended_value_sets(
    terminology: Terminology,
) -> None:
    vs_ids = terminology.ids()
    emitted = _emitted()
    assert len(emitted) > 40
    wrong = []
    for system, code in sorted(emitted):
        key = (system, code)
        assert key in _BY_KEY or key in _V11_BY_KEY, f"emitted code without an intent: {key}"
        member_of = {v for v in vs_ids if terminology.contains(v, system, code)}
        if key in _BY_KEY:
            if member_of != _BY_KEY[key]:
                wrong.append(f"{system}|{code}: in {sorted(member_of)}, want {_BY_KEY[key]}")
            continue
        need, never = _V11_BY_KEY[key]
        missing = (need - {ANY}) - member_of or (ANY in need and not member_of)
        if missing or member_of & never:
            wrong.append(f"{system}|{code}: in {sorted(member_of)}, need {need}, never {never}")
    assert wrong == []


def test_every_declared_code_is_emitted() -> None:
    # The table above is not stale: each entry is used by some patient.
    emitted = _emitted()
    unused = [c for c in (*INTENDED, *V11) if (c.system, c.code) not in emitted]
    assert not unused


def test_medication_agents(terminology: Terminology) -> None:
    def agent(code: C.Code) -> str:
        (match,) = terminology.agents_for_coding(code.system, code.code)
        return match.agent.name

    # mycophenolate mofetil and mycophenolic acid are one agent (the therapy-mmf-plus-mpa case)
    assert agent(C.MMF) == agent(C.MPA) == agent(C.CELLCEPT_500_SBD)
    assert agent(C.PREDNISONE_5_SCD) == agent(C.PREDNISONE)
    assert agent(C.MTX_25_SCD) == agent(C.METHOTREXATE)
    assert agent(C.BENLYSTA_400_SBD) == "belimumab"
    assert agent(C.RITUXIMAB_SCD) == "rituximab"
    (text,) = terminology.agents_for_text("mycophenolate mofetil (CellCept) 500 mg tablet")
    assert text.agent.name == agent(C.MMF)


def test_non_systemic_glucocorticoids_are_recognised(terminology: Terminology) -> None:
    for product, route in (
        (C.HC_CREAM_SCD, C.ROUTE_TOPICAL),
        (C.BUDESONIDE_DPI_SCD, C.ROUTE_RESPIRATORY),
    ):
        name = terminology.product_name(product.system, product.code)
        assert terminology.is_non_systemic(product_name=name), product
        assert terminology.is_non_systemic(route_codes=[f"{route.system}|{route.code}"])
    name = terminology.product_name(C.PREDNISONE_5_SCD.system, C.PREDNISONE_5_SCD.code)
    assert not terminology.is_non_systemic(product_name=name)
