"""The same input gives the same output files, byte for byte, however the read is split.

One synthetic hospital (scenario patients and background patients, several files per type)
plus records whose unmapped codes have equally frequent display spellings in different files,
so the tie is split across workers. It is screened with 1, 2 and 3 reader workers, with the
workers' results taken in the order they finish and in the reverse of the order they were
started, from folders whose files were written in different orders; every output file must
be the same (Parquet tables: same content, same row order; run.json: the same apart from
timings, the worker count and the folder's name).
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import shutil
from collections.abc import Iterable, Iterator
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from fhir_cohort import pipeline
from fhir_cohort.engine import read as read_module
from fhir_cohort.engine.read import read_tables
from fhir_cohort.pipeline import screen
from fhir_cohort.synth import generate
from fhir_cohort.terminology import Terminology

AS_OF = date(2026, 11, 24)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
# run.json entries that say how the run went, not what it found.
VOLATILE = ("started", "timings_seconds", "seconds", "workers")


def _patients(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.glob("Patient*.ndjson")):
        ids.extend(orjson.loads(line)["id"] for line in path.read_bytes().splitlines())
    return sorted(ids)


def _tie_records(patients: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Extra files (name -> resources) whose unmapped codes tie on display frequency across
    files: a medication (parsed, keyed by its coding array with the display) spelled "Zeta
    tablet" twice in one file and "Alpha tablet" twice in another; an Observation code that is
    one of two keys of equal count (line keys: the "code" values) with the displays "Qu" and
    "Pe"; a Condition code read with two displays under one line key."""
    who = iter(patients * 4)

    def subject() -> dict[str, str]:
        return {"reference": f"Patient/{next(who)}"}

    def med(i: str, display: str) -> dict[str, Any]:
        return {
            "resourceType": "MedicationStatement",
            "id": f"tie-ms-{i}",
            "status": "completed",
            "subject": subject(),
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "990001", "display": display}]
            },
            "effectiveDateTime": "2025-01-01",
        }

    def obs(i: str, codes: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"tie-o-{i}",
            "status": "final",
            "subject": subject(),
            "code": {"coding": [{"system": LOINC, "code": c, "display": d} for c, d in codes]},
            "effectiveDateTime": "2025-02-01",
            "valueQuantity": {"value": 1.0, "unit": "1"},
        }

    def cond(i: str, display: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": f"tie-c-{i}",
            "subject": subject(),
            "code": {"coding": [{"system": SNOMED, "code": "990002", "display": display}]},
            "onsetDateTime": "2024-03-01",
        }

    return {
        "MedicationStatement.900.ndjson": [med("a1", "Zeta tablet"), med("a2", "Zeta tablet")],
        "MedicationStatement.901.ndjson": [med("b1", "Alpha tablet"), med("b2", "Alpha tablet")],
        "Observation.900.ndjson": [
            obs("a1", [("99000-1", "Qu"), ("99000-2", "x")]),
            obs("a2", [("99000-1", "Qu"), ("99000-2", "x")]),
        ],
        "Observation.901.ndjson": [
            obs("b1", [("99000-1", "Pe"), ("99000-3", "y")]),
            obs("b2", [("99000-1", "Pe"), ("99000-3", "y")]),
        ],
        "Condition.900.ndjson": [cond("a1", "Omega"), cond("a2", "Omega")],
        "Condition.901.ndjson": [cond("b1", "Aleph"), cond("b2", "Aleph")],
    }


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The hospital's files (name -> bytes): scenario and background patients, several
    files per type, and the tie records."""
    folder = tmp_path_factory.mktemp("hospital")
    generate(folder, n_background=60, seed=3, as_of=AS_OF, files_per_type=3)
    for name, resources in _tie_records(_patients(folder)).items():
        (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _write(folder: Path, files: dict[str, bytes], order: list[str]) -> Path:
    """The hospital in ``folder``, its files created in ``order`` (the folder lists them so)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name in order:
        (folder / name).write_bytes(files[name])
    return folder


def _backwards(futures: Iterable[concurrent.futures.Future[Any]]) -> Iterator[Any]:
    """as_completed, but the results in the reverse of the order they were submitted."""
    pending = list(futures)
    concurrent.futures.wait(pending)
    return reversed(pending)


def _screen(data: Path, out: Path, workers: int, term: Terminology) -> Path:
    screen(data, as_of=AS_OF, out_dir=out, workers=workers, terminology=term, history=None)
    return out


def _run_json(path: Path, data: Path) -> dict[str, Any]:
    """run.json without what says how the run went, the data folder's name as DIR."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in VOLATILE}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(path.read_text().replace(str(data), "DIR")))


def _same_outputs(want: Path, got: Path, want_data: Path, got_data: Path) -> None:
    names = sorted(p.name for p in want.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    assert {"medication_eras.parquet", "lab_results.parquet", "unmapped.csv"} <= set(names)
    for name in names:
        if name.endswith(".parquet"):
            a, b = pd.read_parquet(want / name), pd.read_parquet(got / name)
            assert len(a) and list(a.columns) == list(b.columns), name
            pd.testing.assert_frame_equal(b, a, check_exact=True, obj=name)
            assert (got / name).read_bytes() == (want / name).read_bytes(), name
        elif name == "run.json":
            assert _run_json(got / name, got_data) == _run_json(want / name, want_data)
        elif name == "report.html":
            continue  # the run's timings and start time; its tables come from the files above
        else:
            assert (got / name).read_bytes() == (want / name).read_bytes(), name


def test_outputs_do_not_depend_on_workers_or_their_order(
    hospital: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fan out at any size, in byte ranges small enough that every file is several tasks.
    monkeypatch.setattr(
        pipeline, "read_tables", partial(read_tables, parallel_min_bytes=0, chunk_bytes=32_768)
    )
    term = Terminology.load()
    names = sorted(hospital)
    shuffled = names[:]
    random.Random(5).shuffle(shuffled)
    listings = {"sorted": names, "reversed": names[::-1], "shuffled": shuffled}
    data = _write(tmp_path / "data-sorted", hospital, listings["sorted"])
    reference = _screen(data, tmp_path / "out-1", 1, term)
    runs = 0
    for listing, order in listings.items():
        where = _write(tmp_path / f"data-{listing}", hospital, order)
        for workers in (1, 2, 3):
            for finish in ("as-completed", "backwards"):
                if workers == 1 and finish == "backwards":
                    continue  # one worker: nothing to reorder
                with monkeypatch.context() as m:
                    if finish == "backwards":
                        m.setattr(read_module, "as_completed", _backwards)
                    out = tmp_path / f"out-{listing}-{workers}-{finish}"
                    _screen(where, out, workers, term)
                run = json.loads((out / "run.json").read_text())
                assert run["workers"] == workers
                _same_outputs(reference, out, data, where)
                runs += 1
    assert runs == 15


def test_tied_displays_take_the_smallest_and_the_first_read(
    hospital: dict[str, bytes], tmp_path: Path
) -> None:
    """The display rule on the tie records: equally frequent spellings (keys) give the
    smallest display; one line key's display is that of its first line in reading order."""
    data = _write(tmp_path / "data", hospital, sorted(hospital))
    result = screen(data, as_of=AS_OF, workers=1, history=None)
    shown = {
        (r.system, r.code): (r.display, r.count)
        for r in result.unmapped.itertuples(index=False)
        if r.code in ("990001", "990002", "99000-1")
    }
    assert shown == {
        (RXNORM, "990001"): ("Alpha tablet", 4),
        (LOINC, "99000-1"): ("Pe", 4),
        (SNOMED, "990002"): ("Omega", 4),
    }
