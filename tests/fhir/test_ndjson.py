"""The package's one NDJSON reader and writer (``fhir_cohort.fhir.ndjson``)."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_cohort.errors import SourceError
from fhir_cohort.fhir.ndjson import BadLine, iter_ndjson, iter_objects, read_json, write_ndjson

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.text(max_size=5), _json, max_size=4), max_size=6))
def test_what_is_written_is_read_back(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = tmp_path / "sub" / "x.ndjson"
    write_ndjson(path, records)
    assert list(iter_objects(path)) == records
    assert [v for _, v, _ in iter_ndjson(path)] == records
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "x.ndjson"]  # no temp file left


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_lines_bom_blank_bad_and_replaced(tmp_path: Path, gz: bool) -> None:
    body = b'\xef\xbb\xbf{"a": 1}\n\n  \n[1]\n{"b": "caf\xe9"}\n{"cut": \n{"z": 2}'
    path = tmp_path / ("x.ndjson.gz" if gz else "x.ndjson")
    path.write_bytes(gzip.compress(body) if gz else body)
    counted: list[int] = []
    got = list(iter_ndjson(path, on_lines=counted.append))
    assert got == [
        (1, {"a": 1}, False),
        (4, [1], False),
        (5, {"b": "caf\ufffd"}, True),
        (6, BadLine("invalid JSON"), False),
        (7, {"z": 2}, False),
    ]
    assert counted == [7]
    with pytest.raises(SourceError, match=r"x\.ndjson(\.gz)?:6: not JSON"):
        list(iter_objects(path))


def test_byte_ranges_read_the_same_lines_as_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    lines = [b'{"n": %d}\n' % i for i in range(10)]
    path.write_bytes(b"".join(lines))
    whole = list(iter_ndjson(path))
    for cut in range(len(lines) + 1):
        mid = sum(len(line) for line in lines[:cut])
        first = list(iter_ndjson(path, byte_range=(0, mid, 1)))
        second = list(iter_ndjson(path, byte_range=(mid, os.path.getsize(path), cut + 1)))
        assert first + second == whole


def test_line_filter_skips_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(b'{"keep": 1}\nnot json at all\n')
    assert list(iter_ndjson(path, line_filter=lambda line: b"keep" in line)) == [
        (1, {"keep": 1}, False)
    ]


def test_damaged_files_and_whole_json(tmp_path: Path) -> None:
    cut = tmp_path / "x.ndjson.gz"
    cut.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:-20])
    with pytest.raises(SourceError, match="damaged or truncated gzip"):
        list(iter_ndjson(cut))
    with pytest.raises(SourceError, match="cannot read"):
        read_json(tmp_path / "missing.json")
    bundle = tmp_path / "b.json"
    bundle.write_bytes(b'\xef\xbb\xbf{"resourceType": "Bundle", "x": "\xff"}')
    assert read_json(bundle) == ({"resourceType": "Bundle", "x": "\ufffd"}, True)
    bundle.write_bytes(b'{"resourceType": ')
    assert read_json(bundle) == (BadLine("invalid JSON"), False)
