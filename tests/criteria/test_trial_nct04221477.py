"""NCT04221477 (REGENCY, lupus nephritis) as a pure data file: every scenario patient's answer
to every criterion, and its status, is the one the computable reading gives
(docs/trials/NCT04221477.md; expected answers written by hand in
tests/data/trials/NCT04221477/expected.csv).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import fhir_cohort
from fhir_cohort.criteria import check_value_sets, load_criteria
from fhir_cohort.terminology import Terminology
from tests.criteria import ln_scenarios

REPO = Path(__file__).resolve().parents[2]
CRITERIA = REPO / "fhir_cohort" / "criteria" / "trials" / "NCT04221477.yaml"
EXPECTED = REPO / "tests" / "data" / "trials" / "NCT04221477" / "expected.csv"
IDS = (
    "age",
    "ln_biopsy",
    "proteinuria",
    "pregnancy_lactation",
    "renal_impairment",
    "anti_cd20",
    "cyclophosphamide_cni",
    "medical_disease",
    "infection",
)


def _expected() -> dict[str, dict[str, str]]:
    with EXPECTED.open(encoding="utf-8", newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def _unregistered(expr: Any, define: dict[str, Any]) -> set[str]:
    """Query types an expression uses (through its definitions) with no evaluator yet."""
    from fhir_cohort.criteria.language import QUERY_TYPES, walk
    from fhir_cohort.engine.queries import REGISTRY

    out: set[str] = set()
    for node in walk(expr):
        if node.type == "ref":
            out |= _unregistered(define[node.name], define)
        elif node.type in QUERY_TYPES and node.type not in REGISTRY:
            out.add(node.type)
    return out


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The scenario screen, and the criteria it could evaluate. While the language core lands
    its query evaluators one by one, criteria using a query type without one are left out of
    the screen (and of the comparison); the status is compared once every criterion runs."""
    trial = load_criteria(CRITERIA)
    ready = [c for c in trial.criteria if not _unregistered(c.rule, dict(trial.define))]
    if not ready:
        pytest.skip("no criterion of the file has evaluators for all its query types yet")
    folder = ln_scenarios.write_ndjson(tmp_path_factory.mktemp("nct04221477") / "data")
    subset = trial.model_copy(update={"criteria": ready})
    result = fhir_cohort.screen(folder, criteria=subset, as_of=ln_scenarios.AS_OF)
    return result.patients.set_index("patient_id"), tuple(c.id for c in ready)


def test_criteria_file_loads_with_the_criteria_in_reading_order() -> None:
    trial = load_criteria(CRITERIA)
    assert tuple(c.id for c in trial.criteria) == IDS
    assert [c.kind for c in trial.criteria] == ["inclusion"] * 3 + ["exclusion"] * 6
    check_value_sets(trial, Terminology.load())  # every value set id it names is shipped


def test_every_scenario_has_an_expected_row_and_back() -> None:
    assert set(ln_scenarios.scenarios()) == set(_expected())


def test_every_answer_and_status_is_the_readings(
    screened: tuple[pd.DataFrame, tuple[str, ...]],
) -> None:
    patients, ready = screened
    columns = (*ready, "status") if ready == IDS else ready
    wrong = []
    for pid, row in _expected().items():
        got = patients.loc[pid]
        for col in columns:
            if got[col] != row[col]:
                wrong.append(f"{pid} {col}: got {got[col]}, want {row[col]} ({row['case']})")
    assert wrong == []


def test_every_answer_of_every_criterion_is_exercised() -> None:
    """The scenarios reach each answer a criterion can give (the brief's sweep), from the CSV."""
    rows = list(_expected().values())
    want = {
        "inclusion": {"met", "not_met", "unknown"},
        "exclusion": {"clear", "excluded", "review"},
    }
    review_only = {"medical_disease", "infection"}  # never decided: no "excluded" by design
    for i, cid in enumerate(IDS):
        seen = {r[cid] for r in rows}
        kind = "inclusion" if i < 3 else "exclusion"
        need = want[kind] - ({"excluded"} if cid in review_only else set())
        assert need <= seen, (cid, need - seen)
    assert {r["status"] for r in rows} == {"eligible", "review", "ineligible"}


def test_medication_value_sets_resolve_every_agent_by_name_and_product() -> None:
    """Each agent of the trial's medication value sets: its ingredient code, one of its product
    RxCUIs from the product map, and its name in free text all give the same agent, which
    belongs to the value set."""
    term = Terminology.load()
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    agents = {
        "anti_cd20": ("rituximab", "obinutuzumab", "ocrelizumab", "ofatumumab", "ublituximab"),
        "cyclophosphamide": ("cyclophosphamide",),
        "calcineurin_inhibitors": ("tacrolimus", "cyclosporine", "voclosporin"),
    }
    rows = list(csv.DictReader((REPO / "scripts/value_set_sources/ln_rxnorm_agents.csv").open()))
    for vs_id, names in agents.items():
        for name in names:
            ing = next(r["rxcui"] for r in rows if r["ingredient"] == name and r["tty"] == "IN")
            [by_code] = term.agents_for_coding(rxnorm, ing)
            products = [r["rxcui"] for r in rows if r["ingredient"] == name and r["tty"] == "SCD"]
            assert products, name
            for product in products:
                assert by_code.agent in {m.agent for m in term.agents_for_coding(rxnorm, product)}
            [by_text] = term.agents_for_text(f"{name.upper()} 100 mg")
            assert by_text.agent == by_code.agent, name
            assert vs_id in term.agent_value_sets(by_code.agent), (vs_id, name)
            assert term.contains(vs_id, rxnorm, ing) and term.contains(vs_id, rxnorm, products[0])
