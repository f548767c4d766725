"""Non-systemic route / dose form: every code (each system) and display is recognised; the
systemic ones (oral, IV, IM, SC, transdermal, sublingual) never are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fhir_cohort.terminology import Terminology, default_directory, is_non_systemic_text
from fhir_cohort.terminology.forms import NON_SYSTEMIC_WORDS, words_pattern

REPO = Path(__file__).resolve().parents[2]
SYSTEMIC = REPO / "scripts" / "value_set_sources" / "route_form_systemic_reference.csv"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
EDQM = "http://standardterms.edqm.eu"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def _members(vs_id: str) -> list[tuple[str, str, str]]:
    data = json.loads((default_directory() / f"{vs_id}.json").read_text(encoding="utf-8"))
    return [
        (inc["system"], c["code"], c["display"])
        for inc in data["compose"]["include"]
        for c in inc["concept"]
    ]


def _systemic() -> list[tuple[str, str, str]]:
    with SYSTEMIC.open(newline="", encoding="utf-8") as fh:
        return [(r["system"], r["code"], r["display"]) for r in csv.DictReader(fh)]


def test_the_value_sets_hold_every_required_system() -> None:
    routes = {s for s, _, _ in _members("non_systemic_routes")}
    assert {SCT, EDQM, V3_ROUTE} <= routes
    assert any(len(c) > 12 for s, c, _ in _members("non_systemic_routes") if s == SCT)  # dm+d
    forms = {s for s, _, _ in _members("non_systemic_forms")}
    assert SCT in forms and "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm" in forms


@pytest.mark.parametrize("vs_id", ["non_systemic_routes", "non_systemic_forms"])
def test_every_code_and_every_display_is_recognised(term: Terminology, vs_id: str) -> None:
    for system, code, display in _members(vs_id):
        token = f"{system}|{code}"
        assert term.is_non_systemic(route_codes=[token]), token
        assert term.is_non_systemic(form_codes=[token]), token  # data mix routes and forms
        assert is_non_systemic_text(display), display
        assert is_non_systemic_text(display.upper()), display
        assert term.is_non_systemic(route_text=display), display
        assert term.is_non_systemic(texts=[f"apply: {display.lower()}"]), display


def test_systemic_routes_and_forms_are_not(term: Terminology) -> None:
    rows = _systemic()
    assert {s for s, _, _ in rows} >= {SCT, EDQM, V3_ROUTE}
    for system, code, display in rows:
        token = f"{system}|{code}"
        assert not term.is_non_systemic(route_codes=[token], route_text=display), token
        assert not term.is_non_systemic(form_codes=[token], form_text=display), token
        assert not is_non_systemic_text(display), display


def test_product_names_decide_by_their_dose_form(term: Terminology) -> None:
    """Every RxNorm product: its own name's dose form decides, through its product code too."""
    local = words_pattern(NON_SYSTEMIC_WORDS)
    seen = {True: 0, False: 0}
    for system, code in term.value_set("glucocorticoids").concepts:
        name = term.product_name(system, code)
        if system != RXNORM or name is None:
            continue
        expected = local.search(name) is not None
        seen[expected] += 1
        assert term.is_non_systemic(form_codes=[f"{system}|{code}"]) is expected, name
        assert term.is_non_systemic(product_name=name) is expected, name
    assert seen[True] > 50 and seen[False] > 50


@pytest.mark.parametrize(
    "text",
    [
        "Oral",
        "Swallow, oral",
        "Intravenous use",
        "Injection, subcutaneous",
        "Subcutaneous",
        "Transdermal",
        "Transdermal patch",
        "prednisone 5 MG Oral Tablet",
        "by mouth",
        "methylprednisolone sodium succinate 125 MG Injection",
        "Sublingual",
    ],
)
def test_systemic_text(text: str) -> None:
    assert not is_non_systemic_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "Topical",
        "Cutaneous use",
        "Both eyes",
        "each nostril",
        "Inhalation, nasal",
        "Apply to skin",
        "Per rectum",
        "Instillation, otic",
        "Ocular use",
        "Auricular use",
        "budesonide 0.5 MG/ML Inhalation Suspension",
        "hydrocortisone 1% cream",
    ],
)
def test_non_systemic_text(text: str) -> None:
    assert is_non_systemic_text(text)
