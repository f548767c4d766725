"""References resolve only as FHIR says: never by the tail of a URL (issue 9 item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.fhir.references import (
    UNRESOLVED_FORMS,
    ReferenceResolver,
    base_from_export_request,
    normalize_base,
    recorded_base,
)

BASE = "https://ehr.example.org/fhir"
OWN = ReferenceResolver([BASE])
NONE = ReferenceResolver()
CONTAINER = {
    "contained": [
        {"resourceType": "Medication", "id": "med"},
        {"resourceType": "Patient", "id": "p"},
    ]
}

# (reference, resolver, expected (form, target)); target of a contained hit is checked apart.
CASES: list[tuple[dict[str, Any] | None, ReferenceResolver, tuple[str, Any]]] = [
    ({"reference": "Patient/x"}, NONE, ("local", "x")),
    ({"reference": "Patient/x/_history/2"}, NONE, ("local", "x")),
    ({"reference": "Patient/x", "type": "Patient"}, NONE, ("local", "x")),
    ({"reference": "Patient/x", "type": "Group"}, NONE, ("type_mismatch", None)),
    ({"reference": f"{BASE}/Patient/x"}, OWN, ("local", "x")),
    ({"reference": f"{BASE}/Patient/x/_history/3"}, OWN, ("local", "x")),
    ({"reference": "HTTPS://EHR.example.org/fhir/Patient/x"}, OWN, ("local", "x")),
    ({"reference": f"{BASE}/Patient/x"}, NONE, ("absolute_no_base", None)),
    ({"reference": "https://elsewhere.example/fhir/Patient/x"}, OWN, ("absolute_other_base", None)),
    ({"reference": f"{BASE}2/Patient/x"}, OWN, ("absolute_other_base", None)),
    ({"reference": "http://ehr.example.org/fhir/Patient/x"}, OWN, ("absolute_other_base", None)),
    ({"reference": "urn:uuid:x"}, OWN, ("urn", None)),
    ({"reference": "urn:oid:1.2.3"}, OWN, ("urn", None)),
    ({"reference": "#x"}, OWN, ("contained_missing", None)),
    # A contained Patient resolves (to the contained resource, not to local Patient p); the
    # flattener counts it as unresolved: nobody the source screens.
    ({"reference": "#p"}, OWN, ("contained", CONTAINER["contained"][1])),
    ({"reference": "#med"}, OWN, ("contained_missing", None)),
    ({"reference": "Patient?identifier=a|b"}, OWN, ("conditional", None)),
    ({"identifier": {"system": "urn:mrn", "value": "1"}}, OWN, ("identifier", None)),
    ({"type": "Patient", "identifier": {"value": "1"}}, OWN, ("identifier", None)),
    ({"reference": "Group/1"}, OWN, ("other_type", None)),
    ({"reference": "Patient"}, OWN, ("malformed", None)),
    ({"reference": "Patient/x/y"}, OWN, ("malformed", None)),
    ({"reference": "patient/x"}, OWN, ("malformed", None)),
    ({"display": "someone"}, OWN, ("missing", None)),
    (None, OWN, ("missing", None)),
]


@pytest.mark.parametrize(("ref", "resolver", "expected"), CASES)
def test_subject_forms(
    ref: dict[str, Any] | None, resolver: ReferenceResolver, expected: tuple[str, Any]
) -> None:
    form, target = resolver.resolve(ref, "Patient", CONTAINER)
    assert (form, target) == expected
    assert form in (*UNRESOLVED_FORMS, "local", "contained", "missing", "other_type")


def test_contained_resolves_only_within_the_same_resource() -> None:
    form, target = OWN.resolve({"reference": "#med"}, "Medication", CONTAINER)
    assert form == "contained" and target is CONTAINER["contained"][0]
    assert OWN.resolve({"reference": "#med"}, "Medication", {}) == ("contained_missing", None)
    assert OWN.resolve({"reference": "#med", "type": "Substance"}, "Medication", CONTAINER) == (
        "type_mismatch",
        None,
    )


ids = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)
hosts = st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True)


@given(ids, hosts, st.sampled_from(["Patient", "Medication", "Condition"]))
def test_absolute_resolves_exactly_when_the_base_is_own(rid: str, host: str, rtype: str) -> None:
    base = f"https://{host}/fhir"
    ref = {"reference": f"{base}/{rtype}/{rid}"}
    assert ReferenceResolver([base]).resolve(ref, rtype) == ("local", rid)
    assert ReferenceResolver([f"{base}/"]).resolve(ref, rtype) == ("local", rid)
    other = ReferenceResolver([f"https://x{host}/fhir"]).resolve(ref, rtype)
    assert other == ("absolute_other_base", None)
    assert ReferenceResolver().resolve(ref, rtype) == ("absolute_no_base", None)
    # Never by the tail: urn:uuid and #id with the same id do not resolve to the local one.
    assert ReferenceResolver([base]).resolve({"reference": f"urn:uuid:{rid}"}, rtype)[0] == "urn"
    assert ReferenceResolver([base]).resolve({"reference": f"#{rid}"}, rtype, {})[1] is None


@given(
    st.from_regex(r"https?://[a-zA-Z]{1,8}(:[0-9]{2,4})?(/[a-zA-Z0-9]{1,5}){0,3}/?", fullmatch=True)
)
def test_normalize_base_is_idempotent(url: str) -> None:
    once = normalize_base(url)
    assert normalize_base(once) == once and not once.endswith("/")


@pytest.mark.parametrize(
    ("request_url", "base"),
    [
        (f"{BASE}/$export?_type=Patient", BASE),
        (f"{BASE}/Patient/$export", BASE),
        (f"{BASE}/Group/g1/$export?_since=2020", BASE),
        ("https://ehr.example.org/$export", "https://ehr.example.org"),
        (f"{BASE}/Patient", None),
    ],
)
def test_base_from_export_request(request_url: str, base: str | None) -> None:
    assert base_from_export_request(request_url) == base


def test_recorded_base_of_folders(tmp_path: Path) -> None:
    assert recorded_base(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"request": f"{BASE}/Patient/$export"}))
    assert recorded_base(tmp_path) == BASE
    (tmp_path / "export_state.json").write_text(json.dumps({"base_url": "https://own.example/r4/"}))
    assert recorded_base(tmp_path) == "https://own.example/r4"
    (tmp_path / "export_state.json").write_text("{not json")
    assert recorded_base(tmp_path) == BASE
    assert recorded_base(tmp_path / "manifest.json") is None
