"""Partitioned evaluation gives the same rows as one process."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine import parallel
from fhir_cohort.engine.evaluate import evaluate
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import DEMO_DATA, relevant_codes
from fhir_cohort.terminology import Terminology


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(str).sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.parametrize("workers", [2, 3])
def test_partitions_reproduce_the_single_process_result(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    term = Terminology.load()
    trial = load_criteria(default_criteria_path())
    tables, _ = read_tables(open_source(Path(DEMO_DATA)), relevant=relevant_codes(trial, term),
                            medication_words=term.medication_names())
    as_of = date(2026, 11, 24)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_PATIENTS", 0)
    one = evaluate(trial, tables, term, as_of)
    many = parallel.evaluate_parallel(trial, tables, term, as_of, workers)
    for name in ("answers", "evidence", "status"):
        pd.testing.assert_frame_equal(_canon(getattr(one, name)), _canon(getattr(many, name)))
