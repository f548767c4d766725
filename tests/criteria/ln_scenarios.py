"""Scenario patients for NCT04221477 (REGENCY, lupus nephritis): docs/trials/NCT04221477.md.

Every patient is the eligible baseline (woman of 40, active class IV lupus nephritis, kidney
biopsy 30 days before S, 24-hour UPCR 2.5 g/g and eGFR 75 mL/min/1.73 m2 20 days before S, no
excluded therapy) with one change that moves one criterion to the answer its id names. The
expected answers are in tests/data/trials/NCT04221477/expected.csv, written from the
computable reading (docs/trials/NCT04221477.md), not from running the tool.

Codes come from the bundled value sets (their sources are recorded there); dates are day offsets
from S, the calendar-month edges computed from S as the reading defines them.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir_cohort.synth import codes as C
from fhir_cohort.synth import fhirbuild as B
from fhir_cohort.synth.codes import Code

AS_OF = date(2026, 11, 24)
CPT = "http://www.ama-assn.org/go/cpt"
NDC = "http://hl7.org/fhir/sid/ndc"

# value_sets/kidney_biopsy.json, urine_protein_creatinine_*.json, egfr.json,
# kidney_transplant.json, ckd_stage_4_5.json
KIDNEY_BIOPSY = Code(CPT, "50200", "Renal biopsy; percutaneous, by trocar or needle")
UPCR_24H = Code(C.LOINC, "13801-6", "Protein/Creatinine [Mass Ratio] in 24 hour Urine")
UPCR_SPOT = Code(C.LOINC, "2890-2", "Protein/Creatinine [Mass Ratio] in Urine")
EGFR = Code(
    C.LOINC,
    "62238-1",
    "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or "
    "Blood by Creatinine-based formula (CKD-EPI)",
)
KIDNEY_TRANSPLANT_STATUS = Code(C.ICD10, "Z94.0", "Kidney transplant status")
CKD_4 = Code(C.ICD10, "N18.4", "Chronic kidney disease, stage 4 (severe)")
# value_sets/anti_cd20.json, cyclophosphamide.json, calcineurin_inhibitors.json
OBINUTUZUMAB_NDC = Code(NDC, "50242007001", "Gazyva 1000 MG/40ML injection")
UBLITUXIMAB_PIN = Code(C.RXNORM, "2626348", "ublituximab-xiiy")
CYCLOPHOSPHAMIDE_INJ = Code(C.RXNORM, "1734917", "cyclophosphamide 500 MG Injection")
TACROLIMUS_CAPSULE = Code(C.RXNORM, "198377", "tacrolimus 1 MG Oral Capsule")
TACROLIMUS_OINTMENT = Code(C.RXNORM, "284520", "tacrolimus 0.001 MG/MG Topical Ointment [Protopic]")
CYCLOSPORINE_EYE = Code(
    C.RXNORM, "402092", "cyclosporine 0.5 MG/ML Ophthalmic Suspension [Restasis]"
)
# A class named only in the record's display (spec v1.1 E1 reading, reused for I2).
LN_CLASS_IV_TEXT = Code(C.SNOMED, "68815009", "Lupus nephritis, ISN/RPS class IV-G (A)")

EGFR_UNIT = "mL/min/{1.73_m2}"


def months_before(d: date, months: int) -> date:
    """``d`` moved back by calendar months (day clamped to the month's end)."""
    y, m = divmod(d.year * 12 + d.month - 1 - months, 12)
    m += 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def offset(d: date) -> int:
    return (d - AS_OF).days


M9 = offset(months_before(AS_OF, 9))  # first day of the anti-CD20 window
M6 = offset(months_before(AS_OF, 6))  # first day of the biopsy window
M2 = offset(months_before(AS_OF, 2))  # first day of the cyclophosphamide / CNI window


def _birth(years: int, plus_days: int = 0) -> str:
    return (B.years_before(AS_OF, years) + timedelta(days=plus_days)).isoformat()


Builder = Callable[[B.Ctx], list[dict[str, Any]]]


def patient(
    pid: str,
    *,
    gender: str = "female",
    birth: str | None = "default",
    ln: list[Callable[[B.Ctx], dict[str, Any]]] | None = None,
    biopsy_at: int | None = -30,
    upcr: list[tuple[Code, float, str, int]] | None = None,
    egfr: list[tuple[float, str, int]] | None = None,
    extra: Builder | None = None,
) -> list[dict[str, Any]]:
    """The baseline patient with the given parts replaced."""
    ctx = B.Ctx(pid, AS_OF)
    out: list[dict[str, Any]] = [
        B.patient(ctx, gender=gender, birth_date=_birth(40) if birth == "default" else birth)
    ]
    if ln is None:
        out.append(B.condition(ctx, C.LN_CLASS_IV, onset=-400))
    else:
        out += [make(ctx) for make in ln]
    if biopsy_at is not None:
        out.append(B.procedure(ctx, KIDNEY_BIOPSY, at=biopsy_at))
    for code, value, unit, at in [(UPCR_24H, 2.5, "g/g", -20)] if upcr is None else upcr:
        out.append(B.observation(ctx, code, at=at, quantity=(value, unit)))
    for value, unit, at in [(75.0, EGFR_UNIT, -20)] if egfr is None else egfr:
        out.append(B.observation(ctx, EGFR, at=at, quantity=(value, unit)))
    if extra is not None:
        out += extra(ctx)
    return out


def _cond(code: Code, **kw: Any) -> Callable[[B.Ctx], dict[str, Any]]:
    return lambda ctx: B.condition(ctx, code, **kw)


def scenarios() -> dict[str, list[dict[str, Any]]]:
    """Patient id -> resources. Ids name the criterion and the case."""
    s: dict[str, list[dict[str, Any]]] = {}

    def add(pid: str, **kw: Any) -> None:
        s[pid] = patient(pid, **kw)

    add("ln-base")
    add("ln-male", gender="male")
    # I1 age: 18 to 75 inclusive, completed years at S.
    add("ln-age-17", birth=_birth(18, plus_days=1))
    add("ln-age-18", birth=_birth(18))
    add("ln-age-75", birth=_birth(76, plus_days=1))
    add("ln-age-76", birth=_birth(76))
    add("ln-age-no-birthdate", birth=None)
    # I2 biopsy-proven active class III / IV.
    add("ln-bx-no-ln", ln=[_cond(C.SLE, onset=-400)])
    add("ln-bx-no-biopsy", biopsy_at=None)
    add("ln-bx-biopsy-before-window", biopsy_at=M6 - 1)
    add("ln-bx-biopsy-window-edge", biopsy_at=M6)
    add("ln-bx-class-ii", ln=[_cond(C.LN_CLASS_II, onset=-400)])
    add("ln-bx-class-unstated", ln=[_cond(C.LN, onset=-400)])
    add("ln-bx-class-in-display", ln=[_cond(LN_CLASS_IV_TEXT, onset=-400)])
    add(
        "ln-bx-resolved",
        ln=[_cond(C.LN_CLASS_IV, onset=-800, clinical="resolved", abatement=-400)],
    )
    add("ln-bx-provisional", ln=[_cond(C.LN_CLASS_IV, onset=-400, verification="provisional")])
    # I3 proteinuria: latest 24-hour UPCR in [S-90, S] >= 1 g/g.
    add("ln-upcr-none", upcr=[])
    add("ln-upcr-low", upcr=[(UPCR_24H, 0.8, "g/g", -20)])
    add("ln-upcr-exactly-1", upcr=[(UPCR_24H, 1.0, "g/g", -20)])
    add("ln-upcr-999-mg-per-g", upcr=[(UPCR_24H, 999.0, "mg/g", -20)])
    add("ln-upcr-1000-mg-per-g", upcr=[(UPCR_24H, 1000.0, "mg/g", -20)])
    add("ln-upcr-mg-per-mg", upcr=[(UPCR_24H, 1.2, "mg/mg", -20)])
    add("ln-upcr-mg-per-mmol", upcr=[(UPCR_24H, 150.0, "mg/mmol", -20)])
    add("ln-upcr-spot-only-high", upcr=[(UPCR_SPOT, 1.5, "g/g", -10)])
    add("ln-upcr-spot-only-low", upcr=[(UPCR_SPOT, 0.3, "g/g", -10)])
    add(
        "ln-upcr-24h-low-spot-high",
        upcr=[(UPCR_24H, 0.8, "g/g", -40), (UPCR_SPOT, 1.6, "g/g", -10)],
    )
    add(
        "ln-upcr-24h-low-spot-low",
        upcr=[(UPCR_24H, 0.8, "g/g", -40), (UPCR_SPOT, 0.6, "g/g", -10)],
    )
    add("ln-upcr-before-window", upcr=[(UPCR_24H, 2.5, "g/g", -91)])
    add("ln-upcr-window-edge", upcr=[(UPCR_24H, 2.5, "g/g", -90)])
    add(
        "ln-upcr-latest-decides-low",
        upcr=[(UPCR_24H, 2.0, "g/g", -60), (UPCR_24H, 0.5, "g/g", -10)],
    )
    add(
        "ln-upcr-latest-decides-high",
        upcr=[(UPCR_24H, 0.5, "g/g", -60), (UPCR_24H, 2.0, "g/g", -10)],
    )
    # E1 pregnancy or breastfeeding (the shared spec's E3).
    add("ln-preg-pregnant", extra=lambda ctx: [B.condition(ctx, C.PREGNANCY, onset=-60)])
    add("ln-preg-lactating", extra=lambda ctx: [B.condition(ctx, C.LACTATION, onset=-60)])
    add("ln-preg-delivery", extra=lambda ctx: [B.procedure(ctx, C.CESAREAN, at=-200)])
    # E2 severe renal impairment, dialysis, transplantation.
    add("ln-renal-egfr-29.9", egfr=[(29.9, EGFR_UNIT, -20)])
    add("ln-renal-egfr-30", egfr=[(30.0, EGFR_UNIT, -20)])
    add("ln-renal-egfr-none", egfr=[])
    add("ln-renal-egfr-0.5-ml-per-s", egfr=[(0.5, "mL/s/{1.73_m2}", -20)])
    add("ln-renal-egfr-0.49-ml-per-s", egfr=[(0.49, "mL/s/{1.73_m2}", -20)])
    add("ln-renal-egfr-wrong-unit", egfr=[(45.0, "mg/dL", -20)])
    add("ln-renal-egfr-before-window", egfr=[(25.0, EGFR_UNIT, -91)])
    add("ln-renal-egfr-latest-ok", egfr=[(25.0, EGFR_UNIT, -60), (45.0, EGFR_UNIT, -5)])
    add("ln-renal-egfr-latest-low", egfr=[(45.0, EGFR_UNIT, -60), (25.0, EGFR_UNIT, -5)])
    add("ln-renal-eskd", extra=lambda ctx: [B.condition(ctx, C.ESKD, onset=-400)])
    add(
        "ln-renal-dialysis-dependence",
        extra=lambda ctx: [B.condition(ctx, C.DIALYSIS_DEPENDENCE_Z992, onset=-400)],
    )
    add("ln-renal-dialysis-30d", extra=lambda ctx: [B.procedure(ctx, C.HEMODIALYSIS, at=-30)])
    add("ln-renal-dialysis-91d", extra=lambda ctx: [B.procedure(ctx, C.HEMODIALYSIS, at=-91)])
    add(
        "ln-renal-transplant",
        extra=lambda ctx: [B.condition(ctx, KIDNEY_TRANSPLANT_STATUS, onset=-1000)],
    )
    add(
        "ln-renal-ckd4",
        egfr=[(35.0, EGFR_UNIT, -20)],
        extra=lambda ctx: [B.condition(ctx, CKD_4, onset=-300)],
    )
    # E3 anti-CD20 in [S - 9 months, S].
    add(
        "ln-cd20-rituximab-inside",
        extra=lambda ctx: B.administration(ctx, C.RITUXIMAB_SCD, at=M9 + 1),
    )
    add(
        "ln-cd20-rituximab-window-edge",
        extra=lambda ctx: B.administration(ctx, C.RITUXIMAB_SCD, at=M9),
    )
    add(
        "ln-cd20-rituximab-before-window",
        extra=lambda ctx: B.administration(ctx, C.RITUXIMAB_SCD, at=M9 - 1),
    )
    add(
        "ln-cd20-ocrevus-text",
        extra=lambda ctx: B.med_statement(
            ctx, None, text="OCREVUS 600 mg IV infusion", start=-100, end=-100
        ),
    )
    add(
        "ln-cd20-obinutuzumab-ndc",
        extra=lambda ctx: B.administration(ctx, OBINUTUZUMAB_NDC, at=-30),
    )
    add(
        "ln-cd20-ublituximab-pin",
        extra=lambda ctx: B.med_statement(ctx, UBLITUXIMAB_PIN, start=-50, end=-50),
    )
    add(
        "ln-cd20-unknown-duration",
        extra=lambda ctx: B.med_statement(ctx, C.RITUXIMAB_SCD, at=-300),
    )
    # E4 cyclophosphamide / calcineurin inhibitors in [S - 2 months, S], systemic only.
    add(
        "ln-cni-tacrolimus-inside",
        extra=lambda ctx: B.med_request(ctx, TACROLIMUS_CAPSULE, authored=-100, bounds=(-100, -50)),
    )
    add(
        "ln-cni-tacrolimus-ends-on-edge",
        extra=lambda ctx: B.med_request(ctx, TACROLIMUS_CAPSULE, authored=-150, bounds=(-150, M2)),
    )
    add(
        "ln-cni-tacrolimus-ends-before",
        extra=lambda ctx: B.med_request(
            ctx, TACROLIMUS_CAPSULE, authored=-150, bounds=(-150, M2 - 1)
        ),
    )
    add(
        "ln-cni-tacrolimus-ointment",
        extra=lambda ctx: B.med_request(ctx, TACROLIMUS_OINTMENT, authored=-10, bounds=(-10, 0)),
    )
    add(
        "ln-cni-ciclosporin-eye-drops",
        extra=lambda ctx: B.med_request(ctx, CYCLOSPORINE_EYE, authored=-10, bounds=(-10, 0)),
    )
    add(
        "ln-cni-ciclosporin-text",
        extra=lambda ctx: B.med_statement(
            ctx, None, text="Ciclosporin 100 mg capsule twice daily", start=-30, end=-1
        ),
    )
    add(
        "ln-cni-voclosporin-brand",
        extra=lambda ctx: B.med_statement(
            ctx, None, text="Lupkynis 7.9 mg capsule", start=-20, end=0
        ),
    )
    add(
        "ln-cni-tacrolimus-unknown-duration",
        extra=lambda ctx: B.med_statement(ctx, TACROLIMUS_CAPSULE, at=-100),
    )
    add(
        "ln-cni-cyclophosphamide",
        extra=lambda ctx: B.administration(ctx, CYCLOPHOSPHAMIDE_INJ, at=-30),
    )
    # E5 / E6: review only.
    add(
        "ln-disease-heart-failure",
        extra=lambda ctx: [B.condition(ctx, C.HEART_FAILURE, onset=-500)],
    )
    add("ln-infection-hiv", extra=lambda ctx: [B.condition(ctx, C.HIV_B20, onset=-500)])
    return s


def write_ndjson(folder: Path) -> Path:
    """Write every scenario resource as a Bulk Data style folder (one file per type)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resources in scenarios().values():
        for r in resources:
            by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, rows in sorted(by_type.items()):
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        (folder / f"{rtype}.000.ndjson").write_text(lines, encoding="utf-8")
    return folder
