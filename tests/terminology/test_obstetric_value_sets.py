"""E3 value sets (spec v1.1): every code in every spelling, and every ICD-10-CM chapter-15 code
sorted into pregnancy / delivery / lactation / phase-not-coded or knowingly left out."""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fhir_cohort.terminology import Terminology, default_directory
from fhir_cohort.terminology.codes import ICD_SYSTEMS, SYSTEMS

FOLDER = default_directory()
SOURCES = Path(__file__).resolve().parents[2] / "scripts" / "value_set_sources"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
# Every system's first OID, from the one table of code-system spellings (WHO ICD-10 included).
OIDS = {cs.uri: cs.oids[0] for cs in SYSTEMS if cs.oids}
OBSTETRIC = (
    "pregnancy",
    "lactation",
    "delivery",
    "pregnancy_or_puerperium",
    "pregnancy_test_positive",
    "pregnancy_status",
    "pregnancy_status_pregnant",
    "breastfeeding_status",
    "breastfeeding_status_breastfeeding",
    "hcg",
)
CLASSES = ("pregnancy", "delivery", "lactation", "pregnancy_or_puerperium")


def icd() -> ModuleType:
    """simple_icd_10_cm, imported on first use: its import parses the whole CMS tabular list
    (seconds of CPU), which only a worker that runs these tests should pay, not the collection
    of every pytest-xdist worker."""
    return importlib.import_module("simple_icd_10_cm")


def members(vs_id: str) -> set[tuple[str, str]]:
    data = json.loads((FOLDER / f"{vs_id}.json").read_text(encoding="utf-8"))
    return {
        (inc["system"], c["code"]) for inc in data["compose"]["include"] for c in inc["concept"]
    }


def icd_codes(vs_id: str) -> set[str]:
    return {code for system, code in members(vs_id) if system == ICD10}


def spellings(system: str, code: str) -> Iterator[tuple[str, str]]:
    """The standard spellings v1.1 names: canonical URI or OID; ICD with or without dot/blanks."""
    systems = [system, f"urn:oid:{OIDS[system]}", system + "/"]
    codes = [code]
    if system in ICD_SYSTEMS:
        codes += [code.replace(".", ""), code.lower(), f" {code} ", code.replace(".", ". ")]
    for s in systems:
        for c in codes:
            yield s, c


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


@pytest.mark.parametrize("vs_id", OBSTETRIC)
def test_every_code_in_every_spelling(term: Terminology, vs_id: str) -> None:
    missed = [
        (s, c)
        for system, code in sorted(members(vs_id))
        for s, c in spellings(system, code)
        if not term.contains(vs_id, s, c)
    ]
    assert not missed, missed[:10]


def chapter15() -> list[str]:
    return [c for c in icd().get_descendants("15") if "-" not in c]


def in_block(code: str, lo: str, hi: str) -> bool:
    return lo <= code[:3] <= hi


def vsac_pregnancy() -> set[str]:
    with (SOURCES / "obstetric_vsac_pregnancy_icd10cm.csv").open(encoding="utf-8") as fh:
        return {r["code"] for r in csv.DictReader(fh)}


def test_every_chapter15_code_has_one_class_or_is_knowingly_left_out() -> None:
    sets = {k: icd_codes(k) for k in CLASSES}
    left_out = []
    for code in chapter15():
        where = [k for k in CLASSES if code in sets[k]]
        assert len(where) <= 1, (code, where)
        if not where:
            left_out.append(code)
    # Only abortive outcomes (O03-O08) and sequelae (O94) are in no obstetric set.
    assert left_out
    assert all(in_block(c, "O03", "O08") or c == "O94" for c in left_out), left_out


@pytest.mark.parametrize(("lo", "hi"), [("O09", "O09"), ("O30", "O48"), ("O00", "O02")])
def test_antenatal_blocks_are_pregnancy(lo: str, hi: str) -> None:
    preg = icd_codes("pregnancy")
    codes = [c for c in chapter15() if in_block(c, lo, hi)]
    assert codes
    assert [c for c in codes if c not in preg] == []


def test_every_vsac_pregnancy_code_is_pregnancy_and_z32_01_is_its_own_set() -> None:
    preg, pos = icd_codes("pregnancy"), icd_codes("pregnancy_test_positive")
    vsac = vsac_pregnancy()
    assert sorted(vsac - preg) == ["Z32.01"]
    assert pos == {"Z32.01"}


def test_delivery_blocks_are_delivery_except_antenatal_and_lactation_codes() -> None:
    delivery, vsac = icd_codes("delivery"), vsac_pregnancy()
    lact = icd_codes("lactation")
    for code in chapter15():
        if in_block(code, "O60", "O92") and icd().is_leaf(code) and code not in vsac | lact:
            assert code in delivery, code
    # "Without delivery" / "before onset of labor" codes of O60/O71 stay antenatal.
    assert {"O60.00", "O60.03", "O71.02"} <= icd_codes("pregnancy")
    assert {"O80", "O82"} <= delivery


def test_phase_axis_childbirth_or_puerperium_is_never_pregnancy() -> None:
    preg, vsac = icd_codes("pregnancy"), vsac_pregnancy()
    for code in chapter15():
        # VSAC files "... associated with pregnancy and the puerperium" (O92.2x) as pregnancy.
        if code in preg and icd().is_leaf(code) and code not in vsac:
            d = icd().get_description(code).lower()
            if "complicating childbirth" in d or "in childbirth" in d or "the puerperium" in d:
                pytest.fail(f"{code} {d} filed as pregnancy")


def test_suppressed_lactation_is_not_lactation() -> None:
    lact = icd_codes("lactation")
    assert not [c for c in lact if c.startswith("O92.5")]
    assert {"O91.03", "O91.13", "O91.23", "O92.03", "O92.13", "O92.70", "O92.79", "Z39.1"} <= lact


def test_delivery_procedures_icd10pcs_and_snomed() -> None:
    delivery = members("delivery")
    pcs = {c for s, c in delivery if s == PCS}
    expected = {"10D00Z0", "10D00Z1", "10D00Z2", "10E0XZZ"} | {f"10D07Z{i}" for i in range(3, 9)}
    assert pcs == expected
    with (SOURCES / "obstetric_delivery_procedures.csv").open(encoding="utf-8") as fh:
        rows = {(r["system"], r["code"]) for r in csv.DictReader(fh)}
    assert rows <= delivery
    # The parent "Delivery procedure" and its subtypes (caesarean, forceps, vacuum, breech).
    assert {
        (SCT, "236973005"),
        (SCT, "11466000"),
        (SCT, "302383004"),
        (SCT, "61586001"),
        (SCT, "417121007"),
    } <= delivery


def test_headers_take_the_class_their_codes_share() -> None:
    sets = {k: icd_codes(k) for k in CLASSES}

    def cls(code: str) -> str | None:
        return next((k for k in CLASSES if code in sets[k]), None)

    for code in chapter15():
        leaves = {cls(c) for c in icd().get_descendants(code) if icd().is_leaf(c)}
        if len(leaves) == 1:
            assert cls(code) == leaves.pop(), code
        elif leaves:
            assert cls(code) == "pregnancy_or_puerperium", code


def test_every_obstetric_concept_names_its_source() -> None:
    for vs_id in OBSTETRIC:
        data = json.loads((FOLDER / f"{vs_id}.json").read_text(encoding="utf-8"))
        for inc in data["compose"]["include"]:
            for c in inc["concept"]:
                src = next(e["valueString"] for e in c["extension"] if e["url"].endswith("source"))
                assert len(src) > 20, (vs_id, c["code"])
