"""Which agent is this medication: from a Medication resource, its codes or its text."""

from __future__ import annotations

import pytest

from fhir_cohort.terminology import Terminology

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


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
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "0000-0000"}]},
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
