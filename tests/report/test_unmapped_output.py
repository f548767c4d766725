"""unmapped.csv: written with every screening, private, the documented columns, reopened by
load_results; run.json carries the per-type summary."""

from __future__ import annotations

import json
import stat
from datetime import date
from pathlib import Path

import pandas as pd

from fhir_cohort import load_results, screen
from fhir_cohort.engine.unmapped import UNMAPPED_COLUMNS, UNMAPPED_TYPES
from fhir_cohort.report.outputs import unmapped_table


def test_every_screening_writes_a_private_unmapped_csv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = screen(as_of=date(2026, 11, 24), out_dir=out)
    path = out / "unmapped.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = pd.read_csv(path, keep_default_na=False)
    assert tuple(table.columns) == UNMAPPED_COLUMNS
    assert set(table["resource_type"]) <= set(UNMAPPED_TYPES)
    assert (table["count"] > 0).all()
    # Most frequent first within each type.
    for _, part in table.groupby("resource_type", sort=False):
        assert list(part["count"]) == sorted(part["count"], reverse=True)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    per_type = run["unmapped"]["per_type"]
    assert run["unmapped"]["free_text_listed"] is False
    for rtype, part in table.groupby("resource_type"):
        assert per_type[rtype]["codes_listed"] == len(part)
        assert per_type[rtype]["records"] >= part["count"].sum()
    again = load_results(out)
    assert again.unmapped.equals(table)
    assert result.unmapped.reset_index(drop=True).equals(table)


def test_no_patient_data_beyond_codes_and_counts(tmp_path: Path) -> None:
    """No patient id, resource id or date of the demo hospital reaches unmapped.csv."""
    out = tmp_path / "out"
    result = screen(as_of=date(2026, 11, 24), out_dir=out)
    text = (out / "unmapped.csv").read_text(encoding="utf-8")
    for pid in result.patients["patient_id"]:
        assert f"{pid}" not in text
    assert "Patient/" not in text and "-o1" not in text


def test_an_empty_table_still_has_its_header(tmp_path: Path) -> None:
    frame = unmapped_table([])
    assert tuple(frame.columns) == UNMAPPED_COLUMNS and frame.empty
