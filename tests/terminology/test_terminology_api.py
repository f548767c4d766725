"""Terminology API: membership, normalisation, agents, text matching, non-systemic use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.errors import TerminologyError
from fhir_cohort.terminology import (
    Agent,
    Terminology,
    is_non_systemic_text,
    normalize_code,
    normalize_system,
)

SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def test_unknown_value_set_raises(term: Terminology) -> None:
    with pytest.raises(TerminologyError):
        term.value_set("no_such_set")


def test_missing_folder_raises(tmp_path) -> None:
    with pytest.raises(TerminologyError):
        Terminology.load(tmp_path / "absent")


def test_a_folder_is_parsed_once_per_process_until_a_file_changes(tmp_path) -> None:
    import os
    import shutil

    from fhir_cohort.terminology.core import default_directory

    assert Terminology.load() is Terminology.load()
    folder = tmp_path / "vs"
    shutil.copytree(default_directory(), folder)
    first = Terminology.load(folder)
    assert first is Terminology.load(folder) and first is not Terminology.load()
    # an edited value set is read again (same size, a new modification time)
    path = folder / "sle.json"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert Terminology.load(folder) is not first


def test_icd_membership_with_and_without_dots(term: Terminology) -> None:
    for code in ("M32.14", "M3214", "m32.14", " M32.14 "):
        assert term.contains("lupus_nephritis", ICD10, code)
    assert term.contains("sle", ICD9, "7100")
    assert term.value_set("sle").display(ICD10, "M3214") == (
        "Glomerular disease in systemic lupus erythematosus"
    )


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("urn:oid:2.16.840.1.113883.6.96", SCT),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10),
        ("urn:oid:2.16.840.1.113883.6.1", "http://loinc.org"),
        ("urn:oid:2.16.840.1.113883.6.88", RXNORM),
        ("http://www.nlm.nih.gov/research/umls/rxnorm/", RXNORM),
        (
            "http://hl7.org/fhir/v3/ObservationInterpretation",
            "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        ),
    ],
)
def test_normalize_system_aliases(alias: str, canonical: str) -> None:
    assert normalize_system(alias) == canonical


def test_membership_through_system_alias(term: Terminology) -> None:
    assert term.contains("sle", "urn:oid:2.16.840.1.113883.6.96", "55464009")


@given(
    st.sampled_from([ICD10, ICD9, SCT, RXNORM, "urn:oid:2.16.840.1.113883.6.90", "x"]),
    st.text(max_size=12),
)
def test_normalize_code_is_idempotent(system: str, code: str) -> None:
    once = normalize_code(system, code)
    assert normalize_code(system, once) == once


@given(st.from_regex(r"[A-Z][0-9]{2}\.[0-9A-Z]{1,4}", fullmatch=True))
def test_dotted_and_undotted_icd_agree(code: str) -> None:
    assert normalize_code(ICD10, code) == normalize_code(ICD10, code.replace(".", "").lower())


def test_codes_union_is_normalised(term: Terminology) -> None:
    union = term.codes(["sle", "lupus_nephritis"])
    assert (ICD10, "M3214") in union and (SCT, "55464009") in union


def test_cellcept_product_maps_to_mycophenolic_acid(term: Terminology) -> None:
    cellcept = [
        code
        for (system, code), name in term.value_set("immunosuppressants").displays.items()
        if system == RXNORM and "[cellcept]" in name.lower()  # NDC packages name it too
    ]
    assert cellcept
    matches = term.agents_for_coding(RXNORM, cellcept[0])
    assert [m.agent.name for m in matches] == ["mycophenolic acid"]
    assert matches[0].via == "product" and matches[0].confidence == "high"


def test_mofetil_and_acid_are_one_agent(term: Terminology) -> None:
    mofetil = term.agents_for_coding(RXNORM, "68149")[0].agent
    acid = term.agents_for_coding(RXNORM, "7145")[0].agent
    assert mofetil == acid == Agent("7145", "mycophenolic acid")
    assert term.agent_value_sets(acid) == {"immunosuppressants"}


def test_prednisone_scd_and_pin(term: Terminology) -> None:
    [m] = term.agents_for_coding(RXNORM, "198144")  # prednisone 1 MG Oral Tablet
    assert m.agent == Agent("8640", "prednisone")
    assert term.agent_value_sets(m.agent) == {"glucocorticoids"}
    [pin] = term.agents_for_coding("urn:oid:2.16.840.1.113883.6.88", "34372")
    assert pin.agent.name == "prednisolone" and pin.via == "ingredient"
    assert term.product_name(RXNORM, "198144") == "prednisone 1 MG Oral Tablet"


def test_non_rxnorm_or_unknown_codes_give_no_agent(term: Terminology) -> None:
    assert term.agents_for_coding(SCT, "198144") == []
    assert term.agents_for_coding(RXNORM, "161") == []  # acetaminophen: not a trial agent


def test_text_matching_finds_names_and_brands(term: Terminology) -> None:
    found = {
        m.agent.name
        for m in term.agents_for_text(
            "Started CELLCEPT 1 g bid; Plaquenil 200 mg; anifrolumab (Saphnelo) monthly"
        )
    }
    assert found == {"mycophenolic acid", "hydroxychloroquine", "anifrolumab"}
    [m] = term.agents_for_text("mycophenolate 500 mg")
    assert m.agent.code == "7145" and m.via == "text" and m.confidence == "low"
    assert term.agent_value_sets(term.agents_for_text("quinacrine")[0].agent) == {"antimalarials"}


def test_text_matching_respects_word_boundaries(term: Terminology) -> None:
    assert [m.agent.name for m in term.agents_for_text("hydrocortisone")] == ["hydrocortisone"]
    assert term.agents_for_text("hydrocortisonex") == []
    assert term.agents_for_text("acetaminophen 500 mg") == []
    assert term.agents_for_text("") == []


def test_non_systemic_detection(term: Terminology) -> None:
    cream = "hydrocortisone 10 MG/ML Topical Cream"
    assert term.is_non_systemic(product_name=cream)
    assert term.is_non_systemic(product_name=term.product_name(RXNORM, "351109"))  # inhaled
    assert term.is_non_systemic(route_codes=[f"{SCT}|447694001"])
    assert term.is_non_systemic(
        form_codes=["http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|RECSUPP"]
    )
    assert not term.is_non_systemic(product_name=term.product_name(RXNORM, "198144"))
    assert not term.is_non_systemic(route_codes=[f"{SCT}|26643006"], route_text="Oral")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("triamcinolone acetonide 0.001 MG/MG Oral Paste", True),
        ("prednisolone acetate 10 MG/ML Ophthalmic Suspension", True),
        ("hydrocortisone 100 MG Enema", True),
        ("budesonide 2 MG Rectal Foam", True),
        ("fluticasone nasal spray", True),
        ("methylprednisolone 4 MG Oral Tablet", False),
        ("dexamethasone 4 MG/ML Injectable Solution", False),
        ("Transdermal System", False),
    ],
)
def test_non_systemic_text(text: str, expected: bool) -> None:
    assert is_non_systemic_text(text) is expected


def test_summary_rows(term: Terminology) -> None:
    rows = {r["id"]: r for r in term.summary()}
    assert set(rows) == set(term.ids())
    assert rows["sle"]["concepts"][ICD10] == 10
    assert rows["sle"]["total"] == sum(rows["sle"]["concepts"].values())
