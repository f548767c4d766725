"""Bundles split into entries from the bytes (fhir_cohort/fhir/bundle_split.py): which files
split and which are parsed whole, and that a folder of awkward Bundles (pretty-printed, braces
and quotes inside strings, escapes, codes spelt only with escapes, gzip, beside NDJSON files)
reads as every entry read in full, on one and two workers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from fhir_cohort.fhir import bundle_split
from fhir_cohort.fhir.bundle_split import split_bundle
from fhir_cohort.pipeline import DEMO_DATA
from tests.pipeline.test_bundles import (
    LOINC,
    SCT,
    _coded,
    _entry,
    _read,
    adversarial_sample,
)
from tests.prerequisites import skip_unless_ci


@pytest.fixture(autouse=True)
def _msgspec() -> None:
    if not bundle_split.AVAILABLE:
        skip_unless_ci("msgspec is not installed (a dependency: pip install -e .)")


def _bundle(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


PAT = {"resourceType": "Patient", "gender": "female", "birthDate": "1980-02-03"}


def _awkward() -> dict[str, bytes]:
    """File name -> bytes of Bundles whose entries only exact reading gets right."""
    braces = _coded("Observation", "sp-o1", "urn:uuid:sp-p", LOINC, "5130-0", d='x}]{"[')
    braces["note"] = [{"text": '},{"resource":{"resourceType":"Patient","id":"fake"}}]'}]
    escaped_code = (
        b'{"fullUrl":"urn:uuid:sp-o2","resource":{"resourceType":"Observation","id":"sp-o2",'
        b'"subject":{"reference":"urn:uuid:sp-p"},"\\u0063ode":{"coding":[{"system":'
        b'"http://loinc.org","code":"\\u0035130-0"}]},"valueQuantity":{"value":170}}}'
    )
    unicode_text = _coded("Condition", "sp-c1", "urn:uuid:sp-p", SCT, "1234", d="Zo\u00eb \u2603")
    plain = _bundle(
        _entry(PAT | {"id": "sp-p"}, "urn:uuid:sp-p"),
        _entry(braces, "urn:uuid:sp-o1"),
        _entry(unicode_text, "urn:uuid:sp-c1"),
        _entry({"resourceType": "Encounter", "id": "sp-e", "text": {"div": '<div a="b">}</div>'}}),
        _entry(_coded("Observation", "sp-o3", "urn:uuid:sp-p", LOINC, "29463-7")),
        _entry(
            _coded("Observation", "sp-o4", "#c", LOINC, "29463-7", contained=[PAT | {"id": "c"}])
        ),
    )
    compact = orjson.dumps(plain)
    assert compact.endswith(b"]}")  # "entry" is the last key
    with_escape = compact[:-2] + b"," + escaped_code + b"]}"
    return {
        "pretty.json": json.dumps(plain, indent=2).replace('"sp-', '"pp-').encode(),
        "ascii-escaped.json": json.dumps(plain).replace('"sp-', '"ae-').encode(),  # \u escapes
        "compact.json": compact,
        "escaped-code.json": with_escape.replace(b'"sp-', b'"ec-').replace(b":sp-", b":ec-"),
        "crlf-bom.json": b"\xef\xbb\xbf"
        + json.dumps(plain, indent=1).replace('"sp-', '"cb-').replace("\n", "\r\n").encode(),
    }


def _fallbacks() -> dict[str, bytes]:
    """File name -> bytes split_bundle leaves to the whole parse (and why)."""
    obs = orjson.dumps(_entry(_coded("Observation", "fb-o", "urn:uuid:fb-p", LOINC, "29463-7")))
    head = b'{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:fb-p","resource":'
    pat = orjson.dumps(PAT | {"id": "fb-p"})
    files = {
        # invalid UTF-8 in a string: orjson's reading replaces it and reports the file
        "bad-utf8.json": head + pat.replace(b"female", b"fem\xffale") + b"}," + obs + b"]}",
        # a number orjson refuses (infinite): the whole Bundle is invalid JSON, as before
        "infinite.json": head + pat + b"}," + obs.replace(b'"x"}', b'"x","v":1e400}') + b"]}",
        # entry not an object, a resource that is not an object, resourceType not a string
        "not-object.json": head + pat + b"},42," + obs + b"]}",
        "resource-list.json": head + pat + b'},{"resource":[1]},' + obs + b"]}",
        "type-number.json": head + pat + b'},{"resource":{"resourceType":7}},' + obs + b"]}",
        # not a Bundle; a Bundle whose entry is not a list; trailing garbage
        "single.json": orjson.dumps(PAT | {"id": "fb-single"}),
        "entry-object.json": b'{"resourceType":"Bundle","entry":{}}',
        "garbage.json": head + pat + b"}]} x",
    }
    # ids of their own per file (copies of one id would be duplicates)
    return {
        name: data.replace(b"fb-", name.split(".")[0].encode() + b"-")
        for name, data in files.items()
    }


def test_split_bundle_splits_what_it_reads_as_orjson_and_refuses_the_rest() -> None:
    for name, data in _awkward().items():
        split = split_bundle(data)
        assert split is not None, name
        whole = orjson.loads(data.removeprefix(b"\xef\xbb\xbf"))["entry"]
        assert [orjson.loads(bytes(s)) for s in split.spans] == whole, name
    for name, data in _fallbacks().items():
        assert split_bundle(data) is None, name
    # hex in ids that looks like an exponent is not a number: still split
    hexy = orjson.dumps(_bundle(_entry(PAT | {"id": "3e456"}, "urn:uuid:x-1e999-a")))
    assert split_bundle(hexy) is not None
    assert split_bundle(hexy.replace(b'"gender"', b'"n":2E+308,"gender"')) is None


def test_awkward_bundles_beside_ndjson_read_as_in_full(tmp_path: Path) -> None:
    folder = adversarial_sample(tmp_path, 40)
    for name, data in {**_awkward(), **_fallbacks()}.items():
        (folder / name).write_bytes(data)
    with gzip.open(folder / "pretty-gz.json.gz", "wb") as fh:
        fh.write(_awkward()["pretty.json"].replace(b'"pp-', b'"gz2-').replace(b":pp-", b":gz2-"))
    # typed NDJSON beside the Bundles, read on the same pool
    lines = (DEMO_DATA / "Observation.000.ndjson").read_bytes().splitlines()[:300]
    renamed = [orjson.loads(line) for line in lines]
    for res in renamed:
        res["id"] = f"nd-{res['id']}"
    ndjson = folder / "Observation.000.ndjson"
    ndjson.write_bytes(b"".join(orjson.dumps(res) + b"\n" for res in renamed))
    full = _read(folder, workers=1, filter_bundles=False)
    reasons = {e["location"].rsplit("/", 1)[-1]: e["reason"] for e in full[1]["errors"]}
    assert reasons["infinite.json"] == "invalid JSON"
    assert reasons["not-object.json#entry[1]"] == "entry is not a JSON object"
    assert full[1]["invalid_utf8"]["records"] == 1
    # the code spelt with escapes gives its row; so does the one behind braces in strings
    assert {"ec-o2", "sp-o1", "pp-o1"} <= {row[1] for row in full[0]["observations"]}
    for workers in (1, 2):
        assert _read(folder, workers=workers)[:3] == full[:3]
    # a later copy, in the NDJSON file, of a Bundle entry the filter takes out: the duplicate
    # rule needs every copy (the Bundles are read again in full)
    later = _coded("Observation", "sp-o3", "Patient/sp-p", LOINC, "29463-7")
    later["meta"] = {"versionId": "2"}
    ndjson.write_bytes(ndjson.read_bytes() + orjson.dumps(later) + b"\n")
    full = _read(folder, workers=1, filter_bundles=False)
    assert full[1]["duplicates"]["resources"] == {"Observation": 1}
    for workers in (1, 2):
        assert _read(folder, workers=workers)[:3] == full[:3]
    # without msgspec every Bundle is parsed whole: the same read
    saved = bundle_split.msgspec
    bundle_split.msgspec = None  # type: ignore[assignment]
    try:
        assert _read(folder, workers=1)[:3] == full[:3]
    finally:
        bundle_split.msgspec = saved
