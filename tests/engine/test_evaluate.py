"""evaluate(): answers, status, evidence shape, patients without data, partitioning, attrition."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_cohort.engine.evaluate import (
    ANSWER_COLUMNS,
    CATEGORICAL_ANSWER_COLUMNS,
    EVIDENCE_COLUMNS,
    STATUS_COLUMNS,
    EvaluationResult,
    Prepared,
    _answer_lists,
    _answers_frame,
    _Column,
    _frame,
    attrition,
    evaluate,
)
from fhir_cohort.engine.tables import Tables
from tests.criteria_variants import shorthand


def _eligible_rows(b, pid: str = "p1") -> dict:
    """A patient meeting every criterion under the shipped NCT06038474 criteria."""
    return {
        "conditions": [b.cond(b.SLE, pid, onset="2015-03-01")],
        "medications": [
            b.med(b.PREDNISONE, "2024-01-01", "2024-06-30", pid),
            b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01", pid),
            b.med(b.MMF, "2024-04-01", "2025-01-01", pid),
        ],
        "observations": [b.obs(b.ANTI_DSDNA, "2025-03-01", pid, interpretation=(f"{b.V3}|POS",))],
    }


def test_patient_without_data_gets_every_criterion(run, b, trial):
    res = run(patients=[b.pat("p1", birth="1990-05-05")])
    got = dict(zip(res.answers.criterion_id, res.answers.answer, strict=True))
    assert list(res.answers.columns) == list(ANSWER_COLUMNS)
    assert list(res.evidence.columns) == list(EVIDENCE_COLUMNS)
    assert list(res.status.columns) == list(STATUS_COLUMNS)
    assert got == {
        "age": "met",
        "sle": "not_met",
        "therapy": "not_met",
        "autoantibody": "unknown",
        "lupus_nephritis": "clear",
        "cns_lupus": "clear",
        "pregnancy_lactation": "clear",
        "chronic_illness": "clear",
    }
    assert [c.id for c in trial.criteria] == list(res.answers.criterion_id)
    assert res.status.status.tolist() == ["ineligible"]


def test_eligible_patient_carries_the_review_note(run, b, trial):
    res = run(**_eligible_rows(b))
    assert set(res.answers.answer) == {"met", "clear"}
    st = res.status.iloc[0]
    assert st.status == "eligible"
    note = shorthand("therapy").review_note
    assert note in st.reasons
    assert note in set(res.evidence.note)


def test_review_status_and_reasons(run, b):
    rows = _eligible_rows(b)
    rows["conditions"].append(b.cond(b.HEADACHE, recorded="2025-06-01"))
    res = run(**rows)
    st = res.status.iloc[0]
    assert st.status == "review"
    assert "cns_lupus: review: headache; may re-screen when resolved" in st.reasons


def test_deceased_patient_is_ineligible(run, b):
    rows = _eligible_rows(b)
    res = run(patients=[b.pat(deceased=True, deceased_date=b.d("2025-01-01"))], **rows)
    assert res.status.status.tolist() == ["ineligible"]
    assert "deceased" in res.status.reasons[0]


def test_anything_after_as_of_is_ignored(run, b):
    rows = _eligible_rows(b)
    res_then = run(as_of=b.d("2014-01-01"), **rows)
    got = dict(zip(res_then.answers.criterion_id, res_then.answers.answer, strict=True))
    assert got["sle"] == "not_met"
    assert got["therapy"] == "not_met"
    assert "after as-of date" in set(res_then.evidence.note)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical answer columns as their text: a partition's categories are those it saw."""
    return frame.astype(
        {c: "str" for c, t in frame.dtypes.items() if isinstance(t, pd.CategoricalDtype)}
    )


def test_partitionable_by_patient(run, b):
    a, c = _eligible_rows(b, "pa"), _eligible_rows(b, "pc")
    c["conditions"].append(b.cond(b.LN_CLASS_IV, "pc"))
    patients = [b.pat("pa"), b.pat("pb", birth="2015-01-01"), b.pat("pc")]
    whole = run(
        patients=patients,
        conditions=a["conditions"] + c["conditions"],
        medications=a["medications"] + c["medications"],
        observations=a["observations"] + c["observations"],
    )
    part = run(
        patients=[patients[2]],
        conditions=c["conditions"],
        medications=c["medications"],
        observations=c["observations"],
    )
    for name in ("answers", "evidence", "status"):
        w = getattr(whole, name)
        pd.testing.assert_frame_equal(
            _as_text(w[w.patient_id == "pc"].reset_index(drop=True)),
            _as_text(getattr(part, name).reset_index(drop=True)),
        )
    assert whole.status.set_index("patient_id").status.to_dict() == {
        "pa": "eligible",
        "pb": "ineligible",
        "pc": "ineligible",
    }


