"""The generator: determinism, FHIR validity, coverage of answers, streaming, file layout."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
from collections import Counter
from datetime import date
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_cohort.synth import (
    EXPECTED_COLUMNS,
    RESOURCE_TYPES,
    SCENARIOS,
    generate,
    iter_patients,
    load_expected,
    status_of,
)
from fhir_cohort.synth.__main__ import main
from fhir_cohort.synth.codes import (
    CRITERIA,
    EXCLUSION_ANSWERS,
    INCLUSION_ANSWERS,
    INCLUSIONS,
)
from fhir_cohort.synth.scenarios import NOT_R4_FIELDS, ORPHAN_SUFFIX

AS_OF = date(2026, 11, 24)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _read(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate(out, 300, 7, AS_OF)
    return out


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 50, 3, AS_OF, files_per_type=2, gzip=True)
    generate(b, 50, 3, AS_OF, files_per_type=2, gzip=True)
    assert _digests(a) == _digests(b)


def test_other_seed_changes_background_only(tmp_path: Path) -> None:
    generate(tmp_path / "a", 30, 1, AS_OF)
    generate(tmp_path / "b", 30, 2, AS_OF)
    assert _digests(tmp_path / "a") != _digests(tmp_path / "b")
    ea, eb = load_expected(tmp_path / "a"), load_expected(tmp_path / "b")
    scen_a = ea[ea.scenario != "background"].reset_index(drop=True)
    scen_b = eb[eb.scenario != "background"].reset_index(drop=True)
    assert scen_a.equals(scen_b)


def test_every_resource_type_validates_as_r4b(hospital: Path) -> None:
    seen: Counter[str] = Counter()
    for rtype in RESOURCE_TYPES:
        resources = _read(hospital / f"{rtype}.000.ndjson")
        assert resources, rtype
        # Every scenario resource (they carry the edge cases) plus a spread of background ones.
        sample = [r for r in resources if r["id"].startswith("s-")] + resources[::97]
        model = get_fhir_model_class(rtype)
        for r in sample:
            assert r["resourceType"] == rtype
            # v1.1 scenarios send STU3's abatementBoolean on purpose; the rest must be R4.
            model.model_validate({k: v for k, v in r.items() if k not in NOT_R4_FIELDS})
            seen[rtype] += 1
    assert set(seen) == set(RESOURCE_TYPES)


def test_resource_ids_are_unique_and_references_resolve(hospital: Path) -> None:
    ids: dict[str, set[str]] = {}
    for rtype in RESOURCE_TYPES:
        rows = _read(hospital / f"{rtype}.000.ndjson")
        ids[rtype] = {r["id"] for r in rows}
        assert len(ids[rtype]) == len(rows), rtype
    for rtype in RESOURCE_TYPES:
        if rtype in ("Patient", "Medication"):
            continue
        for r in _read(hospital / f"{rtype}.000.ndjson"):
            subject = r["subject"]["reference"].removeprefix("Patient/")
            # One documented record has no Patient (spec v1.1: counted in run.json).
            assert subject in ids["Patient"] or subject.endswith(ORPHAN_SUFFIX), subject
            ref = r.get("medicationReference", {}).get("reference")
            if ref and ref.startswith("#"):
                assert any(c["id"] == ref[1:] for c in r["contained"])
            elif ref:
                assert ref.removeprefix("Medication/") in ids["Medication"]


def _possible(crit: str) -> set[str]:
    if crit in INCLUSIONS:
        return set(INCLUSION_ANSWERS)
    if crit == "chronic_illness":
        # Spec E4: "Never decided automatically" -> only clear or review, never excluded.
        return {"clear", "review"}
    return set(EXCLUSION_ANSWERS)


def test_expected_covers_every_answer_of_every_criterion(hospital: Path) -> None:
    exp = load_expected(hospital)
    assert tuple(exp.columns) == EXPECTED_COLUMNS
    for crit in CRITERIA:
        assert set(exp[crit]) == _possible(crit), crit
    assert set(exp.status) == {"eligible", "review", "ineligible"}
    # The scenarios alone already cover every answer (background adds volume, not branches).
    scen = exp[exp.scenario != "background"]
    for crit in CRITERIA:
        assert set(scen[crit]) == _possible(crit), crit


def test_expected_rows_match_patients_and_status_rule(hospital: Path) -> None:
    exp = load_expected(hospital)
    patients = [r["id"] for r in _read(hospital / "Patient.000.ndjson")]
    assert list(exp.patient_id) == patients
    for row in exp.to_dict("records"):
        assert row["status"] == status_of(row)
    assert (exp.scenario == "background").sum() == 300
    assert len(exp) == 300 + len(SCENARIOS)


def test_background_patients_are_never_candidates(hospital: Path) -> None:
    exp = load_expected(hospital)
    bg = exp[exp.scenario == "background"]
    assert set(bg.sle) == {"not_met"}
    assert set(bg.status) == {"ineligible"}
    # ... but exclusion logic is exercised on them.
    assert {"review", "clear"} <= set(bg.cns_lupus)
    assert {"excluded", "review", "clear"} <= set(bg.pregnancy_lactation)
    assert {"review", "clear"} <= set(bg.chronic_illness)


def test_files_per_type_keeps_a_patient_in_one_shard(tmp_path: Path) -> None:
    generate(tmp_path, 40, 5, AS_OF, files_per_type=3, gzip=True)
    owner: dict[str, int] = {}
    for k in range(3):
        for r in _read(tmp_path / f"Patient.{k:03d}.ndjson.gz"):
            owner[r["id"]] = k
    assert len(owner) == 40 + len(SCENARIOS)
    assert set(owner.values()) == {0, 1, 2}
    for k in range(3):
        for r in _read(tmp_path / f"Observation.{k:03d}.ndjson.gz"):
            assert owner[r["subject"]["reference"].removeprefix("Patient/")] == k


def test_background_only(tmp_path: Path) -> None:
    summary = generate(tmp_path, 10, 5, AS_OF, scenarios=False)
    assert summary.n_scenario == 0 and summary.n_patients == 10
    assert set(load_expected(tmp_path).scenario) == {"background"}


def test_iter_patients_is_lazy() -> None:
    it = iter_patients(10**9, 1, AS_OF)  # a billion patients: only feasible if lazy
    first = [next(it) for _ in range(len(SCENARIOS) + 3)]
    assert first[-1].patient_id == "bg-000002"
    assert first[0].resources[0]["resourceType"] == "Patient"


def _peak_bytes(out: Path, n: int) -> int:
    tracemalloc.start()
    try:
        generate(out, n, 11, AS_OF, scenarios=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_generation_streams_to_disk(tmp_path: Path) -> None:
    # 100 and 1,000 patients: held in memory, 1,000 patients' resources would be tens of MB
    small = _peak_bytes(tmp_path / "small", 100)
    large = _peak_bytes(tmp_path / "large", 1000)
    text = (tmp_path / "large" / "Observation.000.ndjson").read_bytes()
    assert text.count(b"\n") > 1000 * 20
    # Ten times the patients must not mean ten times the memory: nothing accumulates.
    assert large < small * 2 + 1_000_000


def test_summary_counts_what_was_written(tmp_path: Path) -> None:
    summary = generate(tmp_path, 20, 9, AS_OF)
    for rtype in RESOURCE_TYPES:
        assert summary.resources[rtype] == len(_read(tmp_path / f"{rtype}.000.ndjson"))
    assert summary.n_resources == sum(summary.resources.values())
    assert tmp_path / "expected.csv" in summary.files


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, 1, 1, AS_OF, files_per_type=0)
    with pytest.raises(ValueError):
        generate(tmp_path, -1, 1, AS_OF)


def test_cli_writes_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "--out",
            str(tmp_path),
            "--patients",
            "5",
            "--seed",
            "2",
            "--as-of",
            "2026-01-31",
            "--gzip",
        ]
    )
    assert rc == 0
    assert (tmp_path / "Patient.000.ndjson.gz").exists()
    assert "5 background" in capsys.readouterr().out


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--as-of" in capsys.readouterr().out


def test_cli_rejects_bad_date(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--as-of", "24/11/2026"])
    assert exc.value.code == 2
