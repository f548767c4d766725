"""The engine reproduces every expected answer of the synthetic hospital.

The generator states, per patient and criterion, the answer the spec demands; these tests run
the whole pipeline (reader, flatten, engine, outputs) on the data it wrote.
"""

from __future__ import annotations

from datetime import date
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort import pipeline
from fhir_cohort.engine.read import read_tables
from fhir_cohort.pipeline import DEMO_DATA, screen
from fhir_cohort.synth import generate, load_expected
from fhir_cohort.synth.codes import CRITERIA
from fhir_cohort.terminology import Terminology


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


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip-files", "byte-ranges"])
def test_parallel_reading_gives_the_same_frames_as_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzip: bool
) -> None:
    """Worker processes read split files (gzip: one task per file; plain: line-aligned byte
    ranges) and give the very same patients and evidence as one process."""
    as_of = date(2026, 11, 24)
    generate(tmp_path, n_background=15, seed=11, as_of=as_of, files_per_type=3, gzip=gzip)
    # This data is far below the size at which screen() fans out; lower the bar, and cut
    # plain files into many small ranges so range boundaries fall inside lines.
    monkeypatch.setattr(
        pipeline, "read_tables", partial(read_tables, parallel_min_bytes=0, chunk_bytes=65_536)
    )
    term = Terminology.load()
    serial = screen(tmp_path, as_of=as_of, workers=1, terminology=term)
    parallel = screen(tmp_path, as_of=as_of, workers=2, terminology=term)
    assert serial.run["workers"] == 1
    assert parallel.run["workers"] == 2
    assert _mismatches(serial.patients, load_expected(tmp_path)) == []
    pd.testing.assert_frame_equal(parallel.patients, serial.patients)
    # Evidence rows may arrive in another order from the workers; their content may not differ.
    key = list(serial.evidence.columns)
    pd.testing.assert_frame_equal(
        parallel.evidence.sort_values(key).reset_index(drop=True),
        serial.evidence.sort_values(key).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(parallel.attrition, serial.attrition)