def test_attrition(run, b, trial):
    a, c = _eligible_rows(b, "pa"), _eligible_rows(b, "pc")
    c["conditions"].append(b.cond(b.LN_CLASS_IV, "pc"))
    res = run(
        patients=[
            b.pat("pa"),
            b.pat("pb", birth="2015-01-01"),
            b.pat("pc"),
            b.pat("pd", birth=None),
        ],
        conditions=a["conditions"] + c["conditions"],
        medications=a["medications"] + c["medications"],
        observations=a["observations"] + c["observations"],
    )
    att = attrition(res, trial)
    assert res._layout is not None  # read from the answers' codes: as from the frame alone
    plain = EvaluationResult(res.answers, res.evidence, res.status)
    pd.testing.assert_frame_equal(att, attrition(plain, trial))
    assert att.criterion_id.tolist() == ["all"] + [c.id for c in trial.criteria]
    remaining = dict(zip(att.criterion_id, att.remaining, strict=True))
    # pb fails age; pd (no birthDate, age unknown) then fails sle; pc is excluded by E1.
    assert remaining == {
        "all": 4,
        "age": 3,
        "sle": 2,
        "therapy": 2,
        "autoantibody": 2,
        "lupus_nephritis": 1,
        "cns_lupus": 1,
        "pregnancy_lactation": 1,
        "chronic_illness": 1,
    }
    age = att[att.criterion_id == "age"].iloc[0]
    assert (age.met, age.not_met, age.unknown) == (2, 1, 1)
    ln = att[att.criterion_id == "lupus_nephritis"].iloc[0]
    assert (ln.clear, ln.excluded, ln.review) == (3, 1, 0)


def test_tables_with_timestamps_nans_and_numpy_bools(run, b, terminology, trial):
    """Tables built by pandas (datetime64 columns, NaN, numpy bools) read like plain rows."""
    from fhir_cohort.engine.evaluate import evaluate

    t = Tables.from_rows([b.pat()], [b.cond(b.SLE, onset="2015-03-01")], [], [])
    t.conditions["onset_date"] = pd.to_datetime(t.conditions["onset_date"])
    t.conditions["has_abatement"] = t.conditions["has_abatement"].astype(bool)
    t.patients["deceased"] = float("nan")
    res = evaluate(trial, t, terminology, b.AS_OF)
    ans = dict(zip(res.answers.criterion_id, res.answers.answer, strict=True))
    assert ans["sle"] == "met"
    assert ans["age"] == "met"
    assert res.evidence[res.evidence.criterion_id == "sle"].date.tolist() == ["2015-03-01"]


def test_no_patients(run, trial):
    res = run(patients=[])
    assert res.answers.empty and res.evidence.empty and res.status.empty
    att = attrition(res, trial)
    assert att.remaining.tolist() == [0] * (len(trial.criteria) + 1)


def test_patients_without_rows_share_answers_but_not_age(run, b):
    res = run(
        patients=[
            b.pat("a", birth="1990-01-01", gender="male"),
            b.pat("b", birth="2015-01-01", gender="female"),
        ],
        conditions=[b.cond(b.PREGNANCY, "c", onset="2025-05-01")],
    )
    ans = res.answers.set_index(["patient_id", "criterion_id"]).answer
    assert ans[("a", "age")] == "met" and ans[("b", "age")] == "not_met"
    assert ans[("a", "pregnancy_lactation")] == ans[("b", "pregnancy_lactation")] == "clear"
    reasons = res.answers.set_index(["patient_id", "criterion_id"]).reason
    # The sex gate and the (false) rest of the rule both say why it is clear.
    assert reasons[("a", "pregnancy_lactation")].startswith("not applicable (sex male)")


def test_answer_columns_build_the_frame_from_records_builds() -> None:
    """evaluate builds its answers column by column (memory): the same frame, dtypes included,
    as DataFrame.from_records over the rows, for every kind of column an answer can hold."""
    cases = [
        [],
        [("p1", "I1", "met", "ok")],
        [("p1", "I1", "met", "ok"), ("p2", "E1", "review", None), ("p3", "E2", None, "")],
        [("p1", "I1", "met", None), ("p2", "I1", "not_met", None)],
        [(None, "I1", "met", "x"), ("p2", "I1", "unknown", 'a, "b"')],
    ]
    for rows in cases:
        expected = pd.DataFrame.from_records(rows, columns=list(ANSWER_COLUMNS))
        columns = [list(c) for c in zip(*rows, strict=True)] or [[] for _ in ANSWER_COLUMNS]
        got = _frame(columns, ANSWER_COLUMNS)
        pd.testing.assert_frame_equal(got, expected)
        assert list(got.dtypes) == list(expected.dtypes)
        assert all(not c for c in columns)  # each list emptied once converted


