"""What a trial needs, in one place (fhir_cohort/requirements.py, issue 10 item 2).

The NCT06038474 requirements are checked against the derivations they replaced, computed here
as the old code computed them: the reader's relevant codes (every value set the file names),
medication names (every name the terminology knows), the LOINC tokens of the funnel and the
bulk _typeFilter (LOINC codes of every value set), and the funnel's entry (the first
condition_present inclusion's value sets).
"""

from __future__ import annotations

from typing import Any

import pytest

import fhir_cohort
from fhir_cohort.criteria import default_criteria_path, load_criteria, value_set_ids
from fhir_cohort.criteria.io import parse_criteria
from fhir_cohort.criteria.language import QUERY_TYPES
from fhir_cohort.engine.queries import REGISTRY
from fhir_cohort.errors import CriteriaError
from fhir_cohort.fhir.fetch import FetchPlan
from fhir_cohort.remote import (
    FULL_TYPES,
    ServerOptions,
    bulk_request,
    entry_tokens,
    funnel_plan,
)
from fhir_cohort.requirements import (
    MEDICATION_RESOURCE_TYPES,
    Requirements,
    requirements,
    requires_for,
)
from fhir_cohort.terminology import Terminology

LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


@pytest.fixture(scope="module")
def shipped() -> Any:
    return load_criteria(default_criteria_path())


def _trial(criteria: list[dict[str, Any]], define: dict[str, Any] | None = None) -> Any:
    doc: dict[str, Any] = {
        "id": "T-1",
        "title": "t",
        "version": "1",
        "source": "test",
        "criteria": criteria,
    }
    if define:
        doc["define"] = define
    return parse_criteria(doc)


def _rule(rule: dict[str, Any], kind: str = "inclusion", cid: str = "c") -> dict[str, Any]:
    return {"id": cid, "kind": kind, "title": cid, "rule": rule}


# --------------------------------------------------------------------------- NCT06038474


def test_nct06038474_equals_the_old_derivations(term: Terminology, shipped: Any) -> None:
    req = requirements(shipped, term)
    used = sorted(value_set_ids(shipped))
    assert req.value_sets == set(used)
    assert req.codes == term.codes(used)  # pipeline.relevant_codes
    # The reader's medication words: every name the terminology reads as an agent of one of
    # the trial's value sets (other trials' drug names, e.g. NCT02504489's, are not kept).
    assert req.medication_names == {
        name
        for name in term.medication_names()
        if any(term.agent_value_sets(m.agent) & set(used) for m in term.agents_for_text(name))
    }
    assert req.medication_names <= term.medication_names()
    assert list(req.observation_tokens) == term.search_tokens(used, system=LOINC)
    first = next(
        c.written_as
        for c in shipped.criteria
        if c.kind == "inclusion" and c.shorthand == "condition_present"
    )
    entry_sets = [*first.value_sets, *first.unknown_value_sets]
    assert req.entry_value_sets == tuple(entry_sets)
    assert list(req.entry_tokens or ()) == term.search_tokens(entry_sets)
    assert req.resource_types == set(FULL_TYPES)


def test_nct06038474_fetch_plan_and_export_are_unchanged(term: Terminology, shipped: Any) -> None:
    used = sorted(value_set_ids(shipped))
    loinc = term.search_tokens(used, system=LOINC)
    first = next(c.written_as for c in shipped.criteria if c.shorthand == "condition_present")
    old_plan = FetchPlan.standard(
        term.search_tokens([*first.value_sets, *first.unknown_value_sets]),
        observation_codes=loinc,
        procedure_codes=(),
    )
    assert funnel_plan(shipped, term) == old_plan
    request = bulk_request(shipped, term, ServerOptions())
    assert request.types == FULL_TYPES
    assert request.type_filters == ("Observation?code=" + ",".join(loinc),)
    assert bulk_request(shipped, term, ServerOptions(bulk_type_filter=False)).type_filters == ()


def test_nct06038474_summary(term: Terminology, shipped: Any) -> None:
    req = requirements(shipped, term)
    # Medication and lab windows reach back without bound: the whole history is read.
    assert req.lookback_days is None
    assert {"gender", "birth_date_raw"} <= req.patient_fields
    got = req.to_json()
    assert got["entry"]["value_sets"] == ["sle", "lupus_unspecified"]
    assert sum(got["codes_by_system"].values()) == len(req.codes)
    assert got["medication_names"] == len(req.medication_names)
    assert len(req.to_json(codes=True)["medication_names"]) == len(req.medication_names)


# --------------------------------------------------------------------------- query types


