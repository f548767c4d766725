"""The committed demo folder is exactly what the generator writes for its documented command."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import fhir_cohort
from fhir_cohort.synth import generate, load_expected

DEMO = Path(fhir_cohort.__file__).parent / "demo_data"


def test_demo_data_regenerates_byte_for_byte(tmp_path: Path) -> None:
    summary = generate(tmp_path, n_background=300, seed=20261124, as_of=date(2026, 11, 24))
    assert summary.files
    for path in summary.files:
        committed = DEMO / path.name
        assert committed.exists(), path.name
        assert committed.read_bytes() == path.read_bytes(), path.name
    generated = {p.name for p in summary.files}
    on_disk = {p.name for p in DEMO.iterdir() if p.suffix in (".ndjson", ".csv")}
    assert on_disk == generated


def test_demo_readme_states_command_and_as_of() -> None:
    text = (DEMO / "README.md").read_text(encoding="utf-8")
    assert "--as-of 2026-11-24" in text
    assert "--seed 20261124" in text and "--patients 300" in text


def test_demo_expected_has_candidates() -> None:
    exp = load_expected(DEMO)
    assert len(exp) == 496
    assert (exp.status == "eligible").sum() >= 20
    assert (exp.status == "review").sum() >= 20