def test_what_several_trials_share_is_kept_until_the_last_of_them_and_no_longer(
    terminology,
) -> None:
    """Prepared.share keeps a key that more than one trial asks for, from its first trial to
    its last (whatever trials lie between), and never one that a single trial asks for."""
    empty = Tables.from_rows([], [], [], [])
    prep = Prepared(empty, terminology, as_of=date(2026, 1, 1))
    prep.share([["a", "b", "b"], ["c"], ["a"], ["b", "a"]])
    assert prep.shared_column("c") is None and not prep.is_shared("c")
    calls: list[str] = []
    column = _Column([0], [], np.zeros(0, dtype=np.int64), "I1")

    def frame() -> pd.DataFrame:
        calls.append("b")
        return pd.DataFrame({"x": [1]})

    for trial, keys in enumerate([["a", "b"], ["c"], ["a"], ["b", "a"]]):
        assert all(prep.is_shared(k) for k in keys if k != "c"), trial
        if trial == 0:
            assert prep.shared_column("a") is None
            prep.keep_column("a", column)
            prep.keep_column("c", column)  # asked by one trial: not kept
        else:
            assert prep.shared_column("a") is column
        if "b" in keys:
            prep.shared_frame("b", frame)
        prep.done_with(keys)
    assert calls == ["b"]  # computed by its first trial only
    assert prep.shared_column("a") is None and prep.shared_column("b") is None
    assert not prep._shared_columns and not prep._shared_frames  # freed after the last


@settings(max_examples=200, deadline=None)
@given(
    pids=st.lists(st.sampled_from(["p1", "p2", "p3", "p10", "é"]), max_size=6),
    crit_ids=st.lists(st.sampled_from(["I1", "I2", "E1", "E2"]), max_size=4),
    values=st.lists(
        st.tuples(
            st.sampled_from(["met", "not_met", "unknown", "clear", "excluded", "review"]),
            st.sampled_from(["", "ok", "no rows", 'a, "b"', "ok "]),
        ),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_the_answers_frame_from_codes_is_the_frame_of_the_answers_texts(
    pids: list[str], crit_ids: list[str], values: list[tuple[str, str]], data: st.DataObject
) -> None:
    """_answers_frame builds from integer codes the very frame _frame builds from the texts
    (same values, dtypes and category order), duplicate ids and empty tables included."""
    codes = [
        data.draw(st.lists(st.integers(0, len(values) - 1), min_size=len(pids), max_size=len(pids)))
        for _ in crit_ids
    ]
    expected = _frame(
        _answer_lists(pids, crit_ids, codes, values), ANSWER_COLUMNS, CATEGORICAL_ANSWER_COLUMNS
    )
    got = _answers_frame(pids, crit_ids, codes, values)
    pd.testing.assert_frame_equal(got, expected)
    for column in CATEGORICAL_ANSWER_COLUMNS:
        if isinstance(expected[column].dtype, pd.CategoricalDtype):
            assert list(got[column].cat.categories) == list(expected[column].cat.categories)


def test_a_pass_sharing_answer_columns_answers_as_each_trial_alone(b, terminology) -> None:
    """Criteria several trials (or one trial twice) ask identically are answered once per
    pass and their columns taken whole, also under another criterion id: every trial's
    answers, evidence, status and attrition equal those of the trial evaluated alone."""
    from fhir_cohort.criteria.io import parse_criteria
    from fhir_cohort.pipeline import pass_keys
    from tests.criteria_variants import shipped_document

    def trial_of(tid: str, change) -> Any:
        doc = shipped_document()
        doc["id"] = tid
        change(doc["criteria"])
        return parse_criteria(doc)

    def twice(criteria: list[dict]) -> None:  # the same rules twice, under new ids
        criteria.extend({**c, "id": c["id"] + "_again"} for c in list(criteria[:3]))

    def renamed(criteria: list[dict]) -> None:
        criteria[1]["id"] = "sle_elsewhere"

    def older(criteria: list[dict]) -> None:
        criteria[0]["min_years"] = 40

    trials = [trial_of("A", twice), trial_of("B", renamed), trial_of("C", older)]
    a, c = _eligible_rows(b, "pa"), _eligible_rows(b, "pc")
    c["conditions"].append(b.cond(b.LN_CLASS_IV, "pc"))
    tables = Tables.from_rows(
        [b.pat("pa"), b.pat("pb", birth="2015-01-01"), b.pat("pc"), b.pat("pd", birth=None)]
        + [b.pat(f"q{i}", birth=f"19{50 + i}-02-03") for i in range(6)],
        a["conditions"] + c["conditions"] + [b.cond(b.PREGNANCY, "q1", onset="2025-05-01")],
        a["medications"] + c["medications"],
        a["observations"] + c["observations"],
    )
    as_of = date(2025, 6, 30)
    prep = Prepared(tables, terminology, as_of)
    prep.share(pass_keys(t) for t in trials)
    for trial in trials:
        together = evaluate(trial, tables, terminology, as_of, prep)
        alone = evaluate(trial, tables, terminology, as_of)
        for name in ("answers", "evidence", "status"):
            pd.testing.assert_frame_equal(getattr(together, name), getattr(alone, name))
        pd.testing.assert_frame_equal(attrition(together, trial), attrition(alone, trial))
    assert not prep._shared_columns  # each freed after its last trial
