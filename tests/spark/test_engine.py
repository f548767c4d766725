"""The Spark engine (local[2]) writes what the local engine writes: byte for byte the same
patients, evidence, attrition, Group and unmapped codes, and the same read counts, duplicate
and unresolved-reference reports in run.json, on every kind of source the local engine reads.

Few, small screens: each costs a handful of Spark jobs on one shared session.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest

from fhir_cohort.pipeline import DEMO_DATA, screen
from fhir_cohort.spark import engine as spark_engine
from fhir_cohort.synth import generate, load_expected
from fhir_cohort.synth.codes import CRITERIA
from tests.cli_main import run_main
from tests.pipeline.test_bundles import _to_bundles

AS_OF = date(2026, 11, 24)
SAME_FILES = ("patients.csv", "evidence.csv", "attrition.csv", "group.json", "unmapped.csv")
# The Parquet tables: the same rows in the same order (eras and labs in their documented
# order, not the order the partitions came back in).
SAME_TABLES = (
    "patients.parquet",
    "evidence.parquet",
    "attrition.parquet",
    "medication_eras.parquet",
    "lab_results.parquet",
)
# run.json's record of the read: the same on both engines (paths, timings and workers differ).
SAME_RUN = (
    "counts",
    "lines",
    "read",
    "skipped",
    "errors",
    "invalid_utf8",
    "duplicates",
    "unresolved_references",
    "records_without_patient",
    "unmapped",
)


def _same_outputs(local: Path, spark: Path) -> None:
    for name in SAME_FILES:
        assert (spark / name).read_bytes() == (local / name).read_bytes(), name
    for name in SAME_TABLES:
        want, got = pd.read_parquet(local / name), pd.read_parquet(spark / name)
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)
    want, got = (json.loads((d / "run.json").read_text()) for d in (local, spark))
    for key in SAME_RUN:
        assert got[key] == want[key], key
    assert got["engine"] == "spark" and "engine" not in want


def test_demo_hospital_through_the_cli(spark: Any, tmp_path: Path) -> None:
    """`screen --engine spark` (the CLI uses the active session) on the demo hospital, with
    the lakehouse Parquet partitioned by status and by criterion."""
    screen(DEMO_DATA, as_of=AS_OF, out_dir=tmp_path / "local")
    done = run_main(
        [
            "screen",
            "--engine",
            "spark",
            "--as-of",
            AS_OF.isoformat(),
            "--out",
            str(tmp_path / "spark"),
            "--no-history",
            "-q",
        ]
    )
    assert done.returncode == 0, done.stderr
    _same_outputs(tmp_path / "local", tmp_path / "spark")
    lake = tmp_path / "spark" / "lakehouse"
    patients = ds.dataset(lake / "patients", partitioning="hive").to_table().to_pandas()
    assert sorted(patients["status"].astype(str).unique()) == ["eligible", "ineligible", "review"]
    assert len(patients) == 496
    evidence = ds.dataset(lake / "evidence", partitioning="hive").to_table()
    assert evidence.num_rows == ds.dataset(tmp_path / "local" / "evidence.parquet").count_rows()


def test_scenario_suite_in_file_splits(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every scenario patient's expected answer, with both reading paths in one screen: the
    `.000` files in the local reader's byte ranges (several per file, as small splits make
    them), the `.001` files as if on a Hadoop file system, through Spark's text source in
    splits (line numbers then count from a split's offset); gzip files whole on both."""
    as_of = date(2025, 12, 31)
    data = tmp_path / "data"
    generate(data, n_background=20, seed=7, as_of=as_of, files_per_type=2)
    for i, path in enumerate(sorted(data.glob("*.ndjson"))):
        if i % 3 == 0:  # a few gzipped, as exporters do
            import gzip

            Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    local = screen(data, as_of=as_of, out_dir=tmp_path / "local")
    opened = spark_engine._opened
    monkeypatch.setattr(
        spark_engine, "_opened", lambda uri: None if ".001." in uri else opened(uri)
    )
    monkeypatch.setattr(spark_engine, "CHUNK_BYTES", 65536)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")
    try:
        result = screen(data, as_of=as_of, out_dir=tmp_path / "spark", spark=spark)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    tasks = result.run["spark"]["read_tasks"]
    ranged = [p for p in data.glob("*.000.ndjson") if p.name.split(".")[0] != "Medication"]
    assert tasks["byte_ranges"] > len(ranged) and tasks["text_files"] > 2, tasks
    assert result.patients.equals(local.patients)
    expected = load_expected(data).set_index("patient_id")
    got = result.patients.set_index("patient_id").loc[expected.index]
    assert (got[["status", *CRITERIA]] == expected[["status", *CRITERIA]]).all().all()
    want, have = ((tmp_path / d / "patients.csv").read_bytes() for d in ("local", "spark"))
    assert have == want
    for name in SAME_TABLES:  # eras and labs from many partitions: the local engine's order
        local_table, spark_table = (
            pd.read_parquet(tmp_path / d / name) for d in ("local", "spark")
        )
        pd.testing.assert_frame_equal(spark_table, local_table, check_exact=True, obj=name)


