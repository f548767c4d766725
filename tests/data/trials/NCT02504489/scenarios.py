"""Scenario patients for NCT02504489 (DUBLIN-3), built deterministically with the synth builders.

Every patient is the base patient (who meets every inclusion and no exclusion of the reading in
docs/trials/NCT02504489.md) with one change. ``expected.csv`` beside this file gives each
patient's answers as that reading derives them (written by hand from the reading, not from a
run of the tool); ``why`` says which rule decides.

Codes are members of the trial's value sets (test_trial_nct02504489.py checks every one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from fhir_cohort.synth import fhirbuild as fb
from fhir_cohort.synth.codes import ICD10, LOINC, RXNORM, SNOMED, Code

AS_OF = date(2026, 6, 30)
NDC = "http://hl7.org/fhir/sid/ndc"

# Conditions (value set in brackets)
NSCLC = Code(SNOMED, "254637007", "Non-small cell lung cancer")  # [nsclc]
LUNG_C3490 = Code(
    ICD10, "C34.90", "Malignant neoplasm of unspecified part of unspecified bronchus or lung"
)  # [lung_cancer_unspecified]
SCLC = Code(SNOMED, "254632001", "Small cell carcinoma of lung")  # [lung_cancer_not_nsclc]
NSTEMI = Code(ICD10, "I21.4", "Non-ST elevation (NSTEMI) myocardial infarction")
HEART_FAILURE = Code(ICD10, "I50.9", "Heart failure, unspecified")
STROKE = Code(ICD10, "I63.9", "Cerebral infarction, unspecified")
CROHN = Code(ICD10, "K50.90", "Crohn's disease, unspecified, without complications")
HIV = Code(ICD10, "B20", "Human immunodeficiency virus [HIV] disease")
HEP_C = Code(ICD10, "B18.2", "Chronic viral hepatitis C")
PEPTIC_ULCER = Code(
    ICD10,
    "K27.9",
    "Peptic ulcer, site unspecified, unspecified as acute or chronic, without hemorrhage or "
    "perforation",
)
GILBERT = Code(ICD10, "E80.4", "Gilbert syndrome")
PREGNANCY = Code(SNOMED, "77386006", "Pregnancy")
BREAST_CANCER = Code(SNOMED, "254837009", "Malignant neoplasm of breast")

# Observations
ECOG = Code(LOINC, "89247-1", "ECOG Performance Status score")
ECOG_1 = Code(LOINC, "LA9623-5", "Restricted in physically strenuous activity")
ECOG_2 = Code(LOINC, "LA9624-3", "Ambulatory and capable of all selfcare")
ECOG_3 = Code(LOINC, "LA9625-0", "Capable of only limited selfcare")
ECOG_1_SCT = Code(SNOMED, "422512005", "ECOG performance status grade 1")
HGB = Code(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood")
ANC = Code(LOINC, "751-8", "Neutrophils [#/volume] in Blood by Automated count")
PLT = Code(LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count")
BILI = Code(LOINC, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma")
AST = Code(LOINC, "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum")
ALT = Code(LOINC, "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum")
CREAT = Code(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma")
SYS_BP = Code(LOINC, "8480-6", "Systolic Blood Pressure")
DIA_BP = Code(LOINC, "8462-4", "Diastolic Blood Pressure")

# Medications (RxNorm prescribable content; NDC as that file lists it per product)
CARBOPLATIN = Code(RXNORM, "40048", "carboplatin")
CARBOPLATIN_SCD = Code(RXNORM, "597195", "carboplatin 10 MG/ML Injectable Solution")
CARBOPLATIN_SBD = Code(RXNORM, "686161", "carboplatin 10 MG/ML Injectable Solution [Paraplatin]")
CARBOPLATIN_NDC = Code(NDC, "00703-4239-01", "carboplatin 10 MG/ML Injectable Solution")
DOCETAXEL = Code(RXNORM, "72962", "docetaxel")
PEMETREXED = Code(RXNORM, "68446", "pemetrexed")
METHOTREXATE = Code(RXNORM, "6851", "methotrexate")
FLUOROURACIL_CREAM = Code(RXNORM, "105583", "fluorouracil 50 MG/ML Topical Cream")

Resource = dict[str, Any]


def _obs(ctx: fb.Ctx, code: Code, at: int, value: float, unit: str, high: float | None = None):
    return fb.observation(
        ctx, code, at=at, quantity=(value, unit), ref_high=high, ref_unit=unit if high else None
    )


def base(ctx: fb.Ctx, *, gender: str = "male", birth: str | None = "1966-03-14") -> list[Resource]:
    """The base patient: every inclusion met, every exclusion clear."""
    return [
        fb.patient(ctx, gender=gender, birth_date=birth),
        fb.condition(ctx, NSCLC, onset=-400),
        *fb.administration(ctx, CARBOPLATIN, at=-120),
        fb.observation(ctx, ECOG, at=-10, value_code=ECOG_1, category="survey"),
        _obs(ctx, HGB, -5, 12.0, "g/dL"),
        _obs(ctx, ANC, -5, 3.0, "10*3/uL"),
        _obs(ctx, PLT, -5, 250, "10*3/uL"),
        _obs(ctx, BILI, -5, 0.8, "mg/dL", 1.2),
        _obs(ctx, AST, -5, 30, "U/L", 40),
        _obs(ctx, ALT, -5, 25, "U/L", 40),
        _obs(ctx, CREAT, -5, 0.9, "mg/dL", 1.3),
    ]


def _drop(resources: list[Resource], code: Code) -> list[Resource]:
    """Without the resources coded ``code`` (the base patient's record of that test/drug)."""

    def has(r: Resource) -> bool:
        for key in ("code", "medicationCodeableConcept"):
            for c in (r.get(key) or {}).get("coding", ()):
                if c.get("code") == code.code:
                    return True
        return False

    return [r for r in resources if not has(r)]


def _ecog_int(ctx: fb.Ctx, at: int, value: int) -> Resource:
    r = fb.observation(ctx, ECOG, at=at, category="survey")
    r["valueInteger"] = value  # mCODE codes ECOG as valueInteger
    return r


Build = Callable[[fb.Ctx], list[Resource]]


def _replace(code: Code, *new: Callable[[fb.Ctx], list[Resource] | Resource]) -> Build:
    def build(ctx: fb.Ctx) -> list[Resource]:
        out = _drop(base(ctx), code)
        for f in new:
            made = f(ctx)
            out.extend(made if isinstance(made, list) else [made])
        return out

    return build


def _add(*new: Callable[[fb.Ctx], list[Resource] | Resource], **kw: Any) -> Build:
    def build(ctx: fb.Ctx) -> list[Resource]:
        out = base(ctx, **kw)
        for f in new:
            made = f(ctx)
            out.extend(made if isinstance(made, list) else [made])
        return out

    return build


def _lab(code: Code, at: int, value: float, unit: str, high: float | None = None):
    return lambda ctx: _obs(ctx, code, at, value, unit, high)


def _birth(years: int, days: int = 0) -> str:
    return (fb.years_before(AS_OF, years) + timedelta(days=days)).isoformat()


SCENARIOS: dict[str, Build] = {
    "onc-01": _add(),
    # age
    "onc-02": lambda ctx: base(ctx, birth=_birth(18, days=1)),  # 18th birthday tomorrow
    "onc-03": lambda ctx: base(ctx, birth=_birth(18)),  # 18th birthday on S
    "onc-04": lambda ctx: base(ctx, birth=None),
    "onc-05": lambda ctx: [
        fb.patient(ctx, gender="male", birth_date="1966-03-14", deceased=ctx.day(-1)),
        *base(ctx)[1:],
    ],
    # ECOG
    "onc-06": _replace(ECOG, lambda c: fb.observation(c, ECOG, at=-10, value_code=ECOG_2)),
    "onc-07": _replace(ECOG, lambda c: fb.observation(c, ECOG, at=-10, value_code=ECOG_3)),
    "onc-08": _replace(ECOG, lambda c: _ecog_int(c, -10, 2)),
    "onc-09": _replace(ECOG, lambda c: _ecog_int(c, -10, 3)),
    "onc-10": _replace(ECOG, lambda c: fb.observation(c, ECOG, at=-29, value_code=ECOG_1)),
    "onc-11": _replace(ECOG, lambda c: fb.observation(c, ECOG, at=-28, value_code=ECOG_1)),
    "onc-12": _add(lambda c: fb.observation(c, ECOG, at=-3, value_code=ECOG_3)),
    "onc-13": _replace(ECOG, lambda c: fb.observation(c, ECOG, at=-10, value_code=ECOG_1_SCT)),
    # NSCLC
    "onc-14": _replace(NSCLC, lambda c: fb.condition(c, LUNG_C3490, onset=-400)),
    "onc-15": _replace(NSCLC, lambda c: fb.condition(c, SCLC, onset=-400)),
    "onc-16": _replace(NSCLC),
    # prior platinum, and how the agent is written
    "onc-17": _replace(CARBOPLATIN),
    "onc-18": _replace(CARBOPLATIN, lambda c: fb.administration(c, CARBOPLATIN_NDC, at=-120)),
    "onc-19": _replace(CARBOPLATIN, lambda c: fb.administration(c, CARBOPLATIN_SBD, at=-120)),
    "onc-20": _replace(
        CARBOPLATIN, lambda c: fb.administration(c, None, at=-120, text="Paraplatin 450 mg IV")
    ),
    "onc-21": _replace(
        CARBOPLATIN,
        lambda c: fb.administration(c, CARBOPLATIN_SCD, at=-120, ref="resource"),
    ),
    # hemoglobin (>= 9 g/dL)
    "onc-22": _replace(HGB, _lab(HGB, -5, 9.0, "g/dL")),
    "onc-23": _replace(HGB, _lab(HGB, -5, 8.9, "g/dL")),
    "onc-24": _replace(HGB, _lab(HGB, -5, 90, "g/L")),
    "onc-25": _replace(HGB, _lab(HGB, -5, 89, "g/L")),
    "onc-26": _replace(HGB, _lab(HGB, -15, 12.0, "g/dL")),
    "onc-27": _replace(HGB, _lab(HGB, -14, 12.0, "g/dL")),
    "onc-28": _replace(HGB, _lab(HGB, -5, 7.4, "mmol/L")),
    # neutrophils (>= 1.5 10*9/L)
    "onc-29": _replace(ANC, _lab(ANC, -5, 1.5, "10*9/L")),
    "onc-30": _replace(ANC, _lab(ANC, -5, 1.49, "10*9/L")),
    "onc-31": _replace(ANC, _lab(ANC, -5, 1500, "/uL")),
    "onc-32": _replace(ANC, _lab(ANC, -5, 1499, "/mm3")),
    "onc-33": _replace(ANC, _lab(ANC, -5, 62, "%")),
    "onc-34": _replace(ANC),
    # platelets (>= 100 10*9/L)
    "onc-35": _replace(PLT, _lab(PLT, -5, 100, "10*9/L")),
    "onc-36": _replace(PLT, _lab(PLT, -5, 99, "10*3/uL")),
    "onc-37": _replace(PLT, _lab(PLT, -5, 100000, "/uL")),
    "onc-38": _add(_lab(PLT, -2, 90, "10*3/uL")),  # latest result decides
    # bilirubin (<= ULN; Gilbert: review)
    "onc-39": _replace(BILI, _lab(BILI, -5, 1.3, "mg/dL", 1.2)),
    "onc-40": _replace(
        BILI,
        _lab(BILI, -5, 1.3, "mg/dL", 1.2),
        lambda c: fb.condition(c, GILBERT, onset=-5000),
    ),
    "onc-41": _replace(BILI, _lab(BILI, -5, 1.2, "mg/dL", 1.2)),
    "onc-42": _replace(BILI, _lab(BILI, -5, 0.8, "mg/dL")),
    # AST / ALT (<= 2.5 x ULN), creatinine (<= 1.5 x ULN)
    "onc-43": _replace(AST, _lab(AST, -5, 80, "U/L", 40)),
    "onc-44": _replace(ALT),
    "onc-45": _replace(CREAT, _lab(CREAT, -5, 1.5, "mg/dL", 1.3)),
    "onc-46": _replace(CREAT, _lab(CREAT, -5, 1.3, "mg/dL", 1.3)),
    # exclusions: washout (21 days), prior docetaxel
    "onc-47": _add(lambda c: fb.administration(c, DOCETAXEL, at=-400)),
    "onc-48": _add(lambda c: fb.administration(c, PEMETREXED, at=-21)),
    "onc-49": _add(lambda c: fb.administration(c, PEMETREXED, at=-22)),
    "onc-50": _add(lambda c: fb.med_statement(c, METHOTREXATE, start=-60, end=-7)),
    "onc-51": _add(lambda c: fb.administration(c, None, at=-10, text="Keytruda 200 mg IV")),
    "onc-52": _add(lambda c: fb.med_statement(c, FLUOROURACIL_CREAM, start=-30, end=-2)),
    # cardiac
    "onc-53": _add(lambda c: fb.condition(c, NSTEMI, onset=-300, clinical="resolved")),
    "onc-54": _add(lambda c: fb.condition(c, NSTEMI, onset=-400, clinical="resolved")),
    "onc-55": _add(lambda c: fb.condition(c, HEART_FAILURE, onset=-700)),
    "onc-56": _add(_lab(SYS_BP, -3, 160, "mm[Hg]"), _lab(DIA_BP, -3, 105, "mm[Hg]")),
    "onc-57": _add(_lab(SYS_BP, -3, 160, "mm[Hg]"), _lab(DIA_BP, -3, 95, "mm[Hg]")),
    # cerebrovascular, gastrointestinal, infections
    "onc-58": _add(lambda c: fb.condition(c, STROKE, onset=-100, clinical="resolved")),
    "onc-59": _add(lambda c: fb.condition(c, STROKE, onset=-366, clinical="resolved")),
    "onc-60": _add(lambda c: fb.condition(c, CROHN, onset=-3000, clinical="inactive")),
    "onc-61": _add(lambda c: fb.condition(c, PEPTIC_ULCER, onset=-40)),
    "onc-62": _add(lambda c: fb.condition(c, HIV, onset=-3000)),
    "onc-63": _add(lambda c: fb.condition(c, HEP_C, onset=-3000)),
    "onc-64": _add(lambda c: fb.condition(c, HEP_C, onset=-3000, clinical="resolved")),
    # pregnancy, second malignancy
    "onc-65": _add(
        lambda c: fb.condition(c, PREGNANCY, onset=-60), gender="female", birth="1990-05-01"
    ),
    "onc-66": _add(lambda c: fb.condition(c, BREAST_CANCER, onset=-200)),
    "onc-67": _add(lambda c: fb.condition(c, BREAST_CANCER, onset=-4000, clinical="resolved")),
}

# Every code the scenarios write, with the value set it must belong to.
MEMBERSHIP: tuple[tuple[str, Code], ...] = (
    ("nsclc", NSCLC),
    ("lung_cancer_unspecified", LUNG_C3490),
    ("lung_cancer_not_nsclc", SCLC),
    ("myocardial_infarction", NSTEMI),
    ("heart_failure", HEART_FAILURE),
    ("stroke_tia", STROKE),
    ("ibd_or_ileus", CROHN),
    ("hiv", HIV),
    ("viral_hepatitis", HEP_C),
    ("peptic_ulcer", PEPTIC_ULCER),
    ("gilbert_syndrome", GILBERT),
    ("pregnancy", PREGNANCY),
    ("malignancy_other_than_lung", BREAST_CANCER),
    ("ecog_performance_status", ECOG),
    ("ecog_0_to_2", ECOG_1),
    ("ecog_0_to_2", ECOG_2),
    ("ecog_0_to_2", ECOG_1_SCT),
    ("ecog_3_to_5", ECOG_3),
    ("lab_hemoglobin", HGB),
    ("lab_neutrophils", ANC),
    ("lab_platelets", PLT),
    ("lab_bilirubin_total", BILI),
    ("lab_ast", AST),
    ("lab_alt", ALT),
    ("lab_creatinine", CREAT),
    ("bp_systolic", SYS_BP),
    ("bp_diastolic", DIA_BP),
    ("platinum_agents", CARBOPLATIN),
    ("platinum_agents", CARBOPLATIN_SCD),
    ("platinum_agents", CARBOPLATIN_SBD),
    ("platinum_agents", CARBOPLATIN_NDC),
    ("docetaxel", DOCETAXEL),
    ("antineoplastic_agents", PEMETREXED),
    ("antineoplastic_dual_use", METHOTREXATE),
    ("antineoplastic_agents", FLUOROURACIL_CREAM),
)


def resources() -> dict[str, list[Resource]]:
    """Resources per patient id."""
    return {pid: build(fb.Ctx(pid, AS_OF)) for pid, build in SCENARIOS.items()}
