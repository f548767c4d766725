"""The engine reproduces every expected answer of the synthetic hospital.

The generator states, per patient and criterion, the answer the spec demands; these tests run
the whole pipeline (reader, flatten, engine, outputs) on the data it wrote.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.pipeline import DEMO_DATA, screen
from fhir_cohort.synth import generate, load_expected
from fhir_cohort.synth.codes import CRITERIA


def _mismatches(got: pd.DataFrame, expected: pd.DataFrame) -> list[str]:
    got = got.set_index("patient_id")
    out = []
    for row in expected.itertuples(index=False):
        for col in ("status", *CRITERIA):
            want, have = getattr(row, col), got.at[row.patient_id, col]
            if want != have:
                out.append(f"{row.patient_id} {col}: expected {want}, got {have}")
    return out


def test_demo_hospital_matches_every_expected_answer() -> None:
    result = screen(DEMO_DATA, as_of=date(2026, 11, 24))
    expected = load_expected(DEMO_DATA)
    assert set(result.patients["patient_id"]) == set(expected["patient_id"])
    assert _mismatches(result.patients, expected) == []


@pytest.mark.parametrize("as_of", [date(2024, 2, 29), date(2025, 12, 31)])
def test_scenarios_hold_for_other_as_of_dates(tmp_path: Path, as_of: date) -> None:
    generate(tmp_path, n_background=20, seed=7, as_of=as_of)
    result = screen(tmp_path, as_of=as_of)
    assert _mismatches(result.patients, load_expected(tmp_path)) == []


def test_parallel_gzip_split_files_give_the_same_answers(tmp_path: Path) -> None:
    generate(
        tmp_path, n_background=40, seed=11, as_of=date(2026, 11, 24), files_per_type=3, gzip=True
    )
    one = screen(tmp_path, as_of=date(2026, 11, 24), workers=1)
    expected = load_expected(tmp_path)
    assert _mismatches(one.patients, expected) == []
