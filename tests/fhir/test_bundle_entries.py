"""A Bundle split from its bytes (pass 1 made by maps over the entries' heads, the depth bound
counted over the joined entries) reads as the same Bundle parsed whole, entry by entry: the
same resources, locations, errors, fullUrl map and entries taken out by the filter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir import sources
from fhir_cohort.fhir.bundle_split import AVAILABLE, split_bundle

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="msgspec is not installed")

_TYPES = st.sampled_from(["Patient", "Observation", "Encounter", "Medication", "Condition"])
_IDS = st.one_of(
    st.sampled_from(["a", "b", "k1", "x-k", "é", "a/b"]),
    st.just(""),
    st.integers(0, 3),
    st.none(),
)
_FULL_URLS = st.one_of(
    st.sampled_from(["urn:uuid:a", "urn:uuid:b", "urn:uuid:", "http://h/Patient/a", "x"]),
    st.just(""),
    st.integers(0, 2),
    st.none(),
)
_MISSING = object()


@st.composite
def _entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    full = draw(st.one_of(st.just(_MISSING), _FULL_URLS))
    if full is not _MISSING:
        entry["fullUrl"] = full
    shape = draw(st.sampled_from(["resource", "resource", "resource", "null", "none", "typeless"]))
    if shape in ("resource", "typeless"):
        res: dict[str, Any] = {} if shape == "typeless" else {"resourceType": draw(_TYPES)}
        rid = draw(st.one_of(st.just(_MISSING), _IDS))
        if rid is not _MISSING:
            res["id"] = rid
        ref = draw(st.one_of(st.none(), _FULL_URLS, st.just("#c")))
        if ref is not None:
            res["subject"] = {"reference": ref}
        entry["resource"] = res
    elif shape == "null":
        entry["resource"] = None
    if draw(st.booleans()):
        entry["request"] = {"method": draw(st.sampled_from(["POST", "DELETE", "GET"]))}
    return entry


@st.composite
def _plain_entries(draw: st.DrawFn) -> dict[str, Any]:
    """What exporters write (a type, an id and a fullUrl on every entry): pass 1's maps."""
    rid = draw(st.sampled_from(["a", "b", "k1", "x-k", "é"]))
    res = {"resourceType": draw(_TYPES), "id": rid}
    if draw(st.booleans()):
        res["subject"] = {"reference": draw(st.sampled_from(["urn:uuid:a", "urn:uuid:q"]))}
    full = draw(st.sampled_from([f"urn:uuid:{rid}", "urn:uuid:a", f"http://h/x/{rid}"]))
    return {"fullUrl": full, "resource": res}


class _Recorder:
    """An entry filter that takes out Encounters and Observations whose id has no "k", and
    records what it saw: the same decision from a head as from the parsed resource."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str]] = []
        self.maps: list[dict[str, str]] = []

    def _keep(self, rtype: str, rid: str) -> bool:
        if rtype in ("Encounter", "Observation") and "k" not in rid:
            self.out.append((rtype, rid))
            return False
        return True

    def __call__(self, resource: dict[str, Any], urls: dict[str, str]) -> bool:
        self.maps.append(dict(urls))
        return self._keep(resource["resourceType"], resource["id"])

    def heads(self, urls: dict[str, str]) -> Any:
        self.maps.append(dict(urls))
        return lambda rtype, rid, head: self._keep(rtype, rid)


def _read(doc: dict[str, Any], split: bool) -> tuple[list[Any], list[Any], list[Any], Any]:
    errors: list[tuple[str, str]] = []

    def on_error(err: MalformedResourceError) -> None:
        errors.append((err.location, err.reason))

    report = sources._Reporter(on_error, False)
    recorder = _Recorder()
    if split:
        parts = split_bundle(orjson.dumps(doc))
        assert parts is not None
        got = list(sources._iter_split("B", parts.spans, parts.heads, report, recorder))
    else:
        got = list(
            sources._iter_bundle(
                Path("B"), None, report, False, None, (doc, False), entry_filter=recorder
            )
        )
    return got, errors, sorted(recorder.out), recorder.maps[:1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(_entries(), max_size=12), st.lists(_plain_entries(), max_size=12)))
def test_split_bundle_reads_as_the_whole_parse(entries: list[dict[str, Any]]) -> None:
    doc = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    whole = _read(orjson.loads(orjson.dumps(doc)), split=False)
    split = _read(doc, split=True)
    assert split[:3] == whole[:3]
    if split[3] and whole[3]:
        assert split[3] == whole[3]  # the fullUrl map the filter was given


def _nested(depth: int) -> bytes:
    """An Observation entry nested ``depth`` levels (orjson writes no more than 255)."""
    opened = "".join('{"v":' if n % 2 == 0 else "[" for n in range(depth))
    closed = "".join("}" if n % 2 == 0 else "]" for n in reversed(range(depth)))
    head = '{"resource":{"resourceType":"Observation","id":"d","valueX":'
    return f"{head}{opened}1{closed}}}}}".encode()


def _noted(text: str) -> bytes:
    """An Encounter entry whose string holds braces (counted, though not nesting)."""
    return orjson.dumps({"resource": {"resourceType": "Encounter", "id": "t", "note": text}})


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(0, 300).map(_nested), st.text("{[]}ab", max_size=600).map(_noted)),
        min_size=1,
        max_size=6,
    )
)
def test_depth_bound_counts_each_entry_as_one_by_one(entries: list[bytes]) -> None:
    parts = split_bundle(b'{"resourceType":"Bundle","entry":[' + b",".join(entries) + b"]}")
    assert parts is not None
    counts = [bytes(s).count(b"{") + bytes(s).count(b"[") for s in parts.spans]
    expected = None if max(counts) <= 250 else [n > 250 for n in counts]
    assert sources._deep_entries(parts.spans) == expected
