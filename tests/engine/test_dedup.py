"""Issue 9 item 4: one copy per resource (the latest version), whatever the files, chunks,
workers or order; conflicts reported in run.json by type and location, never by id."""

from __future__ import annotations

import json
import random
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.engine.dedup import NO_TIME, NO_VERSION, Ledger, _decide, location_key, winner
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir.sources import open_source

SCT = "http://snomed.info/sct"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
RELEVANT = {(SCT, "55464009"), (RXN, "6851"), (RXN, "8640")}


def cond(
    rid: str,
    subject: str | None = "a",
    version: str | None = None,
    updated: str | None = None,
    status: str = "confirmed",
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "code": {"coding": [{"system": SCT, "code": "55464009"}]},
        "verificationStatus": {"coding": [{"code": status}]},
    }
    if subject is not None:
        r["subject"] = {"reference": f"Patient/{subject}"}
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v}
    if meta:
        r["meta"] = meta
    return r


def write(folder: Path, name: str, resources: list[dict[str, Any]]) -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path


def read(folder: Path, **kw: Any) -> tuple[Any, Any]:
    if not (folder / "Patient.ndjson").exists():
        patients = [{"resourceType": "Patient", "id": p} for p in ("a", "b")]
        write(folder, "Patient.ndjson", patients)
    return read_tables(open_source(folder), relevant=RELEVANT, medication_words=(), **kw)


def facts(tables: Any) -> list[tuple[str, str, str]]:
    c = tables.conditions
    return sorted(zip(c["resource_id"], c["patient_id"], c["verification_status"], strict=True))


# (older copy, newer copy): versionId decides; lastUpdated (with offsets) decides; mixed
# metadata (not every copy has a versionId) falls to lastUpdated.
PAIRS = [
    (dict(version="1"), dict(version="2")),
    (dict(version="9"), dict(version="10")),  # numerically, not as text
    (dict(updated="2025-01-01T10:00:00+02:00"), dict(updated="2025-01-01T09:00:00Z")),
    (dict(version="7", updated="2024-01-01"), dict(updated="2025-01-01T00:00:00Z")),
    (dict(version="3", updated="2025-01-01"), dict(version="3", updated="2025-06-01")),
]


@pytest.mark.parametrize(("old", "new"), PAIRS)
@pytest.mark.parametrize("newer_first", [False, True])
@pytest.mark.parametrize("same_file", [False, True])
def test_latest_version_wins_in_either_order(
    tmp_path: Path, old: dict[str, str], new: dict[str, str], newer_first: bool, same_file: bool
) -> None:
    # The later version is entered-in-error: the fact must go.
    copies = [cond("c1", **old), cond("c1", status="entered-in-error", **new)]
    if newer_first:
        copies.reverse()
    if same_file:
        write(tmp_path, "Condition.ndjson", copies)
    else:
        write(tmp_path, "Condition.000.ndjson", copies[:1])
        write(tmp_path, "Condition.001.ndjson", copies[1:])
    tables, report = read(tmp_path)
    assert facts(tables) == [("c1", "a", "entered-in-error")]
    dup = report.duplicates
    assert dup["resources"] == {"Condition": 1} and dup["copies_dropped"] == {"Condition": 1}
    assert dup["subject_conflicts"] == {}
    ((where,),) = [d["dropped"] for d in dup["locations"]]
    assert where.endswith((":1", ":2"))


def test_identical_copies_in_two_files_keep_one(tmp_path: Path) -> None:
    write(tmp_path, "Condition.000.ndjson", [cond("c1"), cond("c2")])
    write(tmp_path, "Condition.001.ndjson", [cond("c1")])
    tables, report = read(tmp_path)
    assert facts(tables) == [("c1", "a", "confirmed"), ("c2", "a", "confirmed")]
    (loc,) = report.duplicates["locations"]
    # No version, no lastUpdated: the copy at the last location stays.
    assert loc == {
        "type": "Condition",
        "kept": f"{tmp_path / 'Condition.001.ndjson'}:1",
        "dropped": [f"{tmp_path / 'Condition.000.ndjson'}:1"],
        "subject_conflict": False,
    }


def test_a_later_version_without_rows_still_removes_the_fact(tmp_path: Path) -> None:
    write(
        tmp_path,
        "Condition.ndjson",
        [cond("c1", version="2", subject=None), cond("c1", version="1")],
    )
    tables, report = read(tmp_path)
    assert facts(tables) == []
    assert report.duplicates["copies_dropped"] == {"Condition": 1}


