"""Criteria files: load / dump round trips, key-naming errors, value set references."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_cohort.criteria import (
    MedicationHistoryCriterion,
    Trial,
    check_value_sets,
    default_criteria_path,
    dump_criteria,
    dumps,
    load_criteria,
    loads,
    value_set_ids,
)
from fhir_cohort.errors import CriteriaError
from fhir_cohort.terminology import Terminology

DOCS = Path(__file__).resolve().parents[2] / "docs" / "criteria.md"


@pytest.fixture(scope="module")
def shipped() -> Trial:
    return load_criteria(default_criteria_path())


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(default_criteria_path().read_text())


def test_shipped_file_states_the_spec(shipped):
    assert [c.id for c in shipped.criteria] == [
        "age",
        "sle",
        "therapy",
        "autoantibody",
        "lupus_nephritis",
        "cns_lupus",
        "pregnancy_lactation",
        "chronic_illness",
    ]
    assert [c.kind for c in shipped.criteria] == ["inclusion"] * 4 + ["exclusion"] * 4
    therapy = shipped.criterion("therapy").written_as
    assert isinstance(therapy, MedicationHistoryCriterion)
    assert (therapy.window_months, therapy.persistence_gap_days, therapy.min_era_days) == (
        24,
        30,
        84,
    )
    assert therapy.switches == {"count_antimalarials": False}
    assert therapy.coverage_per_dose_days == {
        "rituximab": 182,
        "cyclophosphamide": 30,
        "belimumab": 28,
        "anifrolumab": 28,
    }
    assert shipped.criterion("autoantibody").written_as.lookback_days == 365
    e3 = shipped.criterion("pregnancy_lactation").written_as
    assert (
        e3.pregnancy_onset_within_days,
        e3.pregnancy_status_within_days,
        e3.hcg_within_days,
        e3.delivery_within_days,
    ) == (300, 30, 30, 365)


def test_shipped_defaults_equal_model_defaults(shipped, raw):
    """The shipped file writes every value out, and each equals the documented default."""
    for i, c in enumerate(c.written_as for c in shipped.criteria):
        cls = type(c)
        minimal = {k: raw["criteria"][i][k] for k in ("id", "kind", "type", "title")}
        for k in (
            "value_sets",
            "unknown_value_sets",
            "not_counted_value_sets",
            "requirements",
            "rules",
            # Trial data with no default (drug names are not code): issue 10.
            "coverage_per_dose_days",
            "count_antimalarials",
        ):
            if k in raw["criteria"][i]:
                minimal[k] = raw["criteria"][i][k]
        assert cls.model_validate(minimal) == c, c.id


def test_value_sets_exist(shipped):
    check_value_sets(shipped, Terminology.load())
    assert {"sle", "antimalarials", "interpretation_positive", "non_systemic_forms"} <= (
        value_set_ids(shipped)
    )


def test_unknown_value_set_names_key(raw):
    raw = json.loads(json.dumps(raw))
    raw["criteria"][4]["rules"][1]["value_sets"] = ["no_such_set"]
    trial = loads(json.dumps(raw), fmt="json")
    with pytest.raises(CriteriaError, match=r"criteria\[4\]\.rules\[1\]\.value_sets\[0\]"):
        check_value_sets(trial, Terminology.load())


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("criteria", 2, "window_months"),
            "two years",
            r"criteria\[2\]\.window_months: Input should be a valid integer",
        ),
        (("criteria", 0, "min_yearz"), 18, r"criteria\[0\]\.min_yearz: Extra inputs"),
        (("criteria", 4, "rules", 0, "answer"), "maybe", r"criteria\[4\]\.rules\[0\]\.answer"),
        (("criteria", 1, "type"), "nope", r"criteria\[1\]"),
        (
            ("criteria", 2, "requirements", 1, "agent_grouping"),
            "brand",
            r"criteria\[2\]\.requirements\[1\]\.agent_grouping",
        ),
        (("version",), None, r"version: Input should be a valid string"),
    ],
)
def test_errors_name_the_key(raw, tmp_path, path, value, message):
    data = json.loads(json.dumps(raw))
    target = data
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(CriteriaError, match=message) as err:
        load_criteria(f)
    assert str(f) in str(err.value)


def test_duplicate_ids_rejected(raw):
    data = json.loads(json.dumps(raw))
    data["criteria"][1]["id"] = "age"
    with pytest.raises(CriteriaError, match="duplicate criterion id 'age'"):
        loads(json.dumps(data), fmt="json")


def test_optional_value_sets_need_a_switch(raw):
    data = json.loads(json.dumps(raw))
    data["criteria"][2]["requirements"][1]["enabled_by"] = None
    with pytest.raises(CriteriaError, match=r"enabled_by|count_antimalarials: Extra inputs"):
        loads(json.dumps(data), fmt="json")


def test_bad_files(tmp_path):
    with pytest.raises(CriteriaError, match="extension"):
        load_criteria(tmp_path / "x.txt")
    with pytest.raises(CriteriaError, match="cannot read"):
        load_criteria(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(CriteriaError, match="not valid json"):
        load_criteria(bad)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_file_round_trip(shipped, tmp_path, suffix):
    f = tmp_path / f"t{suffix}"
    dump_criteria(shipped, f)
    assert load_criteria(f) == shipped


def test_models_are_frozen(shipped):
    with pytest.raises(Exception, match="frozen"):
        shipped.criteria[0].min_years = 3  # type: ignore[misc]


@functools.cache
def _shipped_trial() -> Trial:
    return load_criteria(default_criteria_path())  # frozen: safe to share between examples


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(0, 120),
    gap=st.integers(0, 90),
    era=st.integers(1, 400),
    switch=st.booleans(),
    coverage=st.dictionaries(
        st.sampled_from(["rituximab", "belimumab", "x y"]), st.integers(1, 400)
    ),
    lookback=st.integers(0, 2000),
    min_years=st.one_of(st.none(), st.integers(0, 99)),
    title=st.text(max_size=20),
    within=st.one_of(st.none(), st.integers(0, 999)),
)
def test_round_trip_variants(
    window, gap, era, switch, coverage, lookback, min_years, title, within
):
    base = _shipped_trial()
    crits = [c.written_as for c in base.criteria]
    crits[0] = crits[0].model_copy(update={"min_years": min_years, "title": title})
    crits[2] = crits[2].model_copy(
        update={
            "window_months": window,
            "persistence_gap_days": gap,
            "min_era_days": era,
            "switches": {"count_antimalarials": switch},
            "coverage_per_dose_days": coverage,
        }
    )
    crits[3] = crits[3].model_copy(update={"lookback_days": lookback})
    rules = list(crits[5].rules)
    rules[2] = rules[2].model_copy(update={"within_days": within})
    crits[5] = crits[5].model_copy(update={"rules": rules})
    trial = Trial.model_validate(base.model_copy(update={"criteria": crits}).model_dump())
    assert loads(dumps(trial)) == trial
    assert loads(dumps(trial, "json"), fmt="json") == trial


def test_second_trial_example_in_docs_loads(tmp_path):
    text = DOCS.read_text()
    start = text.index("```yaml\n# second-trial example")
    block = text[start + len("```yaml\n") : text.index("```", start + 7)]
    f = tmp_path / "example.yaml"
    f.write_text(block)
    trial = load_criteria(f)
    check_value_sets(trial, Terminology.load())
    assert len(trial.criteria) >= 2
