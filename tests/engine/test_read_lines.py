"""Every line is read, counted as skipped with file:line, or provably irrelevant (issue 9 items 3,
6 and 15): malformed kinds x typed file kinds x strict, BOMs, invalid UTF-8, CRLF, depth."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import orjson
import pandas as pd
import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.read import read_tables
from fhir_cohort.errors import MalformedResourceError, SourceError
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import relevant_codes
from fhir_cohort.synth import generate
from fhir_cohort.terminology import Terminology

TERM = Terminology.load()
RELEVANT = frozenset(relevant_codes(load_criteria(default_criteria_path()), TERM))
WORDS = TERM.medication_names()
PATIENT = b'{"resourceType":"Patient","id":"p","gender":"female","birthDate":"1990-01-01"}\n'
# Every type the tables are read from, plus a mixed file (its name declares no type).
FILE_TYPES = [
    "Patient",
    "Condition",
    "Procedure",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    None,
]
# Lines that are not one resource of the file's type. {T} is the file's type (Condition in a
# mixed file). Only "too deep" carries a relevant code: the others must be caught without one.
MALFORMED = {
    "missing resourceType": b'{"id":"m","subject":{"reference":"Patient/p"}}',
    "misspelt resourceType": b'{"resourceType":"{T}x","id":"m"}',
    "lower-case resourceType": b'{"resourceType":"{t}","id":"m"}',
    "numeric resourceType": b'{"resourceType":7,"id":"m"}',
    "null resourceType": b'{"resourceType":null,"id":"m"}',
    "list resourceType": b'{"resourceType":["{T}"],"id":"m"}',
    "empty resourceType": b'{"resourceType":"","id":"m"}',
    "Bundle on one line": b'{"resourceType":"Bundle","type":"collection",'
    b'"entry":[{"resource":{"resourceType":"{T}","id":"m"}}]}',
    "empty Bundle": b'{"resourceType":"Bundle","type":"collection"}',
    "array": b'[{"resourceType":"{T}","id":"m"}]',
    "scalar": b"42",
    "truncated": b'{"resourceType":"{T}","id":"m","subject":{"refer',
    "trailing garbage": b'{"resourceType":"{T}","id":"m"} tail',
    # Of the file's type: irrelevant unless it holds a relevant code (then it must be parsed).
    "too deep": b'{"resourceType":"{T}","id":"m","code":{"coding":[{"code":"55464009"}]},"x":'
    + b"[" * 1100
    + b"]" * 1100
    + b"}",
    "not JSON": b"garbage",
}


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate(out, n_background=40, seed=5, as_of=date(2026, 11, 24))
    return out


def _read(path: Path, **kw):
    return read_tables(open_source(path), relevant=RELEVANT, medication_words=WORDS, **kw)


def _malformed(kind: str, rtype: str | None) -> bytes:
    t = rtype or "Condition"
    return MALFORMED[kind].replace(b"{T}", t.encode()).replace(b"{t}", t.lower().encode())


def _write_case(tmp: Path, kind: str, rtype: str | None) -> Path:
    name = f"{rtype}.000.ndjson" if rtype else "mixed.ndjson"
    (tmp / "Patient.000.ndjson").write_bytes(PATIENT)
    path = tmp / name
    if rtype == "Patient":
        path.write_bytes(PATIENT + _malformed(kind, rtype) + b"\n")
    else:
        path.write_bytes(b'{"resourceType":"Encounter","id":"e"}\n' * (rtype is None))
        path.write_bytes(path.read_bytes() + _malformed(kind, rtype) + b"\n")
    return path


@pytest.mark.parametrize("rtype", FILE_TYPES, ids=lambda t: t or "mixed")
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_line_is_counted_with_its_location(
    tmp_path: Path, kind: str, rtype: str | None
) -> None:
    path = _write_case(tmp_path, kind, rtype)
    line = 2 if rtype in ("Patient", None) else 1
    _, report = _read(tmp_path)
    assert [loc for loc, _ in report.errors] == [f"{path}:{line}"], kind
    assert sum(report.skipped.values()) == 1
    for _, why in report.errors:
        assert "garbage" not in why and "tail" not in why  # reasons never quote content


@pytest.mark.parametrize("rtype", FILE_TYPES, ids=lambda t: t or "mixed")
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_strict_stops_on_every_malformed_line(tmp_path: Path, kind: str, rtype: str | None) -> None:
    path = _write_case(tmp_path, kind, rtype)
    line = 2 if rtype in ("Patient", None) else 1
    with pytest.raises(MalformedResourceError) as info:
        _read(tmp_path, strict=True)
    assert info.value.location == f"{path}:{line}"


def test_strict_in_worker_processes_reports_the_location(tmp_path: Path, hospital: Path) -> None:
    """The error raised in a worker must survive the trip back (it used to fail to unpickle)."""
    for f in hospital.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cond = tmp_path / "Condition.000.ndjson"
    cond.write_bytes(cond.read_bytes() + b'{"resourceType":"Conditon","id":"z"}\n')
    n = cond.read_bytes().count(b"\n")
    with pytest.raises(MalformedResourceError) as info:
        _read(tmp_path, strict=True, workers=2, parallel_min_bytes=0, chunk_bytes=20_000)
    assert info.value.location == f"{cond}:{n}"


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(str).sort_values(list(df.columns)).reset_index(drop=True)


def _same_tables(a, b) -> None:
    for name in ("patients", "conditions", "medications", "observations"):
        pd.testing.assert_frame_equal(_canon(getattr(a, name)), _canon(getattr(b, name)))


@pytest.mark.parametrize("variant", ["bom", "bom-gz", "crlf", "bom-crlf-ranges"])
def test_bom_and_crlf_read_like_plain_files(tmp_path: Path, hospital: Path, variant: str) -> None:
    """A UTF-8 BOM used to lose the first line; CRLF and byte ranges must not matter either."""
    plain, plain_report = _read(hospital)
    for f in hospital.iterdir():
        data = f.read_bytes()
        if "crlf" in variant:
            data = data.replace(b"\n", b"\r\n")
        if "bom" in variant:
            data = b"\xef\xbb\xbf" + data
        if variant == "bom-gz":
            (tmp_path / (f.name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (tmp_path / f.name).write_bytes(data)
    kw = (
        {"workers": 2, "parallel_min_bytes": 0, "chunk_bytes": 20_000}
        if "ranges" in variant
        else {}
    )
    tables, report = _read(tmp_path, **kw)
    assert report.errors == []
    assert report.parsed == plain_report.parsed
    _same_tables(tables, plain)


def test_bom_bundle_file_is_read(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": orjson.loads(PATIENT)}],
    }
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + orjson.dumps(bundle))
    (tmp_path / "c.json.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + orjson.dumps(bundle)))
    _, report = _read(tmp_path)
    assert report.errors == [] and report.parsed["Patient"] == 2


SLE = b'{"system":"http://snomed.info/sct","code":"55464009","display":"Lupus \xff\xfe x"}'


def test_invalid_utf8_is_replaced_and_counted_not_dropped(tmp_path: Path) -> None:
    cond = (
        b'{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p"},'
        b'"code":{"coding":[' + SLE + b"]}}\n"
    )
    (tmp_path / "Patient.000.ndjson").write_bytes(PATIENT)
    path = tmp_path / "Condition.000.ndjson"
    path.write_bytes(cond.replace(b'"c"', b'"c0"', 1) + cond)
    tables, report = _read(tmp_path)
    assert report.errors == []
    assert len(tables.conditions) == 2
    assert report.replaced == 2 and report.replaced_at == [f"{path}:1", f"{path}:2"]
    summary = report.as_dict()["invalid_utf8"]
    assert summary == {"records": 2, "locations": report.replaced_at, "truncated": False}
    # Invalid bytes outside a string stay invalid JSON.
    path.write_bytes(
        b'{"resourceType":"Condition",\xff"id":"c","code":{"coding":[' + SLE + b"]}}\n"
    )
    _, report = _read(tmp_path)
    assert report.replaced == 0 and [why for _, why in report.errors] == ["invalid JSON"]


def test_invalid_utf8_in_a_bundle_is_replaced_and_counted(tmp_path: Path) -> None:
    data = (
        b'{"resourceType":"Bundle","type":"collection","entry":[{"resource":'
        + PATIENT.strip().replace(b'"female"', b'"female"', 1)[:-1]
        + b',"name":[{"text":"A\xc3"}]}}]}'
    )
    (tmp_path / "b.json").write_bytes(data)
    tables, report = _read(tmp_path)
    assert report.replaced == 1 and report.replaced_at == [str(tmp_path / "b.json")]
    assert len(tables.patients) == 1


def _deep_extension(levels: int) -> str:
    ext = '{"url":"u","valueString":"v"}'
    for _ in range(levels):
        ext = '{"url":"u","extension":[' + ext + "]}"
    return ext


CONDITION_DEEP = (
    '{"resourceType":"Condition","id":"deep","subject":{"reference":"urn:uuid:p"},'
    '"code":{"coding":[{"system":"http://snomed.info/sct","code":"55464009"}]},'
    '"extension":[' + _deep_extension(505) + "]}"
)


@pytest.mark.parametrize("validate", [False, True])
def test_a_bundle_nested_too_deep_for_python_is_counted(tmp_path: Path, validate: bool) -> None:
    """~1,000 levels parse in orjson but overflow Python's recursion in our walkers."""
    patient = PATIENT.strip().decode()
    (tmp_path / "b.json").write_text(
        '{"resourceType":"Bundle","type":"collection","entry":['
        f'{{"fullUrl":"urn:uuid:p","resource":{patient}}},'
        f'{{"fullUrl":"urn:uuid:c","resource":{CONDITION_DEEP}}}]}}'
    )
    tables, report = _read(tmp_path, validate=validate)
    assert [loc for loc, _ in report.errors] == [f"{tmp_path / 'b.json'}#entry[1]"]
    assert "nested too deeply" in report.errors[0][1]
    assert len(tables.patients) == 1
    with pytest.raises(MalformedResourceError, match="nested too deeply"):
        _read(tmp_path, strict=True, validate=validate)