@pytest.mark.parametrize("newer_first", [False, True])
def test_reused_id_with_another_subject_follows_the_latest_version(
    tmp_path: Path, newer_first: bool
) -> None:
    copies = [cond("c1", "a", updated="2024-05-01"), cond("c1", "b", updated="2025-05-01")]
    write(tmp_path, "Condition.000.ndjson", copies[::-1] if newer_first else copies)
    write(tmp_path, "Condition.001.ndjson", [cond("c9", "a")])
    tables, report = read(tmp_path)
    assert facts(tables) == [("c1", "b", "confirmed"), ("c9", "a", "confirmed")]
    dup = report.duplicates
    assert dup["subject_conflicts"] == {"Condition": 1} and dup["conflicts_dropped"] == {}


def test_subject_conflict_no_version_orders_gives_the_fact_to_nobody(tmp_path: Path) -> None:
    write(tmp_path, "Condition.000.ndjson", [cond("c1", "a")])
    write(tmp_path, "Condition.001.ndjson", [cond("c1", "b")])
    tables, report = read(tmp_path)
    assert facts(tables) == []
    dup = report.duplicates
    assert dup["subject_conflicts"] == {"Condition": 1}
    assert dup["conflicts_dropped"] == {"Condition": 1}
    assert dup["copies_dropped"] == {"Condition": 2}
    (loc,) = dup["locations"]
    assert loc["kept"] is None and loc["subject_conflict"] is True
    text = json.dumps(dup)
    assert "c1" not in text and '"a"' not in text and '"b"' not in text  # no ids


def test_duplicates_across_chunks_and_workers(tmp_path: Path) -> None:
    filler = [cond(f"f{i}", "a" if i % 2 else "b") for i in range(400)]
    lines = [cond("c1", "a", version="1"), *filler, cond("c1", "b", version="2")]
    lines += [cond("c2", version="5", status="entered-in-error"), *filler[:50]]
    lines += [cond("c2", version="4")]
    write(tmp_path, "Condition.000.ndjson", lines)
    one, rep1 = read(tmp_path, workers=1)
    for chunk in (3_000, 20_000):
        two, rep2 = read(tmp_path, workers=2, chunk_bytes=chunk, parallel_min_bytes=0)
        assert rep2.workers == 2
        assert facts(two) == facts(one)
        assert rep2.duplicates == rep1.duplicates
    got = [f for f in facts(one) if not f[0].startswith("f")]
    assert got == [("c1", "b", "confirmed"), ("c2", "a", "entered-in-error")]
    # Filler f* appears twice (lines 2-51 again): identical copies, one kept each.
    assert rep1.duplicates["resources"] == {"Condition": 52}


@pytest.mark.parametrize("newer_first", [False, True])
def test_patient_and_medication_versions(tmp_path: Path, newer_first: bool) -> None:
    alive = {"resourceType": "Patient", "id": "a", "meta": {"versionId": "1"}}
    dead = {**alive, "meta": {"versionId": "2"}, "deceasedBoolean": True}
    med1 = {"resourceType": "Medication", "id": "m", "meta": {"versionId": "1"},
            "code": {"coding": [{"system": RXN, "code": "6851"}]}}  # fmt: skip
    med2 = {**med1, "meta": {"versionId": "2"},
            "code": {"coding": [{"system": RXN, "code": "8640"}]}}  # fmt: skip
    order = (lambda x: x[::-1]) if newer_first else (lambda x: x)
    write(tmp_path, "Patient.000.ndjson", order([alive, dead])[:1])
    write(tmp_path, "Patient.001.ndjson", order([alive, dead])[1:])
    write(tmp_path, "Patient.ndjson", [{"resourceType": "Patient", "id": "b"}])
    write(tmp_path, "Medication.000.ndjson", order([med1, med2])[:1])
    write(tmp_path, "Medication.001.ndjson", order([med1, med2])[1:])
    request = {"resourceType": "MedicationRequest", "id": "r", "status": "active",
               "subject": {"reference": "Patient/a"},
               "medicationReference": {"reference": "Medication/m"}}  # fmt: skip
    write(tmp_path, "MedicationRequest.ndjson", [request])
    tables, report = read(tmp_path)
    pats = tables.patients.set_index("patient_id")["deceased"]
    assert len(tables.patients) == 2 and bool(pats["a"]) and not pats["b"]
    assert list(tables.medications["code"]) == ["8640"]
    assert report.duplicates["resources"] == {"Medication": 1, "Patient": 1}


# -- the rule itself ----------------------------------------------------------------------------

copy_st = st.tuples(
    st.one_of(st.just(NO_VERSION), st.integers(0, 3)),
    st.one_of(st.just(NO_TIME), st.integers(0, 3)),
)


