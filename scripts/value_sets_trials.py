"""Value sets of the trials beyond NCT06038474 (docs/trials/*.md), called by build_value_sets.py.

Each trial's builders carry its prefix (``ln_``: NCT04221477, lupus nephritis; ``dublin3_``:
NCT02504489, NSCLC). Every code is
read from a published source recorded per row in scripts/value_set_sources/<prefix>_*.csv, whose
source keys <prefix>_sources.csv resolves (repository@commit:path, title, OID, version), the
same way build_value_sets.read_published does for sources.csv. Nothing here needs the network.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import build_value_sets as b
import build_value_sets as base

SOURCES_DIR = Path(__file__).resolve().parent / "value_set_sources"


def build(ref: Path, product_map: dict[str, dict], meds: dict[str, Any]) -> list[base.VS]:
    """Every trial value set. May extend ``product_map`` / ``meds`` (the concept maps written
    after it) with products and packages its medication value sets add."""
    return [*ln_build(product_map, meds), *dublin3_value_sets(product_map, meds)]


# --------------------------------------------------------------------------- NCT04221477 (ln_)


def ln_csv(name: str) -> list[dict[str, str]]:
    with (SOURCES_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def ln_labels() -> dict[str, str]:
    """Source key -> compact label, as build_value_sets._source_labels writes them."""
    labels = {}
    for r in ln_csv("ln_sources.csv"):
        oid = f" {r['oid']}" if r["oid"] else ""
        version = f" v{r['version']}" if r["version"] else ""
        kind = "VSAC" if r["source"].startswith("vsac:") else r["title"]
        labels[r["source"]] = f"{kind}{oid}{version} {r['location']}"
    return labels


LN_SETS: dict[str, tuple[str, str]] = {
    "egfr": (
        "Estimated glomerular filtration rate",
        "LOINC eGFR tests (creatinine, cystatin C and combined formulas: MDRD, CKD-EPI, CKD-EPI "
        "2021), the whole expansion of VSAC 'Estimated Glomerular Filtration Rate' "
        "2.16.840.1.113883.3.6929.3.1000 v20190531 (expansion 2025-01-10). Results are read in "
        "mL/min/{1.73_m2}. Left out: 33914-3 (deprecated LOINC term, not in the expansion).",
    ),
    "urine_protein_creatinine_24h": (
        "Urine protein/creatinine ratio, 24-hour collection",
        "LOINC protein/creatinine ratio tests on a 24-hour urine collection (13801-6, 40486-3), "
        "from VSAC 'Urine Protein Tests' 2.16.840.1.113883.3.464.1003.109.12.1024 v20170504.",
    ),
    "urine_protein_creatinine_other": (
        "Urine protein/creatinine ratio, spot or other collection",
        "LOINC protein/creatinine ratio tests on a spot (random), unspecified or 12-hour urine "
        "(2890-2, 34366-5, 60678-0), from VSAC 'Urine Protein Tests' "
        "2.16.840.1.113883.3.464.1003.109.12.1024 v20170504. Albumin ratios, dipsticks and "
        "protein excretion per time are left out (not a protein/creatinine ratio).",
    ),
    "kidney_transplant": (
        "Kidney transplant (status or procedure)",
        "ICD-10-CM Z94.0 Kidney transplant status (VSAC 'Kidney Transplant Recipient' "
        "2.16.840.1.113883.3.464.1003.109.12.1029 v20240112) and kidney transplant procedures "
        "(SNOMED CT, ICD-10-PCS, CPT, HCPCS) of VSAC 'Kidney Transplant' "
        "2.16.840.1.113883.3.464.1003.109.12.1012 v20190315. Left out: 313030004 Donor renal "
        "transplantation (the donor's procedure), 175899003 / CPT 50380 autotransplantation "
        "(the patient's own kidney re-implanted; no kidney failure implied).",
    ),
    "kidney_biopsy": (
        "Kidney biopsy",
        "Kidney biopsy procedures: CPT 50200 (percutaneous) and 50205 (by surgical exposure), "
        "SNOMED CT 48426002 Fine needle biopsy of kidney, 708940003 Image-guided percutaneous "
        "biopsy of kidney (one source: confirmed partial). No VSAC kidney biopsy value set was "
        "found; sources per concept.",
    ),
    "ckd_stage_4_5": (
        "Chronic kidney disease stage 4 or 5",
        "VSAC 'Chronic Kidney Disease, Stage 5' 2.16.840.1.113883.3.526.3.1002 v20200307 "
        "(SNOMED CT 433146000, ICD-10-CM N18.5) and ICD-10-CM N18.4 (CMS tabular list). "
        "End-stage renal disease (N18.6) is kidney_failure_dialysis.",
    ),
    "kidney_failure_dialysis": (
        "End-stage kidney disease or dependence on dialysis",
        "VSAC 'End Stage Renal Disease' 2.16.840.1.113883.3.526.3.353 v20200307, ICD-10-CM Z99.2 "
        "Dependence on renal dialysis (CMS tabular list), SNOMED CT 428982002 Dependence on "
        "hemodialysis due to end stage renal disease (HL7 IPS SNOMED CT free set). Dialysis "
        "procedures are the value set dialysis_procedures.",
    ),
    "chronic_infection": (
        "Chronic infection (HIV, chronic hepatitis B or C, active tuberculosis)",
        "The infections of serious_comorbidity, as their own set: VSAC HIV "
        "2.16.840.1.113883.3.464.1003.120.12.1003, Tuberculosis for Urology Care "
        "2.16.840.1.113762.1.4.1248.351, the chronic hepatitis B / C concepts of VSAC Chronic "
        "Liver Disease / Liver Disease / Hepatitis B (no cirrhosis), the same concepts of the "
        "HL7 IPS SNOMED CT free set, and ICD-10-CM B20, Z21, A15-A19, B18.0-B18.2 with all "
        "descendants (CMS tabular list). Acute infections are not listed (too broad to read).",
    ),
    "anti_cd20": (
        "Anti-CD20 monoclonal antibodies",
        "RxNorm IN / PIN and every SCD / SBD of rituximab (incl. rituximab-abbs, -pvvr, -arrx "
        "and rituximab / hyaluronidase), obinutuzumab, ocrelizumab (incl. ocrelizumab-ocsq), "
        "ofatumumab and ublituximab (ublituximab-xiiy), with their RxNorm NDC packages "
        "(RxNorm Current Prescribable Content 10/06/2025, github:davidanderson3/"
        "rxnorm-ingredients@a8fcf13a67). CD20 x CD3 bispecific antibodies are not listed.",
    ),
    "cyclophosphamide": (
        "Cyclophosphamide",
        "RxNorm IN and every SCD / SBD of cyclophosphamide with their RxNorm NDC packages "
        "(RxNorm Current Prescribable Content 10/06/2025), the FDA NDC directory packages of "
        "ndc-rxnorm.json and the SNOMED CT substance of snomed-rxnorm-ingredient.json.",
    ),
    "calcineurin_inhibitors": (
        "Calcineurin inhibitors",
        "RxNorm IN and every SCD / SBD of tacrolimus, cyclosporine (ciclosporin) and "
        "voclosporin with their RxNorm NDC packages (RxNorm Current Prescribable Content "
        "10/06/2025) and the FDA NDC directory packages of ndc-rxnorm.json. Every dose form is a "
        "member (topical tacrolimus, ciclosporin eye drops): systemic use is decided at run time "
        "by route and dose form.",
    ),
}
# Published-expansion rows whose CSV source key is a VSAC set the base sources.csv resolves.
LN_FROM_BASE: dict[str, tuple[tuple[str, Any], ...]] = {
    "kidney_failure_dialysis": (
        ("vsac_esrd.csv", None),
        ("ips_serious_comorbidity.csv", lambda d: "dialysis" in d.lower()),
    ),
    "chronic_infection": (
        ("vsac_hiv.csv", None),
        ("vsac_tuberculosis.csv", None),
        ("vsac_cirrhosis_chronic_hepatitis.csv", lambda d: "hepatitis" in d.lower()),
        (
            "ips_serious_comorbidity.csv",
            lambda d: any(w in d.lower() for w in ("tubercul", "hepatitis", "immunodeficiency")),
        ),
    ),
}
LN_ICD_WITH_DESCENDANTS: dict[str, tuple[str, ...]] = {
    "chronic_infection": ("A15", "A17", "A18", "A19", "B18.0", "B18.1", "B18.2"),
}
LN_ICD_CODES: dict[str, tuple[str, ...]] = {
    "chronic_infection": ("B20", "Z21"),
    "kidney_failure_dialysis": ("Z99.2",),
    "ckd_stage_4_5": ("N18.4",),
}
# One source only for these codes (docs/value_sets.md): kept, marked partial.
LN_PARTIAL = {("http://snomed.info/sct", "708940003")}
# The medication value sets (agents resolve product -> ingredient -> moiety, terminology/core).
LN_MED_SETS = ("anti_cd20", "cyclophosphamide", "calcineurin_inhibitors")


def ln_build(product_map: dict[str, dict], meds: dict[str, Any]) -> list[base.VS]:
    sets = {vs_id: base.VS(vs_id, title, desc) for vs_id, (title, desc) in LN_SETS.items()}
    labels = ln_labels()
    for r in ln_csv("ln_published.csv"):
        key = (r["system"], r["code"])
        conf = "partial" if key in LN_PARTIAL else "yes"
        note = "code and display read in one public source only" if conf == "partial" else None
        sets[r["value_set"]].add(
            r["system"], r["code"], r["display"], labels[r["source"]], conf, note
        )
    for vs_id, files in LN_FROM_BASE.items():
        for name, keep in files:
            for system, code, display, src in base.read_published(name):
                if keep is None or keep(display):
                    sets[vs_id].add(system, code, display, src)
    for vs_id, codes in LN_ICD_WITH_DESCENDANTS.items():
        for code in codes:
            if base.icd.is_valid_item(code):
                base.add_icd_with_descendants(sets[vs_id], code, base.ICD_PKG)
    for vs_id, codes in LN_ICD_CODES.items():
        for code in codes:
            sets[vs_id].add(base.ICD10, code, base.icd_desc(code), base.ICD_PKG)
    ln_medications(sets, product_map, meds, labels)
    return list(sets.values())


def ln_medications(
    sets: dict[str, base.VS],
    product_map: dict[str, dict],
    meds: dict[str, Any],
    labels: dict[str, str],
) -> None:
    """Ingredients, products and NDC packages of the medication value sets.

    New products join ``product_map`` (so rxnorm-product-ingredient.json maps them), PINs the
    moiety map (``meds['extra_moiety_rows']``), NDC packages ``meds['ndc_map']``. Products the
    reference map already holds keep their entry; the set takes every product of its agents.
    """
    rows = ln_csv("ln_rxnorm_agents.csv")
    ing_name: dict[str, str] = meds["ing_name"]
    ingredient_of: dict[str, str] = {}  # agent name -> IN RxCUI
    vs_of_agent: dict[str, str] = {}
    for r in rows:
        vs_of_agent[r["ingredient"]] = r["value_set"]
        if r["tty"] == "IN":
            ingredient_of[r["ingredient"]] = r["rxcui"]
    moiety_rows: list[tuple[str, str, str, str, str, str]] = meds.setdefault(
        "extra_moiety_rows", []
    )
    for r in rows:
        vs = sets[r["value_set"]]
        src = labels[r["source"]]
        agent_in = ingredient_of[r["ingredient"]]
        if r["tty"] in ("IN", "PIN"):
            vs.add(base.RXNORM, r["rxcui"], r["name"], f"{src} (TTY={r['tty']})")
            ing_name.setdefault(r["rxcui"], r["name"])
            if r["tty"] == "PIN" and r["rxcui"] not in meds["pins"]:
                pin_src = f"{src}: PIN {r['name']} of IN {r['ingredient']}"
                moiety_rows.append(
                    (r["rxcui"], r["name"], agent_in, r["ingredient"], "wider", pin_src)
                )
            continue
        if r["tty"] == "NDC":
            continue  # below, once products are in the map
        p = product_map.setdefault(
            r["rxcui"], {"name": r["name"], "tty": r["tty"], "ingredients": [], "source": src}
        )
        if agent_in not in p["ingredients"]:
            p["ingredients"].append(agent_in)
        vs.add(base.RXNORM, r["rxcui"], p["name"], f"{src} (TTY={r['tty']})")
    # Every product the maps hold for these agents (reference rows included) is a member.
    set_of_ingredient = {ingredient_of[a]: vs_of_agent[a] for a in ingredient_of}
    for code, p in product_map.items():
        for ing in p["ingredients"]:
            if ing in set_of_ingredient:
                tty = p["tty"] if p["tty"] and "not given" not in p["tty"] else "product"
                sets[set_of_ingredient[ing]].add(
                    base.RXNORM, code, p["name"], f"{p['source']} (TTY={tty})"
                )
    ndc_map: dict[str, dict] = meds["ndc_map"]
    for r in rows:
        if r["tty"] != "NDC":
            continue
        ndc11 = base.normalize_ndc(r["ndc11"])
        if ndc11 != r["ndc11"]:
            raise SystemExit(f"NDC {r['ndc11']}: not an 11-digit package code")
        src = f"{labels[r['source']]} (RxNorm NDC attribute of {r['rxcui']})"
        entry = ndc_map.setdefault(ndc11, {"published": r["ndc11"], "targets": []})
        if not any(t[0] == r["rxcui"] for t in entry["targets"]):
            entry["targets"].append((r["rxcui"], product_map[r["rxcui"]]["name"], src))
    for ndc11, entry in ndc_map.items():
        for rxcui, name, src in entry["targets"]:
            for ing in product_map[rxcui]["ingredients"]:
                if ing in set_of_ingredient:
                    sets[set_of_ingredient[ing]].add(
                        base.NDC,
                        ndc11,
                        f"NDC {entry['published']}: {name}",
                        f"{src} (NDC package, published as {entry['published']})",
                    )
    for sct_code, display, ing, src in meds["snomed_map"]:
        if ing in set_of_ingredient:
            sets[set_of_ingredient[ing]].add(
                base.SCT,
                sct_code,
                display,
                f"{src} (SNOMED CT substance; RxNorm IN {ing} of the same name)",
            )
    for vs_id in LN_MED_SETS:
        assert sets[vs_id].concepts, vs_id


# --------------------------------------------------------------------------- NCT02504489 (dublin3_)

SRC = b.SOURCES_DIR


def _rows(name: str) -> list[dict[str, str]]:
    with (SRC / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- NCT02504489

DUBLIN3 = "NCT02504489 (DUBLIN-3)"
# Lab test codes as PySynthea's modules write them (code and display read in the module files;
# the module named is one of those that use the code).
DUBLIN3_LABS: dict[str, tuple[str, str, tuple[tuple[str, str, str], ...]]] = {
    "lab_hemoglobin": (
        "Hemoglobin in blood",
        "g/dL",
        (("718-7", "Hemoglobin [Mass/volume] in Blood", "anemia/anemia_sub.json"),),
    ),
    "lab_neutrophils": (
        "Neutrophils (absolute count) in blood",
        "10*3/uL",
        (
            (
                "751-8",
                "Neutrophils [#/volume] in Blood by Automated count",
                "acute_myeloid_leukemia.json",
            ),
        ),
    ),
    "lab_platelets": (
        "Platelets (count) in blood",
        "10*3/uL",
        (
            ("777-3", "Platelets [#/volume] in Blood by Automated count", "anemia/anemia_sub.json"),
            ("26515-7", "Platelet Count", "gallstones.json"),
        ),
    ),
    "lab_bilirubin_total": (
        "Total bilirubin in serum or plasma",
        "mg/dL",
        (("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "cirrhosis.json"),),
    ),
    "lab_ast": (
        "Aspartate aminotransferase (AST) in serum or plasma",
        "U/L",
        (
            (
                "1920-8",
                "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
                "cirrhosis.json",
            ),
        ),
    ),
    "lab_alt": (
        "Alanine aminotransferase (ALT) in serum or plasma",
        "U/L",
        (
            (
                "1742-6",
                "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
                "cirrhosis.json",
            ),
        ),
    ),
    "bp_systolic": (
        "Systolic blood pressure",
        "mm[Hg]",
        (("8480-6", "Systolic Blood Pressure", "congestive_heart_failure.json"),),
    ),
    "bp_diastolic": (
        "Diastolic blood pressure",
        "mm[Hg]",
        (("8462-4", "Diastolic Blood Pressure", "congestive_heart_failure.json"),),
    ),
    "lab_creatinine": (
        "Creatinine in serum, plasma or blood",
        "mg/dL",
        (
            (
                "2160-0",
                "Creatinine [Mass/volume] in Serum or Plasma",
                "encounter/hospital_basic_labs.json",
            ),
            ("38483-4", "Creatinine [Mass/volume] in Blood", "colorectal_cancer.json"),
        ),
    ),
}

SRC_ECOG_Q = b._fs(
    "89247-1",
    "ids 12308099162, 47323807662, 27843994417",
    "FHIR IG profiles 'code = LNC#89247-1 \"ECOG Performance Status score\"'",
)
SRC_ECOG_SCT_Q = b._fs(
    "423740007",
    "id 11983288672",
    "'SCT#423740007 \"Eastern Cooperative Oncology Group performance status (observable "
    "entity)\"' beside LNC#89247-1",
)
SRC_ECOG_LL = b._fs(
    "LA9622-7",
    "id 59676946274",
    "MII Onkologie value set 'Enumerierte Fassung der LOINC-Answer-List LL529-9' with the LOINC "
    "answer displays",
)
SRC_ECOG_SCT = b._fs(
    "425389002",
    "id 59655237562",
    "MII oBDS answer-list mappings: ECOG 0..4 -> LOINC LA9622-7..LA9626-8 and SNOMED CT "
    "425389002, 422512005, 422894000, 423053003, 423237006 (equivalent)",
)
# (grade, LOINC answer, LOINC display, SNOMED CT grade code or None)
ECOG_ANSWERS = (
    (
        0,
        "LA9622-7",
        "Fully active, able to carry on all pre-disease performance without restriction",
        "425389002",
    ),
    (
        1,
        "LA9623-5",
        "Restricted in physically strenuous activity but ambulatory and able to carry out work "
        "of a light or sedentary nature, e.g., light house work, office work",
        "422512005",
    ),
    (
        2,
        "LA9624-3",
        "Ambulatory and capable of all selfcare but unable to carry out any work activities. Up "
        "and about more than 50% of waking hours",
        "422894000",
    ),
    (
        3,
        "LA9625-0",
        "Capable of only limited selfcare, confined to bed or chair more than 50% of waking hours",
        "423053003",
    ),
    (
        4,
        "LA9626-8",
        "Completely disabled. Cannot carry on any selfcare. Totally confined to bed or chair",
        "423237006",
    ),
    (5, "LA9627-6", "Dead", None),
)

# NSCLC histologies (WHO: adenocarcinoma, squamous cell, large cell, adenosquamous, sarcomatoid
# carcinomas); a lung primary of another named histology is not NSCLC; a lung primary named by
# site only (or "carcinoma" without a type) has an unspecified histology.
NSCLC_WORDS = re.compile(
    r"non-small|nonsmall|adenocarcinoma|squamous|large cell|bronchiolo-?alveolar|"
    r"adenosquamous|giant cell carcinoma|pleomorphic carcinoma|spindle cell carcinoma|"
    r"sarcomatoid",
    re.IGNORECASE,
)
NOT_NSCLC_WORDS = re.compile(
    r"small cell|oat cell|carcinoid|neuroendocrine|kaposi|lymphoma|lymphomatoid|"
    r"hemangioendothelioma|melanoma|mesothelioma",
    re.IGNORECASE,
)
NOT_A_LUNG_PRIMARY = re.compile(r"syndrome", re.IGNORECASE)  # e.g. a Wilms tumour syndrome
LUNG_SITE = re.compile(r"\b(lung|bronch)", re.IGNORECASE)
SECONDARY = re.compile(r"metasta|secondary", re.IGNORECASE)

# WHO ATC names (fabkury/atcd) whose RxNorm ingredient is spelled differently (both read: ATC
# file row and RxNorm IN name in the prescribable-content file).
ATC_TO_RXNORM_NAME = {"tioguanine": "thioguanine", "chlormethine": "mechlorethamine"}
PLATINUM = ("cisplatin", "carboplatin", "oxaliplatin")  # ATC L01XA with an RxNorm IN
SRC_ATC = "github:fabkury/atcd@1e92aec7c5:WHO ATC-DDD 2026-04-25.csv"


def _dublin3_lung(vs_nsclc: b.VS, vs_unspec: b.VS, vs_other: b.VS) -> None:
    for system, code, display, src in b.read_published("vsac_malignancy.csv"):
        if system == b.ICD10:
            continue  # ICD-10-CM C34 has no histology axis: below, from the tabular list
        if not LUNG_SITE.search(display) or SECONDARY.search(display):
            continue
        if NOT_A_LUNG_PRIMARY.search(display):
            continue
        if NSCLC_WORDS.search(display):  # first: "small cell ... squamous cell carcinoma"
            vs_nsclc.add(system, code, display, src)
        elif NOT_NSCLC_WORDS.search(display):
            vs_other.add(system, code, display, src)
        else:
            vs_unspec.add(system, code, display, src)
    b.add_icd_with_descendants(
        vs_unspec, "C34", f"{b.ICD_PKG}: C34 Malignant neoplasm of bronchus and lung"
    )


def _dublin3_second_malignancy() -> b.VS:
    vs = b.VS(
        "malignancy_other_than_lung",
        "Malignant neoplasm other than a lung primary or its metastases",
        "Second malignancy for NCT02504489 (review: 'unless in remission for > 5 years'): the "
        "SNOMED CT and ICD-10-CM rows of VSAC Cancer 2.16.840.1.113883.3.526.2.1078 / .1079 and "
        "Malignant Neoplasms 2.16.840.1.113883.3.464.1003.1193 / .1194 (reviewed selection in "
        "vsac_malignancy.csv) and the CMS tabular list C00-C96 incl. C4A, C7A, C7B with all "
        "descendants, without: lung / bronchus primaries (C34 and SNOMED lung concepts), "
        "secondary and metastatic neoplasms (C77-C79 and SNOMED 'metastatic' / 'secondary' "
        "concepts: most are the lung cancer's own spread), neoplasms of unstated site (C80, "
        "SNOMED 363346000: may be the lung cancer itself), C44 and basal / squamous cell "
        "carcinoma of skin (non-melanoma skin cancer is not exclusionary in the trial text).",
    )
    # C80 / 363346000 name no site: they may be the lung cancer itself.
    skip_icd = ("C34", "C44", "C77", "C78", "C79", "C80")
    for system, code, display, src in b.read_published("vsac_malignancy.csv"):
        if system == b.ICD10 and code.startswith(skip_icd):
            continue
        if system == b.SCT and code == "363346000":
            continue
        if system != b.ICD10 and (LUNG_SITE.search(display) or SECONDARY.search(display)):
            continue
        vs.add(system, code, display, src)
    for cat in [f"C{n:02d}" for n in range(0, 97)] + list(b.ICD_MALIGNANT_ALNUM):
        if cat.startswith(skip_icd) or not b.icd.is_valid_item(cat):
            continue
        b.add_icd_with_descendants(vs, cat, f"{b.ICD_PKG}: malignant neoplasm category {cat}")
    return vs


def _dublin3_conditions() -> list[b.VS]:
    by_id: dict[str, b.VS] = {}

    def new(vs_id: str, title: str, desc: str) -> b.VS:
        by_id[vs_id] = b.VS(vs_id, title, desc)
        return by_id[vs_id]

    mi = new(
        "myocardial_infarction",
        "Myocardial infarction",
        "VSAC Initial Myocardial Infarction 2.16.840.1.113883.3.526.3.403 v20240125 (SNOMED CT, "
        "ICD-10-CM; cqframework/ecqm-content-qicore-2025) plus the CMS tabular list I21 and I22 "
        "with all descendants (acute and subsequent myocardial infarction).",
    )
    arr = new(
        "arrhythmia",
        "Cardiac arrhythmia",
        "VSAC Arrhythmia 2.16.840.1.113883.3.526.3.366 v20200306 (SNOMED CT, ICD-10-CM; "
        "cqframework/ecqm-content-qicore-2025).",
    )
    for r in _rows("dublin3_vsac.csv"):
        by_id["myocardial_infarction" if r["value_set"] == "mi" else "arrhythmia"].add(
            r["system"], r["code"], r["display"], r["source"]
        )
    for code in ("I21", "I22"):
        b.add_icd_with_descendants(mi, code, b.ICD_PKG)
    hf = new(
        "heart_failure",
        "Heart failure",
        "VSAC Heart Failure 2.16.840.1.113883.3.526.3.376 v20210218 (vsac_heart_failure.csv) and "
        "the CMS tabular list I50 with all descendants. NYHA class is not part of the code.",
    )
    b.add_published(hf, "vsac_heart_failure.csv")
    b.add_icd_with_descendants(hf, "I50", b.ICD_PKG)
    hiv = new(
        "hiv",
        "HIV infection",
        "VSAC HIV 2.16.840.1.113883.3.464.1003.120.12.1003 v20240106 (vsac_hiv.csv).",
    )
    b.add_published(hiv, "vsac_hiv.csv")
    hep = new(
        "viral_hepatitis",
        "Viral hepatitis A, B or C",
        "CMS tabular list B15 (acute hepatitis A), B16 (acute hepatitis B), B17.1 (acute "
        "hepatitis C), B18.0-B18.2 (chronic viral hepatitis B / C) with all descendants; the "
        "SNOMED CT chronic hepatitis B / C rows of vsac_cirrhosis_chronic_hepatitis.csv (VSAC "
        "Chronic Liver Disease, Liver Disease, Hepatitis B). Left out: B17.2 hepatitis E, B18.8 "
        "/ B18.9 / B19 hepatitis of unstated type.",
    )
    for code in ("B15", "B16", "B17.1", "B18.0", "B18.1", "B18.2"):
        b.add_icd_with_descendants(hep, code, b.ICD_PKG)
    for system, code, display, src in b.read_published("vsac_cirrhosis_chronic_hepatitis.csv"):
        if system == b.SCT and re.search(r"hepatitis (b|c)\b|type b|type c", display, re.I):
            hep.add(system, code, display, src)
    stroke = new(
        "stroke_tia",
        "Stroke or transient ischaemic attack",
        "CMS tabular list with all descendants: I60 (subarachnoid haemorrhage), I61 "
        "(intracerebral haemorrhage), I63 (cerebral infarction), G45.0-G45.2, G45.8, G45.9 "
        "(transient cerebral ischaemic attacks). Left out: G45.3 amaurosis fugax, G45.4 "
        "transient global amnesia; sequelae (I69). SNOMED CT: no published stroke expansion "
        "was read.",
    )
    for code in ("I60", "I61", "I63", "G45.0", "G45.1", "G45.2", "G45.8", "G45.9"):
        b.add_icd_with_descendants(stroke, code, b.ICD_PKG)
    gi = new(
        "ibd_or_ileus",
        "Inflammatory bowel disease or ileus",
        "CMS tabular list with all descendants: K50 (Crohn's disease), K51 (ulcerative "
        "colitis), K56 (paralytic ileus and intestinal obstruction without hernia). SNOMED CT: "
        "no published expansion was read.",
    )
    for code in ("K50", "K51", "K56"):
        b.add_icd_with_descendants(gi, code, b.ICD_PKG)
    pud = new(
        "peptic_ulcer",
        "Peptic ulcer disease",
        "CMS tabular list K25-K28 (gastric, duodenal, peptic, gastrojejunal ulcer) with all "
        "descendants.",
    )
    for code in ("K25", "K26", "K27", "K28"):
        b.add_icd_with_descendants(pud, code, b.ICD_PKG)
    gilbert = new(
        "gilbert_syndrome",
        "Gilbert syndrome",
        "CMS tabular list E80.4 Gilbert syndrome. SNOMED CT: no published expansion was read.",
    )
    b.add_icd_with_descendants(gilbert, "E80.4", b.ICD_PKG)
    return [mi, arr, hf, hiv, hep, stroke, gi, pud, gilbert]


def _dublin3_medications(product_map: dict, meds: dict) -> list[b.VS]:
    """docetaxel, platinum_agents, antineoplastic_agents, antineoplastic_dual_use."""
    # atc_other: the ingredient's ATC codes outside L01 (2026 file): a non-cancer use exists.
    ingredients = _rows("dublin3_l01_ingredients.csv")
    dual = {r["rxcui"] for r in ingredients if r["atc_other"]}
    sets = {
        "docetaxel": b.VS(
            "docetaxel",
            "Docetaxel",
            "RxNorm IN docetaxel and every SCD/SBD of it, with their NDC packages "
            f"({b.SRC_RXNORM_PC}). NCT02504489: prior docetaxel excludes.",
        ),
        "platinum_agents": b.VS(
            "platinum_agents",
            "Platinum compounds",
            "RxNorm IN and SCD/SBD (with NDC packages) of the WHO ATC L01XA platinum compounds "
            f"that RxNorm prescribable content holds: cisplatin, carboplatin, oxaliplatin "
            f"({b.SRC_RXNORM_PC}; ATC {SRC_ATC}).",
        ),
        "antineoplastic_agents": b.VS(
            "antineoplastic_agents",
            "Antineoplastic agents (WHO ATC L01) used only against cancer",
            "Every WHO ATC L01 substance (antineoplastic agents: chemotherapy, kinase inhibitors, "
            f"monoclonal antibodies incl. PD-1 / PD-L1 inhibitors, ...; {SRC_ATC}) whose name is "
            f"an RxNorm ingredient in {b.SRC_RXNORM_PC}, with every SCD/SBD/GPCK/BPCK and NDC "
            "package; ATC names spelled differently in RxNorm: tioguanine = thioguanine, "
            "chlormethine = mechlorethamine. Ingredients that also hold an ATC code outside L01 "
            "are the separate set antineoplastic_dual_use. Gap: the stored copy of the source "
            "lacks its file of ingredients starting with 'A' (web/data/A.json): atezolizumab, "
            "afatinib, alectinib, adagrasib, amivantamab are added at ingredient level from a "
            "secondary registry (confirmed=partial); other A-agents (abemaciclib, acalabrutinib, "
            "avelumab, axitinib, ...) and their products are not covered.",
        ),
        "antineoplastic_dual_use": b.VS(
            "antineoplastic_dual_use",
            "Antineoplastic agents (WHO ATC L01) that also have non-cancer uses",
            "WHO ATC L01 substances that also hold an ATC code outside L01 (methotrexate L04AX03, "
            "everolimus, sirolimus, cladribine, ofatumumab, bevacizumab S01LA08, celecoxib, "
            "eflornithine, ruxolitinib, tretinoin; ATC file rows in "
            f"dublin3_l01_ingredients.csv), with their products ({b.SRC_RXNORM_PC}). A recent "
            "dose is a review, not an exclusion: it may not be anticancer therapy.",
        ),
    }
    for r in ingredients:
        ing, name = r["rxcui"], r["name"]
        target = ["antineoplastic_dual_use" if ing in dual else "antineoplastic_agents"]
        if name == "docetaxel":
            target.append("docetaxel")
        if name in PLATINUM:
            target.append("platinum_agents")
        conf = r.get("confirmed") or "yes"
        note = r.get("note") or None
        src = f"{r['source']} (TTY=IN); ATC {r['atc']} ({SRC_ATC})"
        meds["ing_name"].setdefault(ing, name)
        for vs_id in target:
            sets[vs_id].add(b.RXNORM, ing, name, src, conf, note)
        r["_targets"] = target  # type: ignore[assignment]
    targets_of = {r["rxcui"]: r["_targets"] for r in ingredients}
    for r in _rows("dublin3_l01_products.csv"):
        ing, prod = r["ingredient_rxcui"], r["product_rxcui"]
        p = product_map.setdefault(
            prod,
            {"name": r["product_name"], "tty": r["product_tty"], "ingredients": [], "source": ""},
        )
        if not p["source"]:
            p["source"] = r["source"]
        if ing not in p["ingredients"]:
            p["ingredients"].append(ing)
        for vs_id in targets_of[ing]:
            sets[vs_id].add(
                b.RXNORM, prod, r["product_name"], f"{r['source']} (TTY={r['product_tty']})"
            )
        for ndc11 in r["ndcs"].split():
            entry = meds["ndc_map"].setdefault(ndc11, {"published": ndc11, "targets": []})
            if not any(t[0] == prod for t in entry["targets"]):
                entry["targets"].append((prod, r["product_name"], f"{r['source']} (SCD/SBD NDC)"))
            for vs_id in targets_of[ing]:
                sets[vs_id].add(
                    b.NDC,
                    ndc11,
                    f"NDC {ndc11}: {r['product_name']}",
                    f"{r['source']} (NDC package of RxCUI {prod})",
                )
    return list(sets.values())


def dublin3_value_sets(product_map: dict, meds: dict) -> list[b.VS]:
    nsclc = b.VS(
        "nsclc",
        "Non-small cell lung cancer",
        "Lung primaries of a non-small cell histology (adenocarcinoma, squamous cell, large cell, "
        "adenosquamous, sarcomatoid / pleomorphic / spindle / giant cell carcinoma, and concepts "
        "naming non-small cell lung cancer): the SNOMED CT lung concepts of VSAC Cancer "
        "2.16.840.1.113883.3.526.2.1079 and Malignant Neoplasms 2.16.840.1.113883.3.464.1003.1194 "
        "(vsac_malignancy.csv), sorted by the histology named in the display (scripts/"
        "value_sets_trials.py). Includes Synthea's 254637007 and 424132000.",
    )
    unspec = b.VS(
        "lung_cancer_unspecified",
        "Lung cancer of unspecified histology",
        "ICD-10-CM C34 with all descendants (CMS tabular list: ICD-10-CM has no histology axis) "
        "and the SNOMED CT lung primaries of the same VSAC sets named by site or as carcinoma "
        "without a type: NSCLC is then unknown (histology in the chart).",
    )
    other = b.VS(
        "lung_cancer_not_nsclc",
        "Lung cancer of a histology other than NSCLC",
        "SNOMED CT lung primaries of the same VSAC sets naming small cell / oat cell, carcinoid "
        "or neuroendocrine, sarcoma, lymphoma, blastoma, mesothelioma or melanoma: shown as "
        "evidence, never counted as NSCLC.",
    )
    _dublin3_lung(nsclc, unspec, other)
    sets = [nsclc, unspec, other, _dublin3_second_malignancy(), *_dublin3_conditions()]

    ecog_q = b.VS(
        "ecog_performance_status",
        "ECOG performance status (question)",
        "LOINC 89247-1 ECOG Performance Status score and SNOMED CT 423740007 (observable), as "
        "FHIR IGs code the ECOG Observation (mCODE, MII Onkologie, IDEA4RC).",
    )
    ecog_q.add(b.LOINC, "89247-1", "ECOG Performance Status score", SRC_ECOG_Q)
    ecog_q.add(
        b.SCT,
        "423740007",
        "Eastern Cooperative Oncology Group performance status (observable entity)",
        SRC_ECOG_SCT_Q,
    )
    low = b.VS(
        "ecog_0_to_2",
        "ECOG performance status 0, 1 or 2 (answers)",
        "LOINC answer list LL529-9 answers for grades 0-2 and the SNOMED CT ECOG grade "
        "findings mapped to them (MII Onkologie answer-list mappings).",
    )
    high = b.VS(
        "ecog_3_to_5",
        "ECOG performance status 3, 4 or 5 (answers)",
        "LOINC answer list LL529-9 answers for grades 3-5 and the SNOMED CT ECOG grade "
        "findings mapped to grades 3 and 4 (MII Onkologie answer-list mappings; no SNOMED "
        "grade 5 mapping was read).",
    )
    for grade, la, display, sct in ECOG_ANSWERS:
        vs = low if grade <= 2 else high
        vs.add(b.LOINC, la, display, SRC_ECOG_LL)
        if sct:
            vs.add(b.SCT, sct, f"ECOG performance status grade {grade}", SRC_ECOG_SCT)
    sets += [ecog_q, low, high]

    for vs_id, (title, unit, codes) in DUBLIN3_LABS.items():
        vs = b.VS(
            vs_id,
            title,
            f"LOINC codes PySynthea's modules write for this measurement (usual unit {unit}); "
            "other LOINC codes of the same test are not members (no published lab expansion "
            "was read): a site adds its own.",
        )
        for code, display, module in codes:
            vs.add(b.LOINC, code, display, b.SRC_PYSYNTHEA.format(module))
        sets.append(vs)
    sets += _dublin3_medications(product_map, meds)
    return sets
