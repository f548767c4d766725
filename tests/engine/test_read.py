"""The reader: parallel byte ranges give the same tables and exact error locations."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.read import _split, read_tables
from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import relevant_codes
from fhir_cohort.synth import generate
from fhir_cohort.terminology import Terminology


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate(out, n_background=60, seed=3, as_of=date(2026, 11, 24))
    return out


def _read(path: Path, term: Terminology, **kw) -> tuple:
    trial = load_criteria(default_criteria_path())
    return read_tables(
        open_source(path),
        relevant=relevant_codes(trial, term),
        medication_words=term.medication_names(),
        **kw,
    )


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(str).sort_values(list(df.columns)).reset_index(drop=True)


def test_split_ranges_cover_the_file_on_line_boundaries(hospital: Path) -> None:
    path = hospital / "Observation.000.ndjson"
    tasks = _split(path, "Observation", chunk_bytes=50_000)
    assert len(tasks) > 3
    data = path.read_bytes()
    assert tasks[0].start == 0 and tasks[-1].end == len(data)
    for a, b in itertools.pairwise(tasks):
        assert a.end == b.start
        assert data[b.start - 1 : b.start] == b"\n"
        assert b.first_line == data[: b.start].count(b"\n") + 1


def test_parallel_ranges_give_the_same_tables(hospital: Path, term: Terminology) -> None:
    one, rep1 = _read(hospital, term, workers=1)
    two, rep2 = _read(hospital, term, workers=2, chunk_bytes=40_000, parallel_min_bytes=0)
    assert rep2.workers == 2 and rep1.workers == 1
    for name in ("patients", "conditions", "medications", "observations"):
        pd.testing.assert_frame_equal(_canon(getattr(one, name)), _canon(getattr(two, name)))
    assert rep1.parsed == rep2.parsed and rep1.lines == rep2.lines


def test_malformed_lines_are_located_exactly_in_ranges(
    tmp_path: Path, hospital: Path, term: Terminology
) -> None:
    lines = (hospital / "Condition.000.ndjson").read_bytes().splitlines(keepends=True)
    lines[10] = b'{"resourceType": "Condition", "id": \n'  # broken JSON on line 11
    lines[-3] = b"[1, 2]\n"  # not an object, third from last
    (tmp_path / "Condition.000.ndjson").write_bytes(b"".join(lines))
    (tmp_path / "Patient.000.ndjson").write_bytes((hospital / "Patient.000.ndjson").read_bytes())
    _, report = _read(tmp_path, term, workers=2, chunk_bytes=20_000, parallel_min_bytes=0)
    where = sorted(loc.rsplit(":", 1)[1] for loc, _ in report.errors)
    assert where == sorted([str(11), str(len(lines) - 2)])
    assert report.skipped["Condition"] == 2
    assert all("Condition.000.ndjson" in loc for loc, _ in report.errors)
    with pytest.raises(MalformedResourceError, match=r"Condition\.000\.ndjson:11"):
        _read(tmp_path, term, workers=1, strict=True)


def test_kept_error_and_reference_locations_do_not_depend_on_the_merge_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers' skipped-line locations (run.json errors, invalid_utf8) and unresolved
    references, more than are kept, merged in any order: the first ones in reading order
    (file order, then line or entry number), the same list every time."""
    from fhir_cohort.engine import dedup
    from fhir_cohort.engine import read as read_module

    monkeypatch.setattr(read_module, "MAX_ERRORS_KEPT", 5)
    monkeypatch.setattr(dedup, "MAX_LOCATIONS", 4)
    files = ["b/Condition.ndjson", "a/Observation.ndjson", "c/bundle.json"]

    def part(name: str, lines: range) -> read_module._TaskResult:
        res = read_module._TaskResult()
        for n in lines:
            loc = f"{name}#entry[{n}]" if name.endswith(".json") else f"{name}:{n}"
            res.errors.append((loc, "not JSON"))
            res.on_replaced(loc)
            res.ledger.unresolved_reference(loc, "Condition", "subject", "absolute")
        return res

    def merged(order: list[int]) -> tuple[list, list, dict]:
        parts = [
            part(files[0], range(9, 13)),
            part(files[0], range(1, 4)),
            part(files[1], range(2, 20, 3)),
            part(files[2], range(10, 0, -4)),
        ]
        report, ledger = read_module.ReadReport(files=files), dedup.Ledger()
        for i in order:
            report.merge(parts[i])
            ledger.merge(parts[i].ledger)
        return report.errors, report.replaced_at, ledger.unresolved_report([])

    want = merged([0, 1, 2, 3])
    assert [loc for loc, _ in want[0]] == [
        "b/Condition.ndjson:1",
        "b/Condition.ndjson:2",
        "b/Condition.ndjson:3",
        "b/Condition.ndjson:9",
        "b/Condition.ndjson:10",
    ]
    assert want[1] == [loc for loc, _ in want[0]]
    assert want[2]["locations_truncated"] and len(want[2]["locations"]) == 4
    for order in itertools.permutations(range(4)):
        assert merged(list(order)) == want
