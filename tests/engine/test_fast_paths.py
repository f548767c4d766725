"""The reader's block filter and the engine's no-rows shortcut are only faster: the same tables,
read report, unmapped counts and answers as the plain paths, on the demo and on generated data
with adversarial lines (codes behind escapes, codes only in displays, blanks in codes, loose
JSON spacing, CRLF, BOM, blank and broken lines, a later version of a read resource dropped by
the filter, another type in a typed file, invalid UTF-8, no final newline)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.evaluate import evaluate
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir import ndjson
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import DEMO_DATA, _union_needs
from fhir_cohort.synth import generate

AS_OF = dt.date(2026, 11, 24)
SLE_LINE = (
    '{"resourceType":"Condition","id":"ID","subject":{"reference":"Patient/PID"},'
    '"code":{"coding":[{"system":"http://snomed.info/sct","code":"CODE","display":"DISPLAY"}]},'
    '"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/'
    'condition-clinical","code":"active"}]},"onsetDateTime":"2021-06-03"}'
)
OBS_LINE = (
    '{"resourceType":"Observation","id":"ID","status":"final","code":{"coding":[{"system":'
    '"http://loinc.org","code":"CODE","display":"DISPLAY"}]},"subject":{"reference":'
    '"Patient/PID"},"effectiveDateTime":"2026-09-25","valueQuantity":{"value":150,"unit":'
    '"[IU]/mL"}}'
)


def _line(template: str, rid: str, pid: str, code: str, display: str = "x") -> bytes:
    out = template.replace("ID", rid).replace("PID", pid).replace("CODE", code)
    return out.replace("DISPLAY", display).encode()


def _adversarial(folder: Path, pids: list[str]) -> None:
    """Lines that only the exact rules decide right, spread over the typed files."""
    cond: list[bytes] = []
    obs: list[bytes] = []
    for n, pid in enumerate(pids):
        cond += [
            _line(SLE_LINE, f"adv-esc-{n}", pid, "\\u0035\\u0035464009"),  # 55464009 escaped
            _line(SLE_LINE, f"adv-disp-{n}", pid, "1234", "55464009 Systemic lupus"),
            _line(SLE_LINE, f"adv-blank-{n}", pid, " 55464009"),
            _line(SLE_LINE, f"adv-low-{n}", pid, "m32.14"),
            _line(SLE_LINE, f"adv-plain-{n}", pid, "38341003"),
            _line(SLE_LINE, f"adv-utf-{n}", pid, "38341003", "caf\u00e9"),
            _line(SLE_LINE, f"adv-sle-{n}", pid, "55464009").replace(b'":', b'" : '),
            b"  " + _line(SLE_LINE, f"adv-lead-{n}", pid, "55464009"),
            _line(SLE_LINE, f"adv-crlf-{n}", pid, "38341003") + b"\r",
            b"",
            b'{"resourceType":"Condition","id":"adv-broken',
            _line(OBS_LINE, f"adv-other-{n}", pid, "5130-0"),  # another type: reported
            _line(SLE_LINE, f"adv-bad-{n}", pid, "38341003", "x").replace(b"x", b"\xff"),
        ]
        obs += [
            _line(OBS_LINE, f"adv-o-esc-{n}", pid, "5130\\u002d0"),
            _line(OBS_LINE, f"adv-o-disp-{n}", pid, "8302-2", "5130-0"),
            _line(OBS_LINE, f"adv-o-hit-{n}", pid, "5130-0"),
            _line(OBS_LINE, f"adv-o-miss-{n}", pid, "8302-2"),
            # a contained resource: two resourceType tokens
            _line(OBS_LINE, f"adv-o-cont-{n}", pid, "8302-2")[:-1]
            + b',"contained":[{"resourceType":"Observation","id":"c","code":"5130-0"}]}',
        ]
    # A later version of a read resource whose code is no longer relevant: dropped by the
    # filter, so the reader must read everything again (dedup keeps the latest).
    obs.append(
        _line(OBS_LINE, "adv-o-hit-0", pids[0], "8302-2")[:-1]
        + b',"meta":{"lastUpdated":"2030-01-01T00:00:00Z"}}'
    )
    for name, lines in (("Condition", cond), ("Observation", obs)):
        path = next(folder.glob(f"{name}.*.ndjson"))
        body = path.read_bytes()
        mid = body.index(b"\n", len(body) // 2) + 1
        extra = b"\n".join(lines) + b"\n"
        # in the middle and at the end, the file's last line without a newline
        path.write_bytes(body[:mid] + extra + body[mid:] + extra.rstrip(b"\n"))
    first = next(folder.glob("Condition.*.ndjson"))
    first.write_bytes(ndjson.BOM + first.read_bytes())


def _read(folder: Path, block: bool, **kw: Any) -> tuple[Any, dict[str, Any], Any]:
    trial = load_criteria(default_criteria_path())
    from fhir_cohort.terminology import Terminology

    term = Terminology.load()
    needs = _union_needs([trial], term)
    tables, report = read_tables(
        open_source(folder),
        relevant=needs.codes,
        medication_words=needs.medication_names,
        block_filter=block,
        **kw,
    )
    got = report.as_dict()
    got.pop("seconds")
    return tables, got, report.unmapped.rows()


def _rows(frame: Any) -> list[tuple[str, ...]]:
    # worker processes finish in any order: compare rows, not their order
    return sorted(tuple(map(str, row)) for row in frame.itertuples(index=False))


def _same_read(folder: Path, **kw: Any) -> None:
    fast, plain = _read(folder, True, **kw), _read(folder, False, **kw)
    for name in ("patients", "conditions", "medications", "observations"):
        a, b = getattr(fast[0], name), getattr(plain[0], name)
        assert list(a.columns) == list(b.columns)
        assert _rows(a) == _rows(b), name
        if kw.get("workers", 1) == 1:
            assert a.equals(b), name
    for report in (fast[1], plain[1]):
        report["errors"].sort(key=str)
        report["invalid_utf8"]["locations"].sort()
    assert fast[1] == plain[1]
    assert fast[2] == plain[2]


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hospital")
    generate(folder, n_background=40, seed=7, as_of=AS_OF, files_per_type=2)
    return folder


def test_block_filter_reads_the_demo_as_the_line_filter_does() -> None:
    _same_read(DEMO_DATA, workers=1)


@pytest.mark.parametrize(("block_bytes", "workers"), [(700, 1), (4096, 2)])
def test_block_filter_reads_adversarial_lines_as_the_line_filter_does(
    hospital: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block_bytes: int,
    workers: int,
) -> None:
    # small blocks: adversarial lines land in blocks of every shape, at every edge; with two
    # workers the files are also cut into byte ranges inside the adversarial lines
    monkeypatch.setattr(ndjson, "BLOCK_BYTES", block_bytes)
    folder = tmp_path / "adv"
    shutil.copytree(hospital, folder)
    _adversarial(folder, ["s-eligible-statements", "bg-1", "nobody"])
    _same_read(folder, workers=workers, chunk_bytes=20_000, parallel_min_bytes=0)


def test_block_filter_counts_and_drops_like_the_line_filter(tmp_path: Path) -> None:
    folder = tmp_path / "adv"
    shutil.copytree(DEMO_DATA, folder)
    _adversarial(folder, ["s-eligible-statements"])
    _, report, _ = _read(folder, True)
    # the later version dropped by the filter forced the unfiltered re-read
    assert report["reread_unfiltered"] is True
    assert report["skipped"]  # broken, other-type and invalid lines reported, not dropped


def test_no_rows_shortcut_gives_the_answers_of_a_full_evaluation(hospital: Path) -> None:
    trial = load_criteria(default_criteria_path())
    from fhir_cohort.terminology import Terminology

    term = Terminology.load()
    for folder in (DEMO_DATA, hospital):
        tables, _, _ = _read(folder, True)
        fast = evaluate(trial, tables, term, AS_OF)
        full = evaluate(trial, tables, term, AS_OF, shortcut=False)
        for name in ("answers", "evidence", "status"):
            assert getattr(fast, name).equals(getattr(full, name)), name


def test_copied_outcomes_give_the_answers_of_a_full_evaluation(hospital: Path) -> None:
    # Every shipped trial on a read of the union of their needs: criteria that read none of a
    # patient's rows are copied per Patient-row key (ages at S, sex, death), the patient id put
    # into the Patient evidence; a full evaluation must give the same frames.
    from fhir_cohort.terminology import Terminology

    shipped = default_criteria_path()
    trials = [
        load_criteria(p) for p in [shipped, *sorted((shipped.parent / "trials").glob("*.yaml"))]
    ]
    term = Terminology.load()
    needs = _union_needs(trials, term)
    for folder in (DEMO_DATA, hospital):
        tables, _ = read_tables(
            open_source(folder), relevant=needs.codes, medication_words=needs.medication_names
        )
        for trial in trials:
            fast = evaluate(trial, tables, term, AS_OF)
            full = evaluate(trial, tables, term, AS_OF, shortcut=False)
            for name in ("answers", "evidence", "status"):
                assert getattr(fast, name).equals(getattr(full, name)), (trial.id, name)
