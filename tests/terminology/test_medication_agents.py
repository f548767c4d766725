"""Which agent is this medication: from a Medication resource, its codes or its text.

The sweeps run over every product, ingredient, brand and NDC the shipped value sets and concept
maps hold, so a new member is tested the day it is added.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from fhir_cohort.terminology import Terminology, default_directory
from fhir_cohort.terminology.core import MEDICATION_AGENTS
from fhir_cohort.terminology.ndc import ndc_spellings

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
SCT = "http://snomed.info/sct"
FOLDER = default_directory()


def _lists_rxnorm(path: Path) -> bool:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("resourceType") == "ValueSet" and any(
        inc.get("system") == RXNORM for inc in data["compose"]["include"]
    )


# Every value set that lists RxNorm codes is a medication value set (terminology/core.py).
MED_SETS = tuple(sorted(p.stem for p in FOLDER.glob("*.json") if _lists_rxnorm(p)))
SOURCES = Path(__file__).resolve().parents[2] / "scripts" / "value_set_sources"
BRAND = re.compile(r"\[([^\]]+)\]\s*$")


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def _map_elements(name: str) -> list[tuple[str, str, str]]:
    """(source code, source display, target code) of a shipped ConceptMap."""
    data = json.loads((FOLDER / name).read_text(encoding="utf-8"))
    return [
        (e["code"], e.get("display", ""), t["code"])
        for g in data["group"]
        for e in g["element"]
        for t in e["target"]
    ]


PRODUCTS: dict[str, str] = {
    code: disp for code, disp, _ in _map_elements("rxnorm-product-ingredient.json")
}
NDCS: dict[str, set[str]] = {}
for _ndc, _d, _rx in _map_elements("ndc-rxnorm.json"):
    NDCS.setdefault(_ndc, set()).add(_rx)


def _ingredients(term: Terminology) -> dict[str, str]:
    """RxNorm IN/PIN members of the medication value sets: code -> name."""
    out = {}
    for vs_id in MED_SETS:
        vs = term.value_set(vs_id)
        for system, code in vs.concepts:
            if system == RXNORM and code not in PRODUCTS:
                out[code] = vs.displays[(system, code)]
    return out


def _codes(matches: list) -> set[str]:
    return {m.agent.code for m in matches}


# --------------------------------------------------------------------------- codes


def test_every_product_code_maps_to_an_agent_with_a_name(term: Terminology) -> None:
    assert len(PRODUCTS) > 700
    for code, name in PRODUCTS.items():
        matches = term.agents_for_coding(RXNORM, code)
        assert matches, code
        assert all(m.via == "product" and m.confidence == "high" for m in matches), code
        assert all(term.agent_value_sets(m.agent) for m in matches), code
        assert term.product_name(RXNORM, code) == name
        # OID spelling of RxNorm counts the same
        assert _codes(term.agents_for_coding("urn:oid:2.16.840.1.113883.6.88", code)) == _codes(
            matches
        )


def test_every_ingredient_code_maps_to_its_moiety(term: Terminology) -> None:
    ingredients = _ingredients(term)
    assert len(ingredients) >= 30
    for code, name in ingredients.items():
        [match] = term.agents_for_coding(RXNORM, code)
        assert match.via == "ingredient", (code, name)


def test_every_ndc_in_every_spelling_maps_like_its_rxnorm_product(term: Terminology) -> None:
    assert NDCS
    for ndc11, rxcuis in NDCS.items():
        expected = set().union(*(_codes(term.agents_for_coding(RXNORM, rx)) for rx in rxcuis))
        assert expected, ndc11
        for spelling in ndc_spellings(ndc11):
            assert _codes(term.agents_for_coding(NDC, spelling)) == expected, spelling
            assert _codes(term.agents_for_coding("urn:oid:2.16.840.1.113883.6.69", spelling)) == (
                expected
            )
            assert any(term.contains(vs, NDC, spelling) for vs in MED_SETS), spelling
            assert term.product_name(NDC, spelling) in {PRODUCTS[r] for r in rxcuis}


# Spec v1.1 agents (mycophenolate mofetil is mycophenolic acid). No published NDC crosswalk row
# was found for voclosporin; quinacrine has no RxCUI.
SPEC_AGENTS_WITH_NDC = {
    "prednisone",
    "prednisolone",
    "methylprednisolone",
    "dexamethasone",
    "hydrocortisone",
    "cortisone",
    "betamethasone",
    "triamcinolone",
    "budesonide",
    "deflazacort",
    "methotrexate",
    "azathioprine",
    "mycophenolic acid",
    "cyclophosphamide",
    "tacrolimus",
    "cyclosporine",
    "leflunomide",
    "sirolimus",
    "belimumab",
    "anifrolumab",
    "rituximab",
    "obinutuzumab",
    "hydroxychloroquine",
    "chloroquine",
}


def test_every_spec_agent_but_voclosporin_and_quinacrine_has_an_ndc(term: Terminology) -> None:
    named = {m.agent.name for ndc11 in NDCS for m in term.agents_for_coding(NDC, ndc11)}
    assert named >= SPEC_AGENTS_WITH_NDC, SPEC_AGENTS_WITH_NDC - named


def test_every_crosswalk_source_row_maps_as_published(term: Terminology) -> None:
    """Each row of the build's NDC CSVs, in the layout it was published in, gives its RxCUI's
    agents (the build keeps only RxCUIs the value sets know)."""
    rows = [
        r
        for path in sorted(SOURCES.glob("med_ndc_rxnorm*.csv"))
        for r in csv.DictReader(path.open(encoding="utf-8", newline=""))
    ]
    # scripts/value_sets_trials.py: RxNorm's own NDC attributes (11 digits as published).
    for path in sorted(SOURCES.glob("*_rxnorm_agents.csv")):
        for r in csv.DictReader(path.open(encoding="utf-8", newline="")):
            if r["tty"] == "NDC":
                rows.append({"rxcui": r["rxcui"], "ndc11": r["ndc11"], "ndc_published": r["ndc11"]})
    # ... and the NDCs RxNorm prescribable content lists per product (*_products.csv).
    for path in sorted(SOURCES.glob("*_products.csv")):
        for r in csv.DictReader(path.open(encoding="utf-8", newline="")):
            for ndc in r["ndcs"].split():
                rows.append({"rxcui": r["product_rxcui"], "ndc11": ndc, "ndc_published": ndc})
    assert len(rows) >= len(NDCS)
    for r in rows:
        assert r["rxcui"] in NDCS[r["ndc11"]], r["ndc_published"]
        expected = _codes(term.agents_for_coding(RXNORM, r["rxcui"]))
        assert expected, r["rxcui"]
        assert expected <= _codes(term.agents_for_coding(NDC, r["ndc_published"])), r


def test_anifrolumab_products_and_ndc_are_one_agent_with_its_name(term: Terminology) -> None:
    coded = {
        m.agent
        for code, name in PRODUCTS.items()
        if "anifrolumab" in name
        for m in term.agents_for_coding(RXNORM, code)
    }
    by_text = {m.agent for m in term.agents_for_text("SAPHNELO 300 MG IV Q4 WEEKS")}
    assert len(coded) == 1 and coded == by_text
    assert term.agent_value_sets(next(iter(coded))) == {"immunosuppressants"}


# --------------------------------------------------------------------------- text


def test_every_product_name_names_its_agents_in_any_case(term: Terminology) -> None:
    """Product names carry salts (sodium succinate, acetonide, mofetil, ...), tall-man letters
    (azaTHIOprine) and brands: text matching must find the same agents the code gives."""
    for code, name in PRODUCTS.items():
        expected = _codes(term.agents_for_coding(RXNORM, code))
        for text in (name, name.upper(), name.lower(), f"Take 1 {name} PO BID x30d"):
            assert expected <= _codes(term.agents_for_text(text)), (code, text)


def test_every_ingredient_name_is_recognised_inside_realistic_text(term: Terminology) -> None:
    for code, name in _ingredients(term).items():
        expected = _codes(term.agents_for_coding(RXNORM, code))
        for text in (
            f"{name.upper()} 50MG TABS 1 PO BID",
            f"{name.title()} 5 mg tablet, take as directed",
            f"{name} (substance)",
            f"Product containing {name} (medicinal product)",
            f"pt on {name};tapering",
        ):
            found = term.agents_for_text(text)
            assert _codes(found) == expected, (code, text)
            assert all(m.via == "text" and m.confidence == "low" for m in found)


def test_every_single_agent_brand_is_recognised(term: Terminology) -> None:
    brands: dict[str, set[str]] = {}
    for code, name in PRODUCTS.items():
        m = BRAND.search(name)
        if m:
            brands.setdefault(m.group(1).strip(), set()).update(
                _codes(term.agents_for_coding(RXNORM, code))
            )
    assert len(brands) > 50
    for brand, agents in brands.items():
        if len(agents) != 1:
            continue  # a brand of two agents (a combination pack) cannot name one of them
        for text in (brand, brand.upper(), f"{brand.lower()} 4 mg dose pack"):
            assert _codes(term.agents_for_text(text)) == agents, (brand, text)


def _agent_names() -> dict:
    return json.loads((FOLDER / MEDICATION_AGENTS).read_text(encoding="utf-8"))


def test_name_only_agents_and_synonyms(term: Terminology) -> None:
    data = _agent_names()
    assert data["name_only_agents"] and data["synonyms"]
    for entry in data["name_only_agents"]:
        agent = entry["name"]
        for text in (agent, *entry["synonyms"]):
            [m] = term.agents_for_text(f"{text.upper()} infusion")
            assert m.agent.code == f"name:{agent}"
            assert term.agent_value_sets(m.agent) == set(entry["value_sets"])
    moiety_names = {
        m.agent.name for c in _ingredients(term) for m in term.agents_for_coding(RXNORM, c)
    }
    for entry in data["synonyms"]:
        assert entry["name"] in moiety_names
        for syn in entry["synonyms"]:
            [m] = term.agents_for_text(syn.upper())
            assert m.agent.name == entry["name"]


def test_every_agent_name_has_a_source() -> None:
    data = _agent_names()
    for entry in data["name_only_agents"] + data["synonyms"]:
        assert entry["source"].strip() and entry["synonyms"], entry["name"]


def test_medication_value_sets_come_from_the_data(term: Terminology) -> None:
    # The value sets that hold RxNorm codes (or a name-only agent): no list in code.
    assert term.medication_value_sets() == sorted(MED_SETS)
    for vs_id in term.ids():
        has_rxnorm = any(s == RXNORM for s, _ in term.value_set(vs_id).concepts)
        assert (vs_id in term.medication_value_sets()) is has_rxnorm, vs_id


def test_a_new_drug_value_set_works_without_code_change(tmp_path: Path) -> None:
    """A copy of the shipped folder plus a value set of one RxNorm ingredient (methotrexate
    6851, under a new id) and a name-only agent of it: both are agents of the new set."""
    import shutil

    folder = tmp_path / "vs"
    shutil.copytree(FOLDER, folder)
    vs = json.loads((folder / "immunosuppressants.json").read_text(encoding="utf-8"))
    vs["url"] = vs["url"].replace("immunosuppressants", "new_trial_drugs")
    for include in vs["compose"]["include"]:
        include["concept"] = [c for c in include["concept"] if c["code"] == "6851"]
    vs["compose"]["include"] = [i for i in vs["compose"]["include"] if i["concept"]]
    (folder / "new_trial_drugs.json").write_text(json.dumps(vs), encoding="utf-8")
    names = json.loads((folder / MEDICATION_AGENTS).read_text(encoding="utf-8"))
    names["name_only_agents"].append(
        {"name": "examplimab", "value_sets": ["new_trial_drugs"], "synonyms": [], "source": "t"}
    )
    (folder / MEDICATION_AGENTS).write_text(json.dumps(names), encoding="utf-8")
    term = Terminology.load(folder)
    assert "new_trial_drugs" in term.medication_value_sets()
    [mtx] = term.agents_for_coding(RXNORM, "6851")
    assert "new_trial_drugs" in term.agent_value_sets(mtx.agent)
    [ex] = term.agents_for_text("EXAMPLIMAB 10 mg/kg")
    assert term.agent_value_sets(ex.agent) == {"new_trial_drugs"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value_sets": ["no_such_set"]}, "unknown value sets"),
        ({"source": ""}, "has no source"),
        ({"name": ""}, "has no name"),
        ({"synonyms": "mepacrine"}, "must list names"),
    ],
)
def test_agent_names_file_is_validated(tmp_path: Path, change: dict, message: str) -> None:
    import shutil

    from fhir_cohort.errors import TerminologyError

    folder = tmp_path / "vs"
    shutil.copytree(FOLDER, folder)
    names = _agent_names()
    names["name_only_agents"][0].update(change)
    (folder / MEDICATION_AGENTS).write_text(json.dumps(names), encoding="utf-8")
    with pytest.raises(TerminologyError, match=message):
        Terminology.load(folder)


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        ("AZATHIOPRINE 50MG TABS 1 PO BID", "azathioprine"),
        ("Medrol 4 mg dose pack", "methylprednisolone"),
        ("methylPREDNISolone sod succ 40 mg IV", "methylprednisolone"),
        ("CellCept 500 mg tablet", "mycophenolic acid"),
        ("mycophenolate mofetil 250mg cap", "mycophenolic acid"),
        ("Plaquenil 200mg", "hydroxychloroquine"),
        ("predniSONE 20 mg", "prednisone"),
        ("Benlysta 10 mg/kg IV", "belimumab"),
    ],
)
def test_ehr_strings(term: Terminology, text: str, agent: str) -> None:
    assert [m.agent.name for m in term.agents_for_text(text)] == [agent]


def test_snomed_substance_or_product_coding_is_read_by_display(term: Terminology) -> None:
    """No published SNOMED -> RxNorm map was found: the display names the agent (low)."""
    for code, name in _ingredients(term).items():
        expected = _codes(term.agents_for_coding(RXNORM, code))
        for display in (f"{name.capitalize()} (substance)", f"Product containing {name}"):
            concept = {"coding": [{"system": SCT, "code": "0", "display": display}]}
            found = term.agents_for_concept(concept)
            assert _codes(found) == expected, display
            assert {m.confidence for m in found} == {"low"}


def test_every_mapped_snomed_substance_code_names_its_agent(term: Terminology) -> None:
    pairs = _map_elements("snomed-rxnorm-ingredient.json")
    assert pairs
    for code, display, ingredient in pairs:
        expected = _codes(term.agents_for_coding(RXNORM, ingredient))
        for system in (SCT, "urn:oid:2.16.840.1.113883.6.96"):
            found = term.agents_for_coding(system, code)
            assert _codes(found) == expected, code
            assert {m.confidence for m in found} == {"high"}
        assert any(term.contains(vs, SCT, code) for vs in MED_SETS), code
        assert _codes(term.agents_for_text(display)) == expected, display


def test_medication_names_cover_every_text_name(term: Terminology) -> None:
    names = term.medication_names()
    for code, name in _ingredients(term).items():
        assert name.lower() in names, code


# --------------------------------------------------------------------------- resources


def test_product_coded_medication_maps_to_its_moiety(term: Terminology) -> None:
    med = {
        "resourceType": "Medication",
        "code": {"coding": [{"system": RXNORM, "code": "68149", "display": "mycophenolate"}]},
    }
    [match] = term.agents_for_medication(med)
    assert (match.agent.code, match.via, match.confidence) == ("7145", "ingredient", "high")


def test_ingredient_items_are_used_when_the_code_is_unknown(term: Terminology) -> None:
    med = {
        "resourceType": "Medication",
        "code": {"coding": [{"system": NDC, "code": "0000-0000"}]},
        "ingredient": [
            {"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "8640"}]}},
        ],
    }
    assert [m.agent.name for m in term.agents_for_medication(med)] == ["prednisone"]


def test_text_only_is_low_confidence_and_codes_win_over_text(term: Terminology) -> None:
    text_only = term.agents_for_concept({"text": "Benlysta 10 mg/kg IV"})
    assert [(m.agent.name, m.confidence) for m in text_only] == [("belimumab", "low")]
    coded = term.agents_for_concept(
        {"text": "rituximab", "coding": [{"system": RXNORM, "code": "6851"}]}
    )
    assert [m.agent.name for m in coded] == ["methotrexate"]
    assert term.agents_for_medication({"resourceType": "Medication"}) == []
