"""patients_table and sort_evidence take a fast path in Arrow for what the engine makes; it must
give exactly the frame of the general pandas path (values, order, dtypes), and step aside for
anything else."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_cohort.report.outputs import (
    EVIDENCE_COLUMNS,
    FORMULA_STARTS,
    STATUS_ORDER,
    TRIALS_COLUMNS,
    _evidence_order,
    _may_start_formula,
    _patients_table_arrow,
    _patients_table_pandas,
    _sort_evidence_pandas,
    patients_table,
    sort_evidence,
    trials_table,
)

ANSWERS = ["met", "clear", "review", "unknown", "not_met", "excluded"]
# text whose code point order differs from UTF-16's and from a naive byte order of Latin-1
TEXT = st.text(alphabet=st.sampled_from(["a", "B", "é", "ß", "\U0001f600", "\uff5e", "0", " "]))


def _same(fast: pd.DataFrame, slow: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert list(fast.dtypes) == list(slow.dtypes)
    assert fast.columns.dtype == slow.columns.dtype
    assert fast.columns.name == slow.columns.name
    assert isinstance(fast.index, pd.RangeIndex)


def _engine_frames(
    ids: list[str], pids: list[str], statuses: list[str], cells: list[list[int]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """status and answers as engine/evaluate.py makes them (answers patient-major; a cell -1:
    no row for that patient and criterion, -2: a row without an answer)."""
    rows = [
        (pid, cid, ANSWERS[a] if a >= 0 else None)
        for pid, line in zip(pids, cells, strict=True)
        for cid, a in zip(ids, line, strict=True)
        if a != -1
    ]
    answers = pd.DataFrame(rows, columns=["patient_id", "criterion_id", "answer"])
    answers = answers.assign(
        criterion_id=pd.Categorical(answers["criterion_id"], categories=ids),
        answer=pd.Categorical(answers["answer"], categories=ANSWERS),
        reason=pd.Categorical(["why"] * len(answers)),
    )
    status = pd.DataFrame(
        {"patient_id": pids, "status": statuses, "reasons": [f"r {p}" for p in pids]}
    )
    return answers, status


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    pids=st.lists(TEXT, min_size=1, max_size=12, unique=True),
    ids=st.lists(st.sampled_from(["age", "sle", "x", "é"]), min_size=1, max_size=4, unique=True),
)
def test_patients_fast_path_is_the_pandas_frame(data, pids: list[str], ids: list[str]) -> None:
    statuses = data.draw(
        st.lists(st.sampled_from(STATUS_ORDER), min_size=len(pids), max_size=len(pids))
    )
    cells = data.draw(
        st.lists(
            st.lists(st.integers(-2, len(ANSWERS) - 1), min_size=len(ids), max_size=len(ids)),
            min_size=len(pids),
            max_size=len(pids),
        )
    )
    order = data.draw(st.permutations(range(len(ids))))  # the trial's order, not the engine's
    trial_ids = [ids[i] for i in order]
    answers, status = _engine_frames(ids, pids, statuses, cells)
    slow = _patients_table_pandas(answers, status, trial_ids)
    fast = _patients_table_arrow(answers, status, trial_ids)
    answered = {ids[j] for line in cells for j, a in enumerate(line) if a != -1}
    if answered == set(ids):
        assert fast is not None
        _same(fast, slow)
    else:  # a criterion nobody has an answer for is a float column in pandas: left to it
        assert fast is None
    _same(patients_table(answers, status, trial_ids), slow)


def test_patients_fast_path_steps_aside_for_what_it_does_not_cover() -> None:
    ids = ["age", "sle"]
    answers, status = _engine_frames(ids, ["p2", "p1"], ["review", "eligible"], [[0, 4], [1, -1]])
    assert _patients_table_arrow(answers, status, ids) is not None
    unknown_status = status.assign(status=["review", "maybe"])
    duplicate_patient = pd.concat([status, status.iloc[:1]], ignore_index=True)
    stranger = pd.concat([answers, answers.iloc[:1].assign(patient_id="p9")], ignore_index=True)
    plain = answers.astype({"answer": "str"})
    object_ids = status.astype({"patient_id": object})
    for a, s in (
        (answers, unknown_status),
        (answers, duplicate_patient),
        (stranger, status),
        (plain, status),
        (answers, object_ids),
        (answers.iloc[:0], status),
    ):
        assert _patients_table_arrow(a, s, ids) is None
        _same(patients_table(a, s, ids), _patients_table_pandas(a, s, ids))
    assert _patients_table_arrow(answers, status, ["age", "age"]) is None
    assert _patients_table_arrow(answers, status, ["age", "status"]) is None
    # two answers for one patient and criterion: pandas' pivot refuses them, so does this
    twice = pd.concat([answers, answers.iloc[:1]], ignore_index=True)
    assert _patients_table_arrow(twice, status, ids) is None
    with pytest.raises(ValueError):
        patients_table(twice, status, ids)


def test_patients_answers_of_criteria_outside_the_trial_are_dropped() -> None:
    answers, status = _engine_frames(
        ["age", "sle", "old"], ["a", "b"], ["ineligible", "eligible"], [[0, 1, 2], [3, 4, 5]]
    )
    fast = _patients_table_arrow(answers, status, ["sle", "age"])
    assert fast is not None
    _same(fast, _patients_table_pandas(answers, status, ["sle", "age"]))


EVIDENCE_KEYS = ["patient_id", "_c", "date", "resource_type", "resource_id", "code", "note"]
EVIDENCE_KEYS += ["system", "display", "value"]
CELL = st.one_of(st.none(), st.sampled_from(["", "a", "B", "é", "\U0001f600", "2024-01-02"]))


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "P1", "é"]),
            st.sampled_from(["age", "sle", "gone", "x"]),
            *[CELL] * (len(EVIDENCE_COLUMNS) - 2),
        ),
        max_size=25,
    )
)
def test_evidence_fast_order_is_the_pandas_order(rows: list[tuple]) -> None:
    evidence = pd.DataFrame(rows, columns=list(EVIDENCE_COLUMNS), dtype="str")
    ids = ["sle", "age", "x"]  # "gone": a criterion outside the trial sorts first, as NaN did
    assert _evidence_order(evidence, ids, EVIDENCE_KEYS) is not None
    _same(sort_evidence(evidence, ids), _sort_evidence_pandas(evidence, ids, EVIDENCE_KEYS))


def test_evidence_fast_order_steps_aside() -> None:
    evidence = pd.DataFrame([["p", "age"] + ["v"] * 8], columns=list(EVIDENCE_COLUMNS))
    evidence = evidence.astype("str")
    assert _evidence_order(evidence, ["age", "age"], EVIDENCE_KEYS) is None
    objects = evidence.astype({"note": object})
    assert _evidence_order(objects, ["age"], EVIDENCE_KEYS) is None
    _same(sort_evidence(objects, ["age"]), _sort_evidence_pandas(objects, ["age"], EVIDENCE_KEYS))
    missing = evidence.drop(columns="value")  # reindexed to a column of floats: pandas sorts
    _same(
        sort_evidence(missing, ["age"]),
        _sort_evidence_pandas(
            missing.reindex(columns=list(EVIDENCE_COLUMNS)), ["age"], EVIDENCE_KEYS
        ),
    )
    _same(
        sort_evidence(evidence.iloc[:0], ["age"]),
        _sort_evidence_pandas(evidence.iloc[:0], ["age"], EVIDENCE_KEYS),
    )


def _formula_reference(cells) -> bool:
    """What write_csv tested before: each cell's first character."""
    import pyarrow.compute as pc

    firsts = pc.utf8_slice_codeunits(cells, 0, 1)
    return bool(pc.any(pc.is_in(firsts, _starts())).as_py())


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.text(
            alphabet=st.sampled_from(["a", "=", "+", "-", "@", "\t", "\r", "'", "é", "\u2212"])
        ),
        max_size=8,
    ),
    cut=st.integers(0, 8),
    large=st.booleans(),
)
def test_the_first_byte_test_is_the_first_character_test(
    texts: list[str], cut: int, large: bool
) -> None:
    import pyarrow as pa

    kind = pa.large_string() if large else pa.string()
    whole = pa.array(texts, kind)
    # a slice (an offset into the buffers) and a chunked array of the two parts
    for cells in (whole, whole[cut:], pa.chunked_array([whole[:cut], whole[cut:]], kind)):
        assert _may_start_formula(cells, _starts()) == _formula_reference(cells)