@given(st.lists(copy_st, min_size=1, max_size=6), st.randoms())
def test_winner_does_not_depend_on_read_order(
    metas: list[tuple[int, int]], rnd: random.Random
) -> None:
    copies = [(v, u, i) for i, (v, u) in enumerate(metas)]  # distinct locations
    shuffled = copies[:]
    rnd.shuffle(shuffled)
    a, decided_a = winner(copies)
    b, decided_b = winner(shuffled)
    assert copies[a] == shuffled[b] and decided_a == decided_b
    # The vectorised rule of the reader agrees with the pure one.
    ledger = Ledger(
        rtype=array("b", [1] * len(shuffled)),
        rid=["r"] * len(shuffled),
        pid=["p"] * len(shuffled),
        version=array("q", [c[0] for c in shuffled]),
        updated=array("q", [c[1] for c in shuffled]),
        src=array("q", [c[2] for c in shuffled]),
    )
    drop, _ = _decide(ledger)
    if len(copies) > 1:
        assert sorted(drop) == sorted(c[2] for c in copies if c != copies[a])


def test_location_keys_order_files_then_lines() -> None:
    keys = [
        location_key(0, "a.ndjson", "a.ndjson:9"),
        location_key(0, "a.ndjson", "a.ndjson:10"),
        location_key(1, "b.json", "b.json#entry[0]"),
        location_key(1, "b.json", "b.json#entry[3]"),
        location_key(2, "c.json", "c.json"),
    ]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def recoded(c: dict[str, Any], code: str = "38341003") -> dict[str, Any]:
    """The same Condition corrected to a code no criterion uses (the line filter drops it)."""
    return {**c, "code": {"coding": [{"system": SCT, "code": code}]}}


@pytest.mark.parametrize(("old", "new"), PAIRS)
@pytest.mark.parametrize("newer_first", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_later_version_the_line_filter_drops_still_replaces_the_earlier_one(
    tmp_path: Path, old: dict[str, str], new: dict[str, str], newer_first: bool, workers: int
) -> None:
    # v1 has the relevant code and is read; v2 (later) was corrected to an unrelated code, so
    # the filter drops it unparsed: the version rule must still see it and remove the fact.
    filler = [cond(f"f{i}") for i in range(200)]
    copies = [cond("c1", **old), recoded(cond("c1", **new))]
    if newer_first:
        copies.reverse()
    write(tmp_path, "Condition.ndjson", [copies[0], *filler, copies[1]])
    tables, report = read(tmp_path, workers=workers, chunk_bytes=4_000, parallel_min_bytes=0)
    assert "c1" not in {f[0] for f in facts(tables)}
    assert report.reread_unfiltered
    assert report.duplicates["copies_dropped"] == {"Condition": 1}


def test_an_earlier_version_the_filter_drops_leaves_the_later_fact(tmp_path: Path) -> None:
    write(
        tmp_path,
        "Condition.ndjson",
        [recoded(cond("c1", version="1")), cond("c1", version="2")],
    )
    tables, report = read(tmp_path)
    assert facts(tables) == [("c1", "a", "confirmed")]
    assert report.reread_unfiltered


def test_no_shared_id_no_second_pass(tmp_path: Path) -> None:
    write(tmp_path, "Condition.ndjson", [cond("c1"), recoded(cond("c2")), recoded(cond("c3"))])
    tables, report = read(tmp_path)
    assert facts(tables) == [("c1", "a", "confirmed")]
    assert not report.reread_unfiltered
    assert report.as_dict()["reread_unfiltered"] is False


def test_a_dropped_line_whose_id_is_not_leading_is_parsed_not_dropped(tmp_path: Path) -> None:
    # id after another key: the bytes do not prove it top-level, so the line is parsed and the
    # version rule sees it directly (no second pass needed).
    late = recoded(cond("c1", version="2"))
    late = {"resourceType": "Condition", "meta": late.pop("meta"), **late}
    write(tmp_path, "Condition.ndjson", [cond("c1", version="1"), late])
    tables, report = read(tmp_path)
    assert facts(tables) == []
    assert not report.reread_unfiltered


def test_dropped_line_check_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dropped-line check looks the hashes up a slice at a time (memory): a dropped copy
    of a read resource is found at every position, first, last or across a slice boundary,
    and nothing is found when no dropped hash is one read (slices of 3 hashes here)."""
    from fhir_cohort.engine import read

    monkeypatch.setattr(read, "_DROPPED_SLICE", 3)
    ledger = Ledger()
    for i in range(5):
        ledger.copy_of("Condition", f"c{i}", "p", {}, i)
    ledger.copy_of("Observation", "o1", "p", {}, 9)
    others = [read.id_hash(b"Condition", f"x{i}".encode()) for i in range(10)]
    others.append(read.id_hash(b"Observation", b"c1"))  # same id, another type: not a copy
    assert not read._dropped_copy_of_a_read_one(ledger, array("q", others))
    assert not read._dropped_copy_of_a_read_one(ledger, array("q"))
    assert not read._dropped_copy_of_a_read_one(Ledger(), array("q", others))
    for hit in (read.id_hash(b"Condition", b"c3"), read.id_hash(b"Observation", b"o1")):
        for at in range(len(others) + 1):
            dropped = array("q", [*others[:at], hit, *others[at:]])
            assert read._dropped_copy_of_a_read_one(ledger, dropped), at