def test_every_query_type_has_its_requirements() -> None:
    for name in (*QUERY_TYPES, *REGISTRY):
        assert callable(requires_for(name)), name
    with pytest.raises(KeyError, match="no requirements"):
        requires_for("no_such_type")


def test_each_query_type_contributes(term: Terminology) -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"type": "patient", "min_age": 18, "sexes": ["female"]},
            {"types": set(), "fields": {"birth_date_raw", "gender", "deceased"}},
        ),
        (
            {
                "type": "condition",
                "value_sets": ["sle"],
                "unknown_value_sets": ["lupus_unspecified"],
            },
            {"types": {"Condition", "Procedure"}, "sets": {"sle", "lupus_unspecified"}},
        ),
        (
            {"type": "procedure", "value_sets": ["dialysis_procedures"]},
            {"types": {"Procedure"}, "sets": {"dialysis_procedures"}},
        ),
        (
            {"type": "observation", "value_sets": ["hcg"], "result": "positive"},
            {
                "types": {"Observation"},
                "obs": {"hcg", "interpretation_positive", "result_negative"},
            },
        ),
        (
            {
                "type": "observation",
                "value_sets": ["pregnancy_status"],
                "answer_value_sets": ["pregnancy_status_pregnant"],
            },
            {"types": {"Observation"}, "obs": {"pregnancy_status", "pregnancy_status_pregnant"}},
        ),
        (
            {"type": "medication", "value_sets": ["glucocorticoids"]},
            {"types": set(MEDICATION_RESOURCE_TYPES), "meds": {"glucocorticoids"}},
        ),
        ({"type": "chart_review", "note": "confirm"}, {"types": set()}),
    ]
    for rule, want in cases:
        req = requirements(_trial([_rule(rule)]), term)
        assert req.resource_types == {"Patient", *want["types"]}, rule
        assert want.get("fields", set()) <= req.patient_fields, rule
        assert want.get("sets", set()) <= req.value_sets, rule
        assert want.get("obs", set()) <= req.observation_value_sets, rule
        assert bool(req.observation_value_sets) == ("obs" in want), rule
        assert req.medication_value_sets == want.get("meds", set()), rule
        assert req.codes == term.codes(req.value_sets), rule
        if "obs" in want:
            assert req.observation_tokens
            loinc = {c for s, c in term.codes(req.observation_value_sets) if s == LOINC}
            assert {t.rpartition("|")[2] for t in req.observation_tokens} <= loinc
        if "meds" in want:
            assert req.medication_names and req.medication_names <= term.medication_names()
        else:
            assert not req.medication_names


def test_every_value_set_field_is_read_whatever_the_type(term: Terminology) -> None:
    rule = {
        "type": "medication",
        "value_sets": ["immunosuppressants"],
        "non_systemic_routes": ["non_systemic_routes"],
        "non_systemic_forms": ["non_systemic_forms"],
    }
    req = requirements(_trial([_rule(rule)]), term)
    assert {"non_systemic_routes", "non_systemic_forms"} <= req.value_sets
    assert req.medication_value_sets == {"immunosuppressants"}
    obs = {"type": "observation", "value_sets": ["autoantibodies"], "result": "positive"}
    req = requirements(_trial([_rule(obs)]), term)
    assert {"interpretation_positive", "result_negative"} <= req.value_sets


def test_medication_names_follow_the_agents(term: Terminology) -> None:
    def names(vs: str) -> frozenset[str]:
        rule = {"type": "medication", "value_sets": [vs]}
        return requirements(_trial([_rule(rule)]), term).medication_names

    gluco, immuno = names("glucocorticoids"), names("immunosuppressants")
    assert "prednisone" in gluco and "prednisone" not in immuno
    assert "mycophenolic acid" in immuno and "mycophenolic acid" not in gluco


def test_groups_definitions_and_anchors_are_walked(term: Terminology) -> None:
    define = {
        "nephritis": {"type": "condition", "value_sets": ["lupus_nephritis"]},
        "biopsy": {"type": "procedure", "value_sets": ["dialysis_procedures"]},
    }
    rule = {
        "type": "all",
        "of": [
            {"type": "not", "of": {"type": "ref", "name": "nephritis"}},
            {
                "type": "at_least",
                "n": 1,
                "of": [
                    {
                        "type": "observation",
                        "value_sets": ["hcg"],
                        "within": {"days": 30, "anchor": "biopsy", "after": True},
                    },
                    {"type": "chart_review"},
                ],
            },
        ],
    }
    req = requirements(_trial([_rule(rule)], define), term)
    assert {"lupus_nephritis", "dialysis_procedures", "hcg"} <= req.value_sets
    assert {"Condition", "Procedure", "Observation"} <= req.resource_types
    # A definition nothing uses is not read.
    define["unused"] = {"type": "observation", "value_sets": ["autoantibodies"]}
    req = requirements(_trial([_rule({"type": "ref", "name": "nephritis"})], define), term)
    assert "autoantibodies" not in req.value_sets and "Observation" not in req.resource_types