def _starts():
    import pyarrow as pa

    return pa.array(sorted({*FORMULA_STARTS, "'"}))


def test_the_first_byte_test_leaves_other_layouts_to_arrow() -> None:
    import pyarrow as pa

    assert _may_start_formula(pa.array(["a", None, "=b"]), _starts())
    assert not _may_start_formula(pa.array(["a", None, "b"]), _starts())
    assert not _may_start_formula(pa.array([], pa.string()), _starts())
    assert not _may_start_formula(pa.array(["", ""], pa.string()), _starts())


def _trials_reference(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """trials_table as it was: pandas' stable sort by patient id, then the trials' order."""
    parts = [
        f[["patient_id", "status", "reasons"]].assign(trial_id=t, _t=r)
        for r, (t, f) in enumerate(frames.items())
    ]
    table = pd.concat(parts, ignore_index=True).sort_values(["patient_id", "_t"], kind="stable")
    return table[list(TRIALS_COLUMNS)].reset_index(drop=True)


@settings(max_examples=100, deadline=None)
@given(
    trials=st.lists(
        st.lists(st.tuples(st.one_of(st.none(), TEXT), st.sampled_from(STATUS_ORDER))),
        min_size=1,
        max_size=3,
    )
)
def test_trials_table_is_sorted_as_pandas_sorts(trials: list[list[tuple]]) -> None:
    frames = {
        f"T{i}": pd.DataFrame(
            {
                "patient_id": pd.Series([p for p, _ in rows], dtype="str"),
                "status": pd.Series([s for _, s in rows], dtype="str"),
                "reasons": pd.Series([f"r{j}" for j in range(len(rows))], dtype="str"),
            }
        )
        for i, rows in enumerate(trials)
    }
    _same(trials_table(frames), _trials_reference(frames))
    as_objects = {t: f.astype(object) for t, f in frames.items()}  # pandas sorts these
    _same(trials_table(as_objects), _trials_reference(as_objects))