@pytest.mark.parametrize(
    ("levels", "where", "why"),
    [
        (300, "#entry[0]", "a Bundle where one resource was expected"),  # 900 JSON levels
        (400, "", "invalid JSON (nested too deeply)"),  # 1,200: beyond orjson's 1,024
    ],
)
def test_bundles_nested_in_bundles_are_counted(
    tmp_path: Path, levels: int, where: str, why: str
) -> None:
    doc = '{"resourceType":"Patient","id":"p"}'
    for _ in range(levels):  # 3 JSON levels each
        doc = '{"resourceType":"Bundle","type":"collection","entry":[{"resource":' + doc + "}]}"
    (tmp_path / "b.json").write_text(doc)
    (tmp_path / "Patient.ndjson").write_bytes(PATIENT)
    _, report = _read(tmp_path)
    assert report.errors == [(f"{tmp_path / 'b.json'}{where}", why)]


def test_truncated_or_corrupt_gzip_is_a_source_error_naming_the_file(tmp_path: Path) -> None:
    data = gzip.compress(PATIENT * 2000)
    path = tmp_path / "Patient.000.ndjson.gz"
    for broken in (data[: len(data) // 2], data[:20] + bytes(200) + data[220:]):
        path.write_bytes(broken)
        with pytest.raises(SourceError, match=r"Patient\.000\.ndjson\.gz: cannot read"):
            _read(tmp_path)
