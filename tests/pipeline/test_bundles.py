"""A folder of transaction Bundles (urn:uuid references, as Synthea writes them) screens like
the same data as Bulk NDJSON, and the reader's Bundle entry filter on worker processes reads
them as every entry read in full in one process does."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import defaultdict
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import DEMO_DATA, _union_needs, screen
from fhir_cohort.terminology import Terminology


def _rewrite(node: object, urls: dict[str, str]) -> object:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in urls:
                out[k] = urls[v]
            else:
                out[k] = _rewrite(v, urls)
        return out
    if isinstance(node, list):
        return [_rewrite(x, urls) for x in node]
    return node


def _to_bundles(src: Path, dst: Path, keep_ids: bool = False) -> None:
    """One transaction Bundle per patient; every reference becomes a urn:uuid fullUrl and
    Patients lose their ids (the server would assign them; ``keep_ids``: not), except
    Medications, which keep theirs in a shared Bundle."""
    by_patient: dict[str, list[dict]] = defaultdict(list)
    shared: list[dict] = []
    for path in sorted(src.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            res = orjson.loads(line)
            if res["resourceType"] == "Medication":
                shared.append(res)
                continue
            pid = (
                res["id"]
                if res["resourceType"] == "Patient"
                else (res.get("subject") or res.get("patient") or {})
                .get("reference", "")
                .split("/")[-1]
            )
            by_patient[pid].append(res)
    dst.mkdir()
    for n, (_pid, resources) in enumerate(sorted(by_patient.items())):
        urls = {
            f"{r['resourceType']}/{r['id']}": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['id'])}"
            for r in resources
        }
        kept = {k: f"urn:uuid:{k.split('/')[1]}" for k in urls}
        entries = []
        for r in resources:
            full = urls[f"{r['resourceType']}/{r['id']}"]
            if keep_ids:
                full = f"urn:uuid:{r['id']}"
                body = _rewrite(r, kept)
            else:
                body = _rewrite(r, urls)
            if r["resourceType"] == "Patient" and not keep_ids:
                body = {k: v for k, v in body.items() if k != "id"}  # id from the uuid
            entries.append(
                {
                    "fullUrl": full,
                    "resource": body,
                    "request": {"method": "POST", "url": r["resourceType"]},
                }
            )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        name = dst / f"patient-{n:04d}.json"
        if n % 3 == 0:  # some gzipped, as exporters do
            with gzip.open(f"{name}.gz", "wt") as fh:
                json.dump(bundle, fh)
        else:
            name.write_text(json.dumps(bundle))
    (dst / "medications.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": f"Medication/{m['id']}", "resource": m} for m in shared],
            }
        )
    )


def test_bundle_folder_screens_like_ndjson(tmp_path: Path) -> None:
    _to_bundles(DEMO_DATA, tmp_path / "bundles")
    as_of = date(2026, 11, 24)
    ndjson = screen(DEMO_DATA, as_of=as_of).patients
    bundles = screen(tmp_path / "bundles", as_of=as_of)
    assert bundles.run["skipped"] == {}
    # Patients lost their ids: map the uuid back to compare row by row.
    back = {str(uuid.uuid5(uuid.NAMESPACE_URL, pid)): pid for pid in ndjson["patient_id"]}
    got = bundles.patients.assign(patient_id=bundles.patients["patient_id"].map(back))
    got = got.sort_values("patient_id").reset_index(drop=True)
    want = ndjson.sort_values("patient_id").reset_index(drop=True)
    assert got["patient_id"].notna().all()
    assert got.equals(want)


@cache
def _needs() -> Any:
    return _union_needs([load_criteria(default_criteria_path())], Terminology.load())


def _read(folder: Path, **kw: Any) -> tuple[dict[str, list[tuple[str, ...]]], dict, list, int]:
    """Tables (rows sorted: workers finish in any order), read report, unmapped rows, and the
    number of processes that read."""
    needs = _needs()
    tables, report = read_tables(
        open_source(folder),
        relevant=needs.codes,
        medication_words=needs.medication_names,
        parallel_min_bytes=0,
        **kw,
    )
    got = report.as_dict()
    for key in ("seconds", "workers", "files"):
        got.pop(key)
    got["errors"].sort(key=str)
    got["invalid_utf8"]["locations"].sort()
    rows = {
        name: sorted(tuple(map(str, r)) for r in getattr(tables, name).itertuples(index=False))
        for name in ("patients", "conditions", "medications", "observations")
    }
    return rows, got, report.unmapped.rows(), report.workers


def _entry(resource: dict, full: str | None = None) -> dict:
    return {"resource": resource} | ({"fullUrl": full} if full else {})


def _coded(rtype: str, rid: str | None, subject: str, system: str, code: str, **more: Any) -> dict:
    res = {"resourceType": rtype, "subject": {"reference": subject}}
    res["code"] = {"coding": [{"system": system, "code": code, "display": more.pop("d", "x")}]}
    return res | ({"id": rid} if rid else {}) | more


SCT, LOINC = "http://snomed.info/sct", "http://loinc.org"


def _adversarial(folder: Path, copies: int = 0) -> None:
    """Entries only exact rules read right, in Bundles beside the converted demo."""
    deep = '{"url":"u","valueString":"v"}'
    for _ in range(505):  # parses in orjson, overflows Python's walk: reported as today
        deep = '{"url":"u","extension":[' + deep + "]}"
    pat = {"resourceType": "Patient", "gender": "female", "birthDate": "1990-01-01"}
    entries = [
        _entry(pat | {"name": [{"text": "Zo\u00eb \u00dcnal"}]}, "urn:uuid:adv-p"),
        _entry(_coded("Condition", None, "urn:uuid:adv-p", SCT, "55464009"), "urn:uuid:adv-c1"),
        _entry(
            _coded("Condition", None, "urn:uuid:adv-p", SCT, "271737000", d="caf\u00e9"),
            "urn:uuid:adv-c2",
        ),
        _entry(_coded("Observation", "adv-o1", "urn:uuid:adv-p", LOINC, "5130-0")),  # no fullUrl
        _entry(_coded("Observation", "adv-o2", "urn:uuid:adv-p", LOINC, "8302-2")),
        _entry(_coded("Observation", "adv-o3", "urn:uuid:elsewhere", LOINC, "8302-2")),
        _entry(_coded("Observation", "adv-o4", "urn:uuid:elsewhere", LOINC, "5130-0")),
        _entry(
            _coded("Observation", "adv-o5", "#p1", LOINC, "8302-2", contained=[pat | {"id": "p1"}])
        ),
        _entry(
            _coded(
                "Observation",
                "adv-o6",
                "urn:uuid:adv-p",
                LOINC,
                "85354-9",
                component=[{"code": {"coding": [{"system": LOINC, "code": "5130-0"}]}}],
            )
        ),
        _entry(_coded("Procedure", "adv-pr", "Patient/nobody", SCT, "1234")),
        _entry({"resourceType": "Encounter", "subject": {"reference": "urn:uuid:adv-p"}}),
        _entry({"resourceType": "Claim", "id": "adv-claim"}, "urn:uuid:adv-claim"),
        _entry({"resourceType": "NotAType", "id": "x"}),
        {"request": {"method": "DELETE", "url": "Observation/gone"}},
        _entry(
            {
                "resourceType": "MedicationRequest",
                "id": "adv-mr",
                "subject": {"reference": "urn:uuid:adv-p"},
                "medicationReference": {"reference": "#m"},
                "contained": [
                    {
                        "resourceType": "Medication",
                        "id": "m",
                        "code": {"coding": [{"system": SCT, "code": "1234", "display": "x"}]},
                    }
                ],
            }
        ),
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    deep_entry = '{"fullUrl":"urn:uuid:e","resource":{"resourceType":"Encounter","id":"e"'
    deep_entry += ',"extension":[' + deep + "]}}"
    (folder / "adversarial.json").write_text(json.dumps(bundle))
    # a Bundle with an entry too deep to walk is read in full, the others filtered
    (folder / "deep.json").write_text('{"resourceType":"Bundle","entry":[' + deep_entry + "]}")
    # Another patient's Bundle, gzipped, its non-ASCII text as UTF-8, not escaped
    other = json.dumps(bundle | {"entry": entries[:9]}, ensure_ascii=False)
    with gzip.open(folder / "adversarial-2.json.gz", "wt", encoding="utf-8") as fh:
        fh.write(other.replace('"adv-', '"gz-').replace(":adv-", ":gz-"))
    (folder / "broken.json").write_text('{"resourceType":"Bundle","entry":[{"resource":')
    # copies 1: in another Bundle, a copy of a filtered entry; 2: also a later version of a
    # read one whose code no criterion uses. Dedup must see every copy.
    later = _coded("Observation", "adv-o1", "Patient/x", LOINC, "8302-2")
    later["meta"] = {"versionId": "2"}
    again = [entries[4], _entry(later)][:copies]
    if again:
        (folder / "copies.json").write_text(json.dumps(bundle | {"entry": again}))


@pytest.fixture(scope="module")
def demo_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "bundles"
    _to_bundles(DEMO_DATA, folder, keep_ids=True)
    return folder


def test_parallel_bundle_reading_reads_the_demo_as_ndjson_and_in_full(demo_bundles: Path) -> None:
    full = _read(demo_bundles, workers=1, filter_bundles=False)
    for workers in (1, 2):
        fast = _read(demo_bundles, workers=workers)
        assert fast[3] == workers
        assert fast[:3] == full[:3]
    # The same data as NDJSON: the same tables and unmapped codes (Bundles count every entry
    # as read, NDJSON only the lines the filter passes: the counts differ by design).
    ndjson = _read(DEMO_DATA, workers=2)
    assert fast[0] == ndjson[0]
    assert fast[2] == ndjson[2]
    for key in ("duplicates", "unresolved_references", "skipped"):
        assert fast[1][key] == ndjson[1][key], key


def adversarial_sample(tmp_path: Path, every: int) -> Path:
    """A folder of every ``every``-th demo patient's Bundle (some gzipped), the Medications'
    Bundle and the adversarial Bundles: enough for the reading paths to disagree."""
    _to_bundles(DEMO_DATA, tmp_path / "all")
    folder = tmp_path / "b"
    folder.mkdir()
    for path in {*sorted((tmp_path / "all").iterdir())[::every], tmp_path / "all/medications.json"}:
        path.rename(folder / path.name)
    _adversarial(folder)
    return folder


def test_parallel_bundle_reading_reads_adversarial_bundles_as_in_full(tmp_path: Path) -> None:
    folder = adversarial_sample(tmp_path, 25)
    full = _read(folder, workers=1, filter_bundles=False)
    assert len(full[1]["errors"]) == 4  # broken Bundle, no id, unknown type, too deep
    for workers in (1, 2):
        assert _read(folder, workers=workers)[:3] == full[:3]
    for copies in (1, 2):
        _adversarial(folder, copies)
        full = _read(folder, workers=1, filter_bundles=False)
        assert full[1]["duplicates"]["resources"] == {"Observation": copies}
        assert _read(folder, workers=2)[:3] == full[:3]
