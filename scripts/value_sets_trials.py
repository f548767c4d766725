"""Value sets of the trials beyond NCT06038474 (docs/trials/*.md), called by build_value_sets.py.

Each trial's builders carry its prefix (``ln_``: NCT04221477, lupus nephritis). Every code is
read from a published source recorded per row in scripts/value_set_sources/<prefix>_*.csv, whose
source keys <prefix>_sources.csv resolves (repository@commit:path, title, OID, version), the
same way build_value_sets.read_published does for sources.csv. Nothing here needs the network.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import build_value_sets as base

SOURCES_DIR = Path(__file__).resolve().parent / "value_set_sources"


def build(ref: Path, product_map: dict[str, dict], meds: dict[str, Any]) -> list[base.VS]:
    """Every trial value set. May extend ``product_map`` / ``meds`` (the concept maps written
    after it) with products and packages its medication value sets add."""
    return [*ln_build(product_map, meds)]


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
