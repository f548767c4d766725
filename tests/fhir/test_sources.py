"""On-disk sources: bulk folders, gz, bundles with urn:uuid references, malformed lines."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import pytest

from fhir_cohort.errors import MalformedResourceError, SourceError
from fhir_cohort.fhir.sources import iter_file, iter_ndjson_range, open_source, validate_resource

DATA = Path(__file__).resolve().parents[1] / "data" / "sources"


def test_bulk_folder_types_order_and_gz() -> None:
    src = open_source(DATA / "bulk")
    assert src.resource_types() == [
        "Condition",
        "Medication",
        "MedicationRequest",
        "Observation",
        "Patient",
    ]
    # Medication first, Patient next, so references resolve while streaming; log.ndjson skipped.
    names = [p.name for _, p in src.files()]
    assert names[:2] == ["Medication.000.ndjson", "Patient.000.ndjson"]
    assert "log.ndjson" not in names
    got = [(r["resourceType"], r["id"]) for r, _ in src.iter_resources()]
    assert ("Condition", "c1") in got and ("Condition", "c2") in got  # from the .gz file
    assert ("Observation", "o1") in got  # from the .jsonl file
    assert len(got) == 7


def test_types_and_locations() -> None:
    src = open_source(DATA / "bulk")
    rows = list(src.iter_resources(types={"Condition"}))
    assert [r["id"] for r, _ in rows] == ["c1", "c2"]
    assert rows[1][1].endswith("Condition.000.ndjson.gz:2")
    assert [t for t, _ in src.files({"Patient"})] == ["Patient"]


def test_line_filter_sees_raw_bytes_before_parsing() -> None:
    src = open_source(DATA / "bulk")
    seen: list[bytes] = []

    def keep_c1(line: bytes) -> bool:
        seen.append(line)
        return b'"c1"' in line

    rows = list(src.iter_resources(types={"Condition"}, line_filter=keep_c1))
    assert [r["id"] for r, _ in rows] == ["c1"]
    assert len(seen) == 2 and all(isinstance(x, bytes) for x in seen)


def test_malformed_lines_reported_with_location_and_skipped() -> None:
    errors: list[MalformedResourceError] = []
    src = open_source(DATA / "malformed")
    rows = list(src.iter_resources(on_error=errors.append))
    assert [r["id"] for r, _ in rows] == ["ok1", "ok2"]
    where = {e.location.rsplit(":", 1)[1]: e.reason for e in errors}
    assert where == {
        "2": "invalid JSON",
        "3": "not a JSON object",
        "4": "missing resourceType",
        "5": "resourceType Observation does not match file type Condition",
        "6": "Condition without id",
    }
    for e in errors:
        assert e.location.startswith(str(DATA / "malformed" / "Condition.000.ndjson"))
        assert "SECRET" not in str(e) and "bad-json" not in str(e)


def test_malformed_line_raises_in_strict_mode() -> None:
    src = open_source(DATA / "malformed")
    with pytest.raises(MalformedResourceError) as info:
        list(src.iter_resources(strict=True))
    assert info.value.location.endswith("Condition.000.ndjson:2")


def test_transaction_bundle_resolves_urn_uuid_references() -> None:
    src = open_source(DATA / "bundles" / "transaction.json")
    res = {r["resourceType"]: (r, loc) for r, loc in src.iter_resources()}
    cond, cond_loc = res["Condition"]
    # The id-less Condition takes its uuid as id; its subject resolves to the Patient's own id.
    assert cond["id"] == "22222222-2222-2222-2222-222222222222"
    assert cond["subject"]["reference"] == "Patient/pat-a"
    assert cond_loc.endswith("transaction.json#entry[0]")
    ms = res["MedicationStatement"][0]
    assert ms["medicationReference"]["reference"] == (
        "Medication/33333333-3333-3333-3333-333333333333"
    )
    # Medications come first so a streaming flattener can resolve them.
    order = [r["resourceType"] for r, _ in src.iter_resources()]
    assert order[0] == "Medication" and order[1] == "Patient"
    assert len(order) == 4  # the DELETE entry carries no resource and is not an error


def test_folder_of_bundles_with_gz() -> None:
    src = open_source(DATA / "bundles")
    assert src.resource_types() == [
        "Condition",
        "Medication",
        "MedicationStatement",
        "Observation",
        "Patient",
    ]
    obs = [r for r, _ in src.iter_resources(types={"Observation"})]
    assert [o["id"] for o in obs] == ["ob1"]


def test_bundle_entry_errors(tmp_path: Path) -> None:
    bundle = (
        b'{"resourceType":"Bundle","type":"collection","entry":['
        b'{"resource":{"resourceType":"Patient"}},{"fullUrl":"urn:uuid:x"},'
        b'{"resource":{"resourceType":"Patient","id":"ok"}}]}'
    )
    path = tmp_path / "b.json.gz"
    path.write_bytes(gzip.compress(bundle))
    errors: list[MalformedResourceError] = []
    got = [r["id"] for r, _ in iter_file(path, on_error=errors.append)]
    assert got == ["ok"]
    assert [(e.location.rsplit("#", 1)[1], e.reason) for e in errors] == [
        ("entry[0]", "Patient without id"),
        ("entry[1]", "entry without resource"),
    ]


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        open_source(tmp_path / "nope")
    with pytest.raises(SourceError):
        open_source(tmp_path)  # empty folder
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(SourceError):
        open_source(tmp_path / "x.csv")


def test_mixed_ndjson_file_takes_type_from_resource(tmp_path: Path) -> None:
    shutil.copy(DATA / "bulk" / "Patient.000.ndjson", tmp_path / "export-part1.ndjson")
    src = open_source(tmp_path)
    assert src.files() == [(None, tmp_path / "export-part1.ndjson")]
    assert src.resource_types() == ["Patient"]


def test_validate_resource_reports_fields_not_values() -> None:
    assert validate_resource({"resourceType": "Patient", "id": "a", "gender": "female"}) is None
    reason = validate_resource({"resourceType": "Patient", "id": "a", "birthDate": "SECRET-1"})
    assert reason is not None and "birthDate" in reason and "SECRET" not in reason
    assert validate_resource({"resourceType": "NotAType", "id": "a"}) == "unknown resourceType"


def test_validate_option_skips_invalid(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(
        b'{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b","gender":42}\n'
    )
    errors: list[MalformedResourceError] = []
    got = [r["id"] for r, _ in iter_file(path, validate=True, on_error=errors.append)]
    assert got == ["a"]
    assert errors[0].location.endswith("Patient.ndjson:2") and "gender" in errors[0].reason
    assert [r["id"] for r, _ in iter_file(path)] == ["a", "b"]


@pytest.mark.parametrize("validate", [False, True])
def test_synthea_bulk_13_reads_fully(validate: bool, synthea13: Path) -> None:
    src = open_source(synthea13)
    expected = {}
    for path in synthea13.glob("*.ndjson"):
        if path.name == "log.ndjson":
            continue
        # Same count as `wc -l`: one resource per newline-terminated line.
        expected[path.name.split(".")[0]] = path.read_bytes().count(b"\n")
    errors: list[MalformedResourceError] = []
    counts = Counter(
        r["resourceType"] for r, _ in src.iter_resources(on_error=errors.append, validate=validate)
    )
    assert errors == []
    assert dict(counts) == expected
    assert sorted(expected) == src.resource_types()
    assert counts["Patient"] == 13


def test_byte_ranges_cover_a_file_with_whole_file_locations() -> None:
    path = DATA / "malformed" / "Condition.000.ndjson"
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1  # a line start in the middle
    first_line = data[:cut].count(b"\n") + 1
    whole_errors: list[MalformedResourceError] = []
    whole = list(iter_file(path, expected_type="Condition", on_error=whole_errors.append))
    parts_errors: list[MalformedResourceError] = []
    parts = list(
        iter_ndjson_range(path, 0, cut, 1, expected_type="Condition",
                          on_error=parts_errors.append)
    ) + list(
        iter_ndjson_range(path, cut, len(data), first_line, expected_type="Condition",
                          on_error=parts_errors.append)
    )  # fmt: skip
    assert parts == whole
    assert [e.location for e in parts_errors] == [e.location for e in whole_errors]
    with pytest.raises(SourceError):
        list(iter_ndjson_range(DATA / "missing.ndjson", 0, 10, 1))


def test_name_names_the_file_in_locations() -> None:
    """``name`` (the Spark engine's executors open an absolute path for a relative name)
    replaces the path in every location, of resources and of errors, whole file or range."""
    path = DATA / "malformed" / "Condition.000.ndjson"
    size = path.stat().st_size
    for read in (
        lambda **kw: iter_file(path, **kw),
        lambda **kw: iter_ndjson_range(path, 0, size, 1, **kw),
    ):
        plain: list[MalformedResourceError] = []
        named: list[MalformedResourceError] = []
        want = list(read(expected_type="Condition", on_error=plain.append))
        got = list(read(expected_type="Condition", on_error=named.append, name="x.ndjson"))
        assert [r for r, _ in got] == [r for r, _ in want] and plain
        rename = {str(path) + ":" + loc.rsplit(":", 1)[1]: "x.ndjson:" + loc.rsplit(":", 1)[1]
                  for loc in [*(loc for _, loc in want), *(e.location for e in plain)]}  # fmt: skip
        assert [loc for _, loc in got] == [rename[loc] for _, loc in want]
        assert [e.location for e in named] == [rename[e.location] for e in plain]