# --------------------------------------------------------------------------- entry query

SLE = {"type": "condition", "value_sets": ["sle"]}
LN = {"type": "condition", "value_sets": ["lupus_nephritis"]}
AGE = {"type": "patient", "min_age": 18}


@pytest.mark.parametrize(
    ("criteria", "entry"),
    [
        ([_rule(SLE)], ("sle",)),
        ([_rule(AGE, cid="a"), _rule(SLE)], ("sle",)),
        ([_rule({"type": "all", "of": [AGE, SLE, LN]})], ("sle",)),
        ([_rule({"type": "any", "of": [SLE, LN]})], ("sle", "lupus_nephritis")),
        ([_rule({"type": "at_least", "n": 1, "of": [SLE, LN]})], ("sle", "lupus_nephritis")),
        ([_rule({"type": "any", "of": [SLE, AGE]})], None),
        ([_rule({"type": "not", "of": LN}, cid="x"), _rule(SLE)], ("sle",)),
        ([_rule({**SLE, "missing": "unknown"})], None),
        ([_rule({**SLE, "match": "possible", "within": {"days": 10}})], ("sle",)),
        ([_rule(LN, kind="exclusion", cid="x"), _rule(SLE)], ("sle",)),
        ([_rule(SLE, kind="exclusion")], None),
        ([_rule({"type": "procedure", "value_sets": ["dialysis_procedures"]})], None),
        ([_rule(LN, cid="first"), _rule(SLE)], ("lupus_nephritis",)),
        ([_rule({"type": "chart_review"})], None),
    ],
)
def test_entry_query(term: Terminology, criteria: list[dict[str, Any]], entry: Any) -> None:
    assert requirements(_trial(criteria), term).entry_value_sets == entry


def test_entry_through_a_definition(term: Terminology) -> None:
    trial = _trial([_rule({"type": "ref", "name": "sle"})], {"sle": SLE})
    assert requirements(trial, term).entry_value_sets == ("sle",)


def test_no_entry_query_is_refused_by_the_funnel_only(term: Terminology) -> None:
    trial = _trial([_rule(AGE)])
    with pytest.raises(CriteriaError, match="entry query"):
        entry_tokens(trial, term)
    with pytest.raises(CriteriaError, match="entry query"):
        funnel_plan(trial, term)
    assert bulk_request(trial, term).types == ("Patient",)


def test_funnel_and_export_fetch_only_what_is_read(term: Terminology) -> None:
    trial = _trial([_rule(SLE)])
    plan = funnel_plan(trial, term)
    assert [f.resource_type for f in plan.follow_ups] == ["Patient", "Condition", "Procedure"]
    assert not plan.resolve_medications
    assert bulk_request(trial, term).types == ("Patient", "Condition", "Procedure")
    med = {"type": "medication", "value_sets": ["glucocorticoids"]}
    trial = _trial([_rule(SLE), _rule(med, cid="m")])
    types = [f.resource_type for f in funnel_plan(trial, term).follow_ups]
    assert "MedicationRequest" in types and "Observation" not in types
    assert "Medication" in bulk_request(trial, term).types


# --------------------------------------------------------------------------- lookback


@pytest.mark.parametrize(
    ("rule", "days"),
    [
        (AGE, 0),
        ({**SLE, "within": {"days": 90}}, 90),
        ({**SLE, "within": {"months": 6}}, 186),
        ({**SLE, "within": {"years": 1}}, 366),
        (SLE, None),
        ({"type": "procedure", "value_sets": ["dialysis_procedures"], "within": {"days": 5}}, 5),
        ({"type": "observation", "value_sets": ["hcg"], "within": {"days": 30}}, 30),
        (
            {
                "type": "observation",
                "value_sets": ["hcg"],
                "result": "positive",
                "within": {"days": 30},
            },
            None,
        ),
        (
            {
                "type": "observation",
                "value_sets": ["hcg"],
                "result": "positive",
                "positive_before_window": "false",
                "within": {"days": 30},
            },
            30,
        ),
        ({"type": "medication", "value_sets": ["glucocorticoids"], "within": {"days": 9}}, None),
        (
            {"type": "all", "of": [{**SLE, "within": {"days": 90}}, {**LN, "within": {"days": 7}}]},
            90,
        ),
    ],
)
def test_lookback(term: Terminology, rule: dict[str, Any], days: int | None) -> None:
    assert requirements(_trial([_rule(rule)]), term).lookback_days == days