def _demo_subset(dst: Path, n: int) -> Path:
    """The demo hospital's first ``n`` patients (by id), those with a medicationReference,
    their records and every Medication: enough Bundles for the reading path, fewer than 496."""
    dst.mkdir()
    patients = [orjson.loads(x) for x in (DEMO_DATA / "Patient.000.ndjson").read_bytes().split()]
    keep = {p["id"] for p in sorted(patients, key=lambda p: p["id"])[:n]}
    for path in sorted(DEMO_DATA.glob("Medication*.ndjson")):
        for line in path.read_bytes().splitlines():  # and whoever references a Medication
            if b"medicationReference" in line:
                keep.add(orjson.loads(line)["subject"]["reference"].split("/")[-1])
    for path in sorted(DEMO_DATA.glob("*.ndjson")):
        lines = []
        for line in path.read_bytes().splitlines():
            res = orjson.loads(line)
            ref = (res.get("subject") or res.get("patient") or {}).get("reference", "")
            if (
                res["resourceType"] == "Medication"
                or res.get("id") in keep
                or (ref.split("/")[-1] in keep)
            ):
                lines.append(line)
        (dst / path.name).write_bytes(b"".join(x + b"\n" for x in lines))
    return dst


def test_bundle_folder(spark: Any, tmp_path: Path) -> None:
    """A folder of transaction Bundles (some gzipped; Medications in a Bundle of their own,
    referenced from the others) as the local engine reads it."""
    _to_bundles(_demo_subset(tmp_path / "subset", 60), tmp_path / "bundles")
    screen(tmp_path / "bundles", as_of=AS_OF, out_dir=tmp_path / "local")
    screen(tmp_path / "bundles", as_of=AS_OF, out_dir=tmp_path / "spark", spark=spark)
    _same_outputs(tmp_path / "local", tmp_path / "spark")


SCT = "http://snomed.info/sct"


def _cond(rid: str, subject: str, code: str = "55464009", **meta: str) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": f"Patient/{subject}"},
        "code": {"coding": [{"system": SCT, "code": code}]},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "recordedDate": "2020-01-01",
    }
    if meta:
        r["meta"] = meta
    return r


def _write(path: Path, resources: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources))


@pytest.mark.parametrize("later_version_relevant", [True, False], ids=["parsed", "dropped"])
def test_duplicates_conflicts_and_dropped_versions(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, later_version_relevant: bool
) -> None:
    """Copies of one resource in two files (versioned, a subject conflict decided by file
    order only, a copy with no subject), and a later version whose code no criterion reads:
    dropped unparsed, it makes both engines read everything again (the Spark engine here
    through its text source, as for a Hadoop URI, the dropped lines' hashes checked on the
    driver; where none matches, in the check job the executors run past that budget)."""
    if later_version_relevant:
        monkeypatch.setattr(spark_engine, "DROPPED_ON_DRIVER", 0)
    else:
        monkeypatch.setattr(spark_engine, "_opened", lambda uri: None)
    data = tmp_path / "data"
    data.mkdir()
    patients = [
        {"resourceType": "Patient", "id": p, "birthDate": "1980-01-01", "gender": "female"}
        for p in ("a", "b", "c")
    ]
    _write(data / "Patient.000.ndjson", patients)
    _write(data / "Patient.001.ndjson", patients[:1])
    _write(
        data / "Condition.000.ndjson",
        [_cond("v", "a", versionId="1"), _cond("x", "a"), _cond("y", "b"), _cond("z", "c")],
    )
    later = "55464009" if later_version_relevant else "38341003"  # hypertension: no criterion
    _write(
        data / "Condition.001.ndjson",
        [_cond("v", "a", later, versionId="2"), _cond("x", "b"), _cond("z", "c")],
    )
    local = screen(data, as_of=AS_OF, out_dir=tmp_path / "local")
    screen(data, as_of=AS_OF, out_dir=tmp_path / "spark", spark=spark)
    _same_outputs(tmp_path / "local", tmp_path / "spark")
    run = json.loads((tmp_path / "spark" / "run.json").read_text())
    assert (run["spark"]["read_tasks"]["text_files"] > 0) is not later_version_relevant
    assert run["duplicates"]["subject_conflicts"] == {"Condition": 1}
    assert local.run["duplicates"]["resources"] == {"Condition": 3, "Patient": 1}
