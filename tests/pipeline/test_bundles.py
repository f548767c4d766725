"""A folder of transaction Bundles (urn:uuid references, as Synthea writes them) screens like
the same data as Bulk NDJSON."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path

import orjson

from fhir_cohort.pipeline import DEMO_DATA, screen


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


def _to_bundles(src: Path, dst: Path) -> None:
    """One transaction Bundle per patient; every reference becomes a urn:uuid fullUrl and
    resources lose their ids (the server would assign them), except Medications, which
    keep theirs in a shared Bundle."""
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
        entries = []
        for r in resources:
            full = urls[f"{r['resourceType']}/{r['id']}"]
            body = _rewrite(r, urls)
            if r["resourceType"] == "Patient":
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