def test_a_window_anchored_on_an_event_reads_the_whole_history(term: Terminology) -> None:
    rule = {**LN, "within": {"days": 30, "anchor": "sle", "after": True}}
    trial = _trial([_rule(rule)], {"sle": {**SLE, "within": {"days": 10}}})
    assert requirements(trial, term).lookback_days is None


# --------------------------------------------------------------------------- union


def test_union_of_several_trials(term: Terminology, shipped: Any) -> None:
    a = requirements(_trial([_rule({**SLE, "within": {"days": 90}})]), term)
    b = requirements(_trial([_rule({**LN, "within": {"days": 30}}), _rule(AGE, cid="a")]), term)
    both = a.union(b)
    assert both.value_sets == a.value_sets | b.value_sets
    assert both.codes == a.codes | b.codes
    assert both.entry_value_sets == ("lupus_nephritis", "sle")
    assert set(both.entry_tokens or ()) == set(a.entry_tokens or ()) | set(b.entry_tokens or ())
    assert both.lookback_days == 90
    assert both.patient_fields == b.patient_fields
    assert both.trials == ("T-1",)
    assert Requirements.union_of([a, b]) == both == b.union(a)
    assert Requirements.union_of([a]) == a
    with pytest.raises(ValueError, match="at least one"):
        Requirements.union_of([])
    # A trial without an entry query: the union has none either (the funnel cannot plan).
    c = requirements(_trial([_rule(AGE)]), term)
    assert a.union(c).entry_value_sets is None and a.union(c).entry_tokens is None
    full = requirements(shipped, term)
    joined = Requirements.of([shipped, _trial([_rule(SLE)])], term)
    assert joined.codes == full.codes and joined.trials == ("NCT06038474", "T-1")
    assert joined.lookback_days is None
    assert Requirements.of(shipped, term) == full


def test_public_name() -> None:
    assert fhir_cohort.Requirements is Requirements
    assert "Requirements" in fhir_cohort.__all__


def test_cli_prints_the_requirements(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    import json

    from fhir_cohort.cli import main

    assert main(["requirements"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["trials"] == ["NCT06038474"]
    assert got["entry"]["value_sets"] == ["sle", "lupus_unspecified"]
    other = tmp_path / "t.yaml"
    other.write_text(
        "id: T-2\ntitle: t\nversion: '1'\nsource: test\ncriteria:\n"
        "  - {id: c, kind: inclusion, title: c, rule: {type: condition, value_sets: [seizure]}}\n"
    )
    assert main(["requirements", "--criteria", str(other), "--codes"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["resource_types"] == ["Condition", "Patient", "Procedure"]
    assert got["medication_names"] == [] and got["observation_tokens"] == []
    assert isinstance(got["entry"]["tokens"], list)


# Tables of the engine (QueryType.reads) and the resource types whose rows fill them.
_TABLE_TYPES = {
    "conditions": {"Condition", "Procedure"},
    "observations": {"Observation"},
    "medications": set(MEDICATION_RESOURCE_TYPES),
}
SAMPLES: list[dict[str, Any]] = [
    AGE,
    {"type": "patient", "sexes_not": ["male"]},
    SLE,
    {"type": "procedure", "value_sets": ["dialysis_procedures"]},
    {"type": "observation", "value_sets": ["hcg"], "result": "positive"},
    {"type": "medication", "value_sets": ["glucocorticoids"]},
]


def test_what_the_engine_reads_is_required(term: Terminology, shipped: Any) -> None:
    """A table a query reads (the no-rows shortcut's QueryType.reads) is filled by resource
    types its requirements ask for, and a patient field it keys on is a required field."""
    from fhir_cohort.engine.rules import reads

    trials = [shipped] + [_trial([_rule(s)]) for s in SAMPLES if s["type"] in REGISTRY]
    checked = 0
    for trial in trials:
        for crit in trial.criteria:
            got = reads(crit.rule, dict(trial.define))
            if got is None:
                continue
            one = _trial([{"id": "c", "kind": crit.kind, "title": "c", "rule": crit.rule}])
            req = requirements(one, term)
            for table in got[0]:
                assert _TABLE_TYPES[table] & req.resource_types, (crit.id, table)
            assert got[1] <= req.patient_fields, crit.id
            checked += 1
    assert checked >= 5
