"""Unmapped records (spec v1.1): every record whose codes matched no value set is counted by
code, through every reader path (rejected line, parsed line, Bundle, worker processes), and
no record that matched a value set ever is."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine import unmapped as um
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import relevant_codes
from fhir_cohort.terminology import Terminology

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MED_TYPES = um.UNMAPPED_TYPES[3:7]
MED_KEY = {
    "MedicationStatement": "medicationCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationDispense": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
}
# Codes no value set of the default criteria holds (checked in the fixture below).
UNMAPPED = {
    "Condition": (SNOMED, "59621000", "Essential hypertension (disorder)"),
    "Procedure": (SNOMED, "73761001", "Colonoscopy"),
    "Observation": (LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    "MedicationStatement": (RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
    "MedicationRequest": (RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
    "MedicationDispense": (RXNORM, "83367", "atorvastatin"),
    "MedicationAdministration": (RXNORM, "6809", "metformin"),
}


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


@pytest.fixture(scope="module")
def relevant(term: Terminology) -> set[tuple[str, str]]:
    rel = relevant_codes(load_criteria(default_criteria_path()), term)
    for system, code, _ in UNMAPPED.values():
        assert (system, code) not in rel
    return rel


def _resource(rtype: str, i: int, coding: dict[str, Any] | None, text: str | None = None) -> dict:
    cc: dict[str, Any] = {}
    if coding is not None:
        cc["coding"] = [coding]
    if text is not None:
        cc["text"] = text
    r: dict[str, Any] = {"resourceType": rtype, "id": f"{rtype[:3].lower()}{i}"}
    if rtype != "Medication":
        r["subject"] = {"reference": f"Patient/p{i % 7}"}
    if rtype in MED_TYPES:
        r["status"] = "completed"
        r[MED_KEY[rtype]] = cc
    else:
        r["status"] = "final"
        r["category"] = [{"coding": [{"system": "urn:x", "code": "laboratory"}]}]
        r["code"] = cc
    return r


def _write(folder: Path, resources: list[dict], compact: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    sep = (",", ":") if compact else (", ", " : ")
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(json.dumps(r, separators=sep))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.000.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    patients = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(7)]
    (folder / "Patient.000.ndjson").write_text(
        "\n".join(json.dumps(p) for p in patients) + "\n", encoding="utf-8"
    )
    return folder


def _read(path: Path, term: Terminology, rel: set, **kw: Any) -> list[tuple]:
    _, report = read_tables(
        open_source(path), relevant=rel, medication_words=term.medication_names(), **kw
    )
    return report.unmapped.rows()


def _population(rel: set, n: int = 5) -> tuple[list[dict], dict[tuple[str, str, str], int]]:
    """n unmapped records per type (with a varying display) and one record of every relevant
    code per type that can hold it; the expected unmapped counts."""
    out: list[dict] = []
    expected: dict[tuple[str, str, str], int] = {}
    i = 0
    for rtype, (system, code, display) in UNMAPPED.items():
        for k in range(n):
            coding = {"system": system, "code": code, "display": display}
            if k % 2:
                coding.pop("display")  # a display missing on some records still counts
            out.append(_resource(rtype, i, coding))
            i += 1
        expected[(rtype, system, code)] = n
    for system, code in sorted(rel):
        rtype = {
            "http://loinc.org": "Observation",
            RXNORM: "MedicationRequest",
        }.get(system, "Condition")
        out.append(_resource(rtype, i, {"system": system, "code": code}))
        i += 1
    return out, expected


def _as_counts(rows: list[tuple]) -> dict[tuple[str, str, str], int]:
    return {(r[0], r[1], r[2]): r[4] for r in rows}


def test_every_type_counts_unmapped_codes_and_never_a_value_set_code(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    resources, expected = _population(relevant)
    rows = _read(_write(tmp_path / "d", resources), term, relevant, workers=1)
    assert _as_counts(rows) == expected
    # The display of the most frequent spelling is shown even when some records lack one.
    for r in rows:
        assert r[3] == UNMAPPED[r[0]][2]


def test_non_compact_json_and_bundles_count_the_same(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    resources, expected = _population(relevant, n=3)
    spaced = _read(_write(tmp_path / "s", resources, compact=False), term, relevant, workers=1)
    assert _as_counts(spaced) == expected
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources]
        + [{"resource": {"resourceType": "Patient", "id": f"p{i}"}} for i in range(7)],
    }
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")
    assert _as_counts(_read(tmp_path / "b", term, relevant)) == expected


def test_worker_processes_merge_to_the_same_counts(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    resources, expected = _population(relevant, n=40)
    folder = _write(tmp_path / "w", resources)
    one = _read(folder, term, relevant, workers=1)
    two = _read(folder, term, relevant, workers=2, chunk_bytes=200_000, parallel_min_bytes=0)
    assert one == two
    assert _as_counts(two) == expected


def test_displays_with_brackets_escapes_and_non_ascii_are_read(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    displays = ["Glucose [Mass/volume] in Serum", 'Quote "inside" it', "Hämoglobin A1c", "a}]b"]
    resources = [
        _resource("Observation", i, {"system": LOINC, "code": f"9999{i}-1", "display": d})
        for i, d in enumerate(displays)
    ]
    rows = _read(_write(tmp_path / "e", resources), term, relevant, workers=1)
    assert {(r[2], r[3]) for r in rows} == {(f"9999{i}-1", d) for i, d in enumerate(displays)}


def test_records_without_a_coding_are_one_row_and_text_only_on_request(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    text = "SOME LOCAL PRODUCT 5MG TABS 1 PO BID"
    resources = [_resource(t, i, None, text=text) for i, t in enumerate(MED_TYPES)]
    resources.append(_resource("Condition", 9, None, text="free text condition"))
    folder = _write(tmp_path / "t", resources)
    rows = _read(folder, term, relevant, workers=1)
    assert all(text not in r and "free text condition" not in r for r in rows)
    assert {(r[0], r[3], r[4]) for r in rows} == {
        *((t, um.TEXT_NOT_LISTED, 1) for t in MED_TYPES),
        ("Condition", um.NO_CODING, 1),
    }
    rows = _read(folder, term, relevant, workers=1, unmapped_text=True)
    assert {(r[0], r[3]) for r in rows if r[0] in MED_TYPES} == {(t, text) for t in MED_TYPES}
    # Condition text is never listed: only medication free text is on request.
    assert ("Condition", um.NO_CODING) in {(r[0], r[3]) for r in rows}


def test_medications_by_reference_count_the_referenced_code_and_the_medication(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    system, code, display = UNMAPPED["MedicationRequest"]
    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
    }
    mapped_med = {
        "resourceType": "Medication",
        "id": "m2",
        "code": {"coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}]},
    }
    reqs = []
    for i, mid in enumerate(["m1", "m1", "m2", "m1"]):
        r = _resource("MedicationRequest", i, None)
        del r["medicationCodeableConcept"]
        r["medicationReference"] = {"reference": f"Medication/{mid}"}
        reqs.append(r)
    contained = _resource("MedicationStatement", 9, None)
    del contained["medicationCodeableConcept"]
    contained["contained"] = [{**med, "id": "c"}]
    contained["medicationReference"] = {"reference": "#c"}
    rows = _read(_write(tmp_path / "m", [med, mapped_med, *reqs, contained]), term, relevant)
    assert _as_counts(rows) == {
        ("Medication", system, code): 1,
        ("MedicationRequest", system, code): 3,
        ("MedicationStatement", system, code): 1,
    }


def test_system_spellings_and_icd_dots_merge_into_one_row(
    tmp_path: Path, term: Terminology, relevant: set
) -> None:
    spellings = [
        ("http://hl7.org/fhir/sid/icd-10-cm", "I10"),
        ("urn:oid:2.16.840.1.113883.6.90", "I10"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "E119"),
    ]
    resources = [
        _resource("Condition", i, {"system": s, "code": c}) for i, (s, c) in enumerate(spellings)
    ]
    rows = _read(_write(tmp_path / "i", resources), term, relevant, workers=1)
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert _as_counts(rows) == {("Condition", icd, "I10"): 2, ("Condition", icd, "E119"): 2}


def test_the_top_list_is_bounded_and_ranked(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = um.Unmapped()
    counts = {f"C{i}": i + 1 for i in range(50)}
    for code, n in counts.items():
        tally.add("Condition", ((SNOMED, code, ""),), n)
    rows = tally.rows(top=10)
    assert [r[2] for r in rows] == [f"C{i}" for i in range(49, 39, -1)]
    monkeypatch.setattr(um, "MAX_KEYS", 20)
    small = um.Unmapped()
    for code, n in counts.items():
        small.add("Condition", ((SNOMED, code, ""),), n)
    kept = {r[2]: r[4] for r in small.rows()}
    assert len(kept) <= 20
    # Every kept code keeps its exact count, and the most frequent are the ones kept.
    assert all(counts[c] == n for c, n in kept.items())
    assert "C49" in kept and "C0" not in kept
    summary = small.summary()["Condition"]
    assert summary["records"] == sum(counts.values())
    assert summary["records_of_rare_codes_not_kept"] > 0


_keys = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C", "D"]), st.integers(min_value=1, max_value=5)),
    max_size=30,
)


@given(_keys, st.integers(min_value=1, max_value=4), st.randoms())
def test_merging_partial_tallies_equals_one_tally(
    keys: list[tuple[str, int]], parts: int, rnd: random.Random
) -> None:
    whole = um.Unmapped()
    split = [um.Unmapped() for _ in range(parts)]
    for code, n in keys:
        key = ((SNOMED, code, f"display {code}"),)
        whole.add("Observation", key, n)
        rnd.choice(split).add("Observation", key, n)
    merged = um.Unmapped()
    for part in split:
        merged.merge(part)
    assert merged.rows() == whole.rows()
    assert merged.summary() == whole.summary()


@pytest.mark.parametrize("compact", [True, False])
def test_medication_lines_rejected_unparsed_are_counted_too(
    tmp_path: Path, term: Terminology, relevant: set, compact: bool
) -> None:
    """Criteria without medication words reject medication lines before parsing."""
    resources, expected = _population(relevant, n=3)
    folder = _write(tmp_path / "r", resources, compact=compact)
    _, report = read_tables(open_source(folder), relevant=relevant, medication_words=[])
    assert _as_counts(report.unmapped.rows()) == expected


# (code, display, count) spellings: few codes and displays, so equal counts are common.
_spellings = st.lists(
    st.tuples(
        st.sampled_from(["1", "2", "3"]),
        st.sampled_from(["", "Alpha", "alpha", "Beta", "Ä"]),
        st.integers(min_value=1, max_value=3),
    ),
    max_size=12,
)


@given(_spellings, _spellings, st.integers(min_value=1, max_value=4), st.randoms())
def test_displays_do_not_depend_on_how_the_tallies_were_split_or_merged(
    parsed: list[tuple[str, str, int]],
    lines: list[tuple[str, str, int]],
    parts: int,
    rnd: random.Random,
) -> None:
    """Parsed keys (a coding with its display) and rejected lines (keyed by code, one sample
    line each with where it was read) split over any number of workers, merged in any order,
    give the rows of one tally: the most frequent spelling's display, the smallest of equal
    ones; a line key's display that of its first line in reading order."""
    whole = um.Unmapped()
    split = [um.Unmapped() for _ in range(parts)]
    first: dict[bytes, tuple[tuple[int, int], bytes]] = {}
    for code, display, n in parsed:
        key = ((SNOMED, code, display),)
        whole.add("Condition", key, n)
        rnd.choice(split).add("Condition", key, n)
    for at, (code, display, n) in enumerate(lines):
        key = f'"{code}"'.encode()
        line = json.dumps(
            {
                "resourceType": "Observation",
                "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            }
        ).encode()
        rank = (at % 3, at)  # (file, first line of its range): this line's place in reading
        counts, samples, ranks = rnd.choice(split).line_counter("Observation")
        if key not in counts or rank < ranks[key]:
            samples[key], ranks[key] = line, rank
        counts[key] = counts.get(key, 0) + n
        if key not in first or rank < first[key][0]:
            first[key] = (rank, line)
        w_counts, w_samples, w_ranks = whole.line_counter("Observation")
        w_counts[key] = w_counts.get(key, 0) + n
        w_samples[key], w_ranks[key] = first[key][1], first[key][0]
    rnd.shuffle(split)
    merged = um.Unmapped()
    for part in split:
        merged.merge(part)
    assert merged.rows() == whole.rows()
    for rtype, _, code, display, _ in whole.rows():
        if rtype != "Condition":
            continue
        spelled = {}
        for c, d, k in parsed:
            if c == code and d:
                spelled[d] = spelled.get(d, 0) + k
        if spelled:
            top = max(spelled.values())
            assert display == min(d for d, k in spelled.items() if k == top)
