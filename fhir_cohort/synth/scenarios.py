"""Scenario patients: one per branch of the NCT06038474 screening spec, with expected answers.

Each scenario is a name, a description, the resources to create (as builders of day offsets
from the screening date S, so it holds for any ``as_of``) and the expected answer of all 8
criteria; the status follows from the answers by the spec's rule (:func:`status_of`).

Conventions the expectations rely on (documented in docs/synthetic_data.md):
- a supply of N days (daysSupply, expectedSupplyDuration, coverage per dose) handed over on
  day D covers the N days D .. D+N-1 (half-open ``[D, D+N)``, ``end = D + N`` as the spec
  writes it); two intervals merge when the uncovered days between them,
  ``next.start - prev.end``, are <= 30; an era lasts the number of days it covers. Threshold
  scenarios (84/83 days, gap 30/31) use dispenses so the count is unambiguous; Period-based
  records stay far from every threshold.
- a deceased patient (on or before S) answers ``age = not_met``.
- Conditions carry ``recordedDate`` = onset date unless stated, so "recorded within" and
  "onset within" readings agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cohort.synth import codes as C
from fhir_cohort.synth import fhirbuild as fb
from fhir_cohort.synth.codes import Code
from fhir_cohort.synth.fhirbuild import Ctx, Resource

Spec = Callable[[Ctx], list[Resource]]
BirthSpec = Callable[[date], str | None]


# --- answer logic shared with the background generator ---------------------------------------


def _age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def birth_bounds(raw: str) -> tuple[date, date]:
    """Earliest and latest possible birth day of a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)."""
    parts = raw.split("-")
    y = int(parts[0])
    if len(parts) == 1:
        return date(y, 1, 1), date(y, 12, 31)
    m = int(parts[1])
    if len(parts) == 2:
        nxt = date(y + (m == 12), m % 12 + 1, 1)
        return date(y, m, 1), nxt - timedelta(days=1)
    d = date(y, m, int(parts[2]))
    return d, d


def age_answer(birth_raw: str | None, deceased: date | None, as_of: date) -> str:
    """I1 per the spec: partial dates decide only when both ends agree."""
    if deceased is not None and deceased <= as_of:
        return "not_met"
    if birth_raw is None:
        return "unknown"
    earliest, latest = birth_bounds(birth_raw)
    answers = {"met" if _age_on(b, as_of) >= 18 else "not_met" for b in (earliest, latest)}
    return answers.pop() if len(answers) == 1 else "unknown"


def status_of(answers: Mapping[str, str]) -> str:
    inc = [answers[c] for c in C.INCLUSIONS]
    exc = [answers[c] for c in C.EXCLUSIONS]
    if "not_met" in inc or "excluded" in exc:
        return "ineligible"
    if all(a == "met" for a in inc) and all(a == "clear" for a in exc):
        return "eligible"
    return "review"


# --- declarative building blocks ------------------------------------------------------------


def cond(code: Code | list[Code], onset: int | None, **kw: Any) -> Spec:
    return lambda ctx: [fb.condition(ctx, code, onset=onset, **kw)]


def ms(code: Code | None, **kw: Any) -> Spec:
    return lambda ctx: fb.med_statement(ctx, code, **kw)


def mr(code: Code | None, **kw: Any) -> Spec:
    return lambda ctx: fb.med_request(ctx, code, **kw)


def md(code: Code | None, **kw: Any) -> Spec:
    return lambda ctx: fb.dispense(ctx, code, **kw)


def ma(code: Code | None, **kw: Any) -> Spec:
    return lambda ctx: fb.administration(ctx, code, **kw)


def obs(code: Code, **kw: Any) -> Spec:
    return lambda ctx: [fb.observation(ctx, code, **kw)]


def adult(years: int = 35, extra_days: int = 100) -> BirthSpec:
    return lambda s: (fb.years_before(s, years) - timedelta(days=extra_days)).isoformat()


ELIGIBLE: dict[str, str] = {
    "age": "met",
    "sle": "met",
    "therapy": "met",
    "autoantibody": "met",
    "lupus_nephritis": "clear",
    "cns_lupus": "clear",
    "pregnancy_lactation": "clear",
    "chronic_illness": "clear",
}

IU = "[IU]/mL"

SLE_BASE: tuple[Spec, ...] = (cond(C.SLE, -2000),)
# Glucocorticoid + 2 other immunosuppressants, each far above 84 days and inside W.
GC_BASE: tuple[Spec, ...] = (ms(C.PREDNISONE, start=-600, end=-100),)
IS_BASE: tuple[Spec, ...] = (
    ms(C.MMF, start=-500, end=-200),
    ms(C.AZATHIOPRINE, start=-300, end=-30),
)
THERAPY_BASE = GC_BASE + IS_BASE
AB_BASE: tuple[Spec, ...] = (
    obs(C.DSDNA_IU, at=-60, quantity=(150, IU), ref_high=30, ref_unit=IU, interpretation=C.I_HIGH),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    focus: str
    resources: tuple[Spec, ...]
    expected: Mapping[str, str]
    gender: str = "female"
    birth: BirthSpec = field(default=adult())
    deceased: int | None = None  # day offset from S
    deceased_boolean: bool | None = None
    # Answers that depend on where S falls in the calendar (partial dates): S -> answers.
    expect_at: Callable[[date], Mapping[str, str]] | None = None

    @property
    def patient_id(self) -> str:
        return f"s-{self.name}"

    def answers(self, as_of: date) -> dict[str, str]:
        out = dict(self.expected)
        if self.expect_at is not None:
            out.update(self.expect_at(as_of))
        if "age" not in out:
            dec = None if self.deceased is None else as_of + timedelta(days=self.deceased)
            out["age"] = age_answer(self.birth(as_of), dec, as_of)
        return out


def scenario(
    name: str,
    description: str,
    focus: str,
    *,
    sle: tuple[Spec, ...] = SLE_BASE,
    therapy: tuple[Spec, ...] = THERAPY_BASE,
    ab: tuple[Spec, ...] = AB_BASE,
    extra: tuple[Spec, ...] = (),
    expect: Mapping[str, str] | None = None,
    **kw: Any,
) -> Scenario:
    """A full candidate with one part replaced or added; answers default to eligible."""
    expected = {k: v for k, v in ELIGIBLE.items() if k != "age"}
    expected.update(expect or {})
    return Scenario(
        name=name,
        description=description,
        focus=focus,
        resources=(*sle, *therapy, *ab, *extra),
        expected=expected,
        **kw,
    )


def _straddle_birth(s: date) -> str:
    # Year-only birth in the year that makes the patient 18 at the earliest and 17 at the
    # latest possible birthday (decides only when S is 31 Dec; the answer is computed).
    return str(s.year - 18)


GC_CREAM = ms(C.HC_CREAM_SCD, start=-500, end=-100, route=C.ROUTE_TOPICAL)
GC_INHALED = ms(C.BUDESONIDE_DPI_SCD, start=-500, end=-100, route=C.ROUTE_RESPIRATORY)
MMF_ONLY = (ms(C.MMF, start=-500, end=-200),)
AZA_STD = (C.AZATHIOPRINE,)

SCENARIOS: tuple[Scenario, ...] = (
    # ---------------- full candidates in several encodings ----------------
    scenario(
        "eligible-statements",
        "SLE, prednisone + MMF + azathioprine statements, anti-dsDNA high",
        "all",
    ),
    scenario("eligible-male", "as eligible-statements, male", "all", gender="male"),
    scenario(
        "eligible-requests",
        "MedicationRequest encodings: boundsPeriod; validityPeriod + 30 d x (1+3 repeats); "
        "active with authoredOn only (runs to S)",
        "therapy",
        therapy=(
            mr(C.PREDNISONE, authored=-510, bounds=(-500, -300)),
            mr(C.MMF, authored=-420, validity_start=-400, supply_days=30, repeats=3),
            mr(C.AZATHIOPRINE, authored=-200, status="active"),
        ),
    ),
    scenario(
        "eligible-request-supply",
        "MedicationRequest authoredOn + expectedSupplyDuration x (1 + repeats)",
        "therapy",
        therapy=(
            mr(C.PREDNISONE, authored=-300, supply_days=30, repeats=5),
            mr(C.TACROLIMUS, authored=-400, supply_days=90, repeats=0),
            mr(C.METHOTREXATE, authored=-600, supply_days=60, repeats=2),
        ),
    ),
    scenario(
        "eligible-dispenses",
        "MedicationDispense whenHandedOver + daysSupply, contiguous refills",
        "therapy",
        therapy=(
            *(md(C.PREDNISONE, handed=-400 + 30 * k, days_supply=30) for k in range(5)),
            *(md(C.MMF, handed=-350 + 90 * k, days_supply=90) for k in range(2)),
            md(C.AZATHIOPRINE, handed=-200, days_supply=100),
        ),
    ),
    scenario(
        "eligible-infusions",
        "MedicationAdministration: one rituximab infusion (182 d) + 3 monthly "
        "cyclophosphamide infusions (30 d each, era 90 d)",
        "therapy",
        therapy=(
            *GC_BASE,
            ma(C.RITUXIMAB_SCD, at=-300),
            *(ma(C.CYCLOPHOSPHAMIDE, at=-500 + 30 * k) for k in range(3)),
        ),
    ),
    scenario(
        "eligible-belimumab",
        "belimumab (Benlysta SBD) infusions every 28 d x4 (era 112 d) + MMF",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            *(ma(C.BENLYSTA_400_SBD, at=-400 + 28 * k) for k in range(4)),
        ),
    ),
    scenario(
        "eligible-contained-medication",
        "medicationReference to a contained Medication (#med1)",
        "therapy",
        therapy=(
            *GC_BASE,
            mr(C.MMF, authored=-500, bounds=(-500, -250), ref="contained"),
            mr(C.AZATHIOPRINE, authored=-300, bounds=(-300, -100), ref="contained"),
        ),
    ),
    scenario(
        "eligible-medication-resource",
        "medicationReference to a separate Medication resource (product codes)",
        "therapy",
        therapy=(
            ms(C.PREDNISONE_5_SCD, start=-600, end=-100, ref="resource"),
            ms(C.MTX_25_SCD, start=-500, end=-200, ref="resource"),
            ms(C.AZATHIOPRINE, start=-300, end=-30, ref="resource"),
        ),
    ),
    scenario(
        "eligible-product-codes",
        "product-level RxNorm codes: prednisone SCD, CellCept SBD, methotrexate SCD",
        "therapy",
        therapy=(
            ms(C.PREDNISONE_5_SCD, start=-600, end=-100),
            ms(C.CELLCEPT_500_SBD, start=-500, end=-200),
            ms(C.MTX_25_SCD, start=-300, end=-30),
        ),
    ),
    scenario(
        "eligible-text-only-medication",
        "MMF given only as text 'mycophenolate mofetil (CellCept) 500 mg tablet' "
        "(maps by ingredient name, low confidence)",
        "therapy",
        therapy=(
            *GC_BASE,
            ms(None, text="mycophenolate mofetil (CellCept) 500 mg tablet", start=-500, end=-200),
            ms(C.AZATHIOPRINE, start=-300, end=-30),
        ),
    ),
    scenario(
        "eligible-statement-bounds-duration",
        "MedicationStatement effectiveDateTime bounded by dosage boundsDuration 120 d",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, at=-300, bounds_days=120)),
    ),
    scenario(
        "eligible-statement-active-open",
        "MedicationStatement status active with open effectivePeriod (runs to S)",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, start=-200, status="active")),
    ),
    scenario(
        "eligible-exactly-84-days",
        "prednisone: one dispense of 84 days supply (era exactly 84 d)",
        "therapy",
        therapy=(md(C.PREDNISONE, handed=-300, days_supply=84), *IS_BASE),
    ),
    scenario(
        "eligible-merge-gap-30",
        "prednisone: two 30-day dispenses 60 d apart (gap exactly 30 d -> one 90-day era)",
        "therapy",
        therapy=(
            md(C.PREDNISONE, handed=-400, days_supply=30),
            md(C.PREDNISONE, handed=-340, days_supply=30),
            *IS_BASE,
        ),
    ),
    scenario(
        "eligible-sle-undated",
        "SLE Condition with no onset and no recordedDate",
        "sle",
        sle=(cond(C.SLE, None, recorded=None),),
    ),
    scenario(
        "eligible-deceased-after-as-of", "deceasedDateTime after S (alive at S)", "age", deceased=30
    ),
    scenario(
        "eligible-preliminary-lab",
        "anti-dsDNA positive with status preliminary",
        "autoantibody",
        ab=(
            obs(
                C.DSDNA_IU,
                at=-40,
                status="preliminary",
                quantity=(90, IU),
                ref_high=30,
                ref_unit=IU,
            ),
        ),
    ),
    # ---------------- I1 age ----------------
    scenario(
        "age-17",
        "17 years old at S (18th birthday 60 days after S)",
        "age",
        birth=lambda s: (fb.years_before(s, 18) + timedelta(days=60)).isoformat(),
    ),
    scenario("age-missing-birthdate", "no Patient.birthDate", "age", birth=lambda s: None),
    scenario(
        "age-partial-year-adult",
        "birthDate 'YYYY' 40 years before S",
        "age",
        birth=lambda s: str(s.year - 40),
    ),
    scenario(
        "age-partial-year-straddle",
        "birthDate 'YYYY' whose Jan 1 gives 18 and Dec 31 gives 17 at S",
        "age",
        birth=_straddle_birth,
    ),
    scenario(
        "age-partial-month-adult",
        "birthDate 'YYYY-MM' 30 years before S",
        "age",
        birth=lambda s: fb.years_before(s, 30).isoformat()[:7],
    ),
    scenario("age-deceased-before-as-of", "deceasedDateTime 30 days before S", "age", deceased=-30),
    # ---------------- I2 SLE ----------------
    scenario(
        "sle-icd10-m3214-dotted",
        "ICD-10-CM M32.14 (dotted); also active lupus nephritis without severity",
        "sle",
        sle=(cond(C.SLE_M3214, -900),),
        expect={"lupus_nephritis": "review"},
    ),
    scenario(
        "sle-icd10-m329-undotted",
        "ICD-10-CM 'M329' written without the dot",
        "sle",
        sle=(cond(C.SLE_M329_UNDOTTED, -900),),
    ),
    scenario("sle-icd10-m329", "ICD-10-CM M32.9", "sle", sle=(cond(C.SLE_M329, -900),)),
    scenario("sle-icd9-7100", "ICD-9-CM 710.0", "sle", sle=(cond(C.SLE_ICD9, -3000),)),
    scenario(
        "sle-organ-involvement",
        "SNOMED SLE descendant 239887007",
        "sle",
        sle=(cond(C.SLE_ORGAN, -900),),
    ),
    scenario(
        "sle-only-unspecified-lupus",
        "only SNOMED 200936003 Lupus erythematosus (Synthea style)",
        "sle",
        sle=(cond(C.LUPUS_UNSPECIFIED, -900),),
        expect={"sle": "unknown"},
    ),
    scenario(
        "sle-only-drug-induced",
        "only drug-induced lupus M32.0",
        "sle",
        sle=(cond(C.DRUG_INDUCED_M320, -900),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "sle-only-discoid",
        "only discoid lupus L93.0",
        "sle",
        sle=(cond(C.DISCOID_L930, -900),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "sle-provisional",
        "SLE with verificationStatus provisional",
        "sle",
        sle=(cond(C.SLE, -900, verification="provisional"),),
        expect={"sle": "unknown"},
    ),
    scenario(
        "sle-differential",
        "SLE with verificationStatus differential",
        "sle",
        sle=(cond(C.SLE, -900, verification="differential"),),
        expect={"sle": "unknown"},
    ),
    scenario(
        "sle-refuted-plus-unspecified",
        "SLE refuted + 200936003 confirmed",
        "sle",
        sle=(cond(C.SLE, -900, verification="refuted"), cond(C.LUPUS_UNSPECIFIED, -900)),
        expect={"sle": "unknown"},
    ),
    scenario(
        "sle-entered-in-error-only",
        "SLE entered-in-error only",
        "sle",
        sle=(cond(C.SLE, -900, verification="entered-in-error", clinical=None),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "sle-after-as-of",
        "SLE onset and recordedDate 20 days after S only",
        "sle",
        sle=(cond(C.SLE, 20),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "sle-none",
        "no lupus record at all (otherwise a full candidate)",
        "sle",
        sle=(),
        expect={"sle": "not_met"},
    ),
    # ---------------- I3 therapy ----------------
    scenario(
        "therapy-one-immunosuppressant",
        "prednisone + MMF only",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-no-glucocorticoid",
        "MMF + azathioprine, no glucocorticoid",
        "therapy",
        therapy=IS_BASE,
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-gap-31-no-merge",
        "prednisone: two 30-day dispenses 61 d apart (gap 31 d -> two 30-day eras)",
        "therapy",
        therapy=(
            md(C.PREDNISONE, handed=-400, days_supply=30),
            md(C.PREDNISONE, handed=-339, days_supply=30),
            *IS_BASE,
        ),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-83-days",
        "prednisone: one dispense of 83 days supply",
        "therapy",
        therapy=(md(C.PREDNISONE, handed=-300, days_supply=83), *IS_BASE),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-clipped-to-window",
        "azathioprine 150 d from S-830 to S-680: only ~50 d inside W = [S-24 months, S]",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, start=-830, end=-680)),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-mmf-plus-mpa-one-agent",
        "prednisone + mycophenolate mofetil + mycophenolic acid (one agent)",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.MPA, start=-180, end=-20)),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-hcq-second-agent",
        "prednisone + MMF + hydroxychloroquine",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.HYDROXYCHLOROQUINE, start=-700, end=-10)),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-hc-cream-only-gc",
        "hydrocortisone topical cream is the only glucocorticoid",
        "therapy",
        therapy=(GC_CREAM, *IS_BASE),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-inhaled-budesonide-only-gc",
        "inhaled budesonide is the only glucocorticoid",
        "therapy",
        therapy=(GC_INHALED, *IS_BASE),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-unknown-duration-statement",
        "azathioprine MedicationStatement with effectiveDateTime only (unknown duration)",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, at=-200)),
        expect={"therapy": "unknown"},
    ),
    scenario(
        "therapy-unknown-duration-request",
        "azathioprine MedicationRequest completed, authoredOn only (unknown end)",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, mr(C.AZATHIOPRINE, authored=-200)),
        expect={"therapy": "unknown"},
    ),
    *(
        scenario(
            f"therapy-request-{tag}",
            f"second immunosuppressant only in a MedicationRequest that does not count ({tag})",
            "therapy",
            therapy=(
                *GC_BASE,
                *MMF_ONLY,
                mr(C.AZATHIOPRINE, authored=-300, bounds=(-300, -100), **kw),
            ),
            expect={"therapy": "not_met"},
        )
        for tag, kw in (
            ("cancelled", {"status": "cancelled"}),
            ("draft", {"status": "draft"}),
            ("entered-in-error", {"status": "entered-in-error"}),
            ("do-not-perform", {"do_not_perform": True}),
            ("proposal", {"intent": "proposal"}),
        )
    ),
    *(
        scenario(
            f"therapy-statement-{status}",
            f"second immunosuppressant only in a MedicationStatement with status {status}",
            "therapy",
            therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, start=-300, end=-100, status=status)),
            expect={"therapy": "not_met"},
        )
        for status in ("not-taken", "entered-in-error", "intended")
    ),
    scenario(
        "therapy-after-as-of",
        "azathioprine statement starting 10 days after S",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, start=10, end=200)),
        expect={"therapy": "not_met"},
    ),
    scenario(
        "therapy-cyclophosphamide-single-dose",
        "one cyclophosphamide infusion (30 d coverage)",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ma(C.CYCLOPHOSPHAMIDE, at=-200)),
        expect={"therapy": "not_met"},
    ),
    # ---------------- I4 autoantibodies ----------------
    scenario(
        "ab-interpretation-pos",
        "anti-dsDNA Crithidia IF with interpretation POS only",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I_POS),),
    ),
    scenario(
        "ab-interpretation-high-overrides-value",
        "interpretation H on a value below the reference high (interpretation rule applies first)",
        "autoantibody",
        ab=(
            obs(
                C.DSDNA_IU,
                at=-30,
                quantity=(10, IU),
                ref_high=30,
                ref_unit=IU,
                interpretation=C.I_HIGH,
            ),
        ),
    ),
    scenario(
        "ab-interpretation-neg",
        "anti-dsDNA interpretation NEG in L",
        "autoantibody",
        ab=(
            obs(
                C.DSDNA_IU,
                at=-30,
                quantity=(10, IU),
                ref_high=30,
                ref_unit=IU,
                interpretation=C.I_NEG,
            ),
        ),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-interpretation-ind",
        "anti-dsDNA interpretation IND (equivocal)",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I_IND),),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-value-code-positive",
        "anti-nucleosome valueCodeableConcept SNOMED Positive",
        "autoantibody",
        ab=(obs(C.NUCLEOSOME, at=-30, value_code=C.POSITIVE),),
    ),
    scenario(
        "ab-value-code-negative",
        "anti-Sm valueCodeableConcept SNOMED Negative",
        "autoantibody",
        ab=(obs(C.SM_IF, at=-30, value_code=C.NEGATIVE),),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-string-detected",
        "valueString 'Detected'",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, value_string="Detected"),),
    ),
    scenario(
        "ab-string-not-detected",
        "valueString 'not detected'",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, value_string="not detected"),),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-string-borderline",
        "valueString 'borderline'",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, value_string="borderline"),),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-quantity-above-ref",
        "75 IU/mL, reference high 30, no interpretation",
        "autoantibody",
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(75, IU), ref_high=30, ref_unit=IU),),
    ),
    scenario(
        "ab-quantity-at-ref",
        "30 IU/mL, reference high 30 (at = negative)",
        "autoantibody",
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(30, IU), ref_high=30, ref_unit=IU),),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-quantity-gt-comparator",
        "'>30' IU/mL, reference high 30 (> counts as above)",
        "autoantibody",
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(30, IU), comparator=">", ref_high=30, ref_unit=IU),),
    ),
    scenario(
        "ab-titer-ratio-positive",
        "titer valueRatio 1/320, reference 1:80",
        "autoantibody",
        ab=(obs(C.DSDNA_TITER, at=-30, ratio=(1, 320), ref_high=80, ref_text="1:80"),),
    ),
    scenario(
        "ab-titer-string-negative",
        "titer valueString '1:40', reference 1:80",
        "autoantibody",
        ab=(obs(C.DSDNA_TITER, at=-30, value_string="1:40", ref_high=80, ref_text="1:80"),),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-number-no-range",
        "anti-Sm 2.5 with no reference range or interpretation (equivocal)",
        "autoantibody",
        ab=(obs(C.SM_UNITS, at=-30, quantity=(2.5, "U/mL")),),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-positive-older-than-lookback",
        "only positive 400 days before S",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-400, interpretation=C.I_POS),),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-negative-in-lookback-positive-before",
        "negative in L, positive 500 days before S (not 'never positive')",
        "autoantibody",
        ab=(
            obs(C.DSDNA_IF, at=-100, interpretation=C.I_NEG),
            obs(C.DSDNA_IF, at=-500, interpretation=C.I_POS),
        ),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-negative-only",
        "two negative tests in L, never positive",
        "autoantibody",
        ab=(
            obs(C.DSDNA_IF, at=-100, interpretation=C.I_NEG),
            obs(C.SM_IF, at=-200, value_code=C.NEGATIVE),
        ),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-none",
        "no autoantibody test at all",
        "autoantibody",
        ab=(),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-cancelled-positive-final-negative",
        "positive with status cancelled (ignored) + final negative",
        "autoantibody",
        ab=(
            obs(C.DSDNA_IF, at=-30, status="cancelled", interpretation=C.I_POS),
            obs(C.DSDNA_IF, at=-60, interpretation=C.I_NEG),
        ),
        expect={"autoantibody": "not_met"},
    ),
    scenario(
        "ab-entered-in-error-positive",
        "only positive is entered-in-error (ignored)",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, status="entered-in-error", interpretation=C.I_POS),),
        expect={"autoantibody": "unknown"},
    ),
    scenario(
        "ab-sm-rnp-positive",
        "Sm/RNP positive (counts as anti-Sm)",
        "autoantibody",
        ab=(obs(C.SM_RNP, at=-30, interpretation=C.I_POS),),
    ),
    scenario(
        "ab-sm-units-positive",
        "anti-Sm 45 U/mL above reference high 20",
        "autoantibody",
        ab=(obs(C.SM_UNITS, at=-30, quantity=(45, "U/mL"), ref_high=20, ref_unit="U/mL"),),
    ),
    scenario(
        "ab-positive-after-as-of",
        "positive 10 days after S (ignored) + negative in L",
        "autoantibody",
        ab=(
            obs(C.DSDNA_IF, at=10, interpretation=C.I_POS),
            obs(C.DSDNA_IF, at=-20, interpretation=C.I_NEG),
        ),
        expect={"autoantibody": "not_met"},
    ),
    # ---------------- E1 lupus nephritis ----------------
    scenario(
        "ln-active-class-iv",
        "active lupus nephritis WHO class IV",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -300),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "ln-active-severe",
        "active lupus nephritis with severity 24484000",
        "lupus_nephritis",
        extra=(cond(C.LN, -300, severity=C.SEVERE),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "ln-active-class-ii",
        "active lupus nephritis class II, no severity",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_II, -300),),
        expect={"lupus_nephritis": "review"},
    ),
    scenario(
        "ln-resolved-class-iv",
        "class IV, clinicalStatus resolved, abated 200 d before S",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -900, clinical="resolved", abatement=-200),),
    ),
    scenario(
        "ln-inactive-class-iv",
        "class IV, clinicalStatus inactive",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -900, clinical="inactive"),),
    ),
    scenario(
        "ln-refuted-class-iv",
        "class IV, verificationStatus refuted",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -300, verification="refuted"),),
    ),
    scenario(
        "ln-no-status-abated",
        "class IV, no clinicalStatus, abatement before S (not active)",
        "lupus_nephritis",
        extra=(
            cond(
                C.LN_CLASS_IV, -900, clinical=None, abatement=-100, category="encounter-diagnosis"
            ),
        ),
    ),
    scenario(
        "ln-no-status-open",
        "class IV, no clinicalStatus, no abatement (active)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -300, clinical=None, category="encounter-diagnosis"),),
        expect={"lupus_nephritis": "excluded"},
    ),
    # ---------------- E2 CNS lupus / neuro ----------------
    scenario(
        "cns-active-cns-lupus",
        "active SLE encephalitis",
        "cns_lupus",
        extra=(cond(C.CNS_LUPUS, -200),),
        expect={"cns_lupus": "excluded"},
    ),
    scenario(
        "cns-seizure-recent",
        "active seizure recorded 100 d before S",
        "cns_lupus",
        extra=(cond(C.SEIZURE, -100),),
        expect={"cns_lupus": "review"},
    ),
    scenario(
        "cns-seizure-inactive",
        "seizure 100 d before S, clinicalStatus inactive",
        "cns_lupus",
        extra=(cond(C.SEIZURE, -100, clinical="inactive"),),
    ),
    scenario(
        "cns-psychosis-old",
        "active psychosis recorded 500 d before S",
        "cns_lupus",
        extra=(cond(C.PSYCHOSIS, -500),),
    ),
    scenario(
        "cns-headache-recent",
        "active headache recorded 30 d before S",
        "cns_lupus",
        extra=(cond(C.HEADACHE, -30),),
        expect={"cns_lupus": "review"},
    ),
    scenario(
        "cns-headache-120d",
        "active headache recorded 120 d before S",
        "cns_lupus",
        extra=(cond(C.HEADACHE, -120),),
    ),
    # ---------------- E3 pregnancy / lactation ----------------
    scenario(
        "preg-active-recent",
        "active pregnancy, onset 100 d before S",
        "pregnancy_lactation",
        extra=(cond(C.PREGNANCY, -100),),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-onset-400d",
        "active pregnancy with onset 400 d before S (stale)",
        "pregnancy_lactation",
        extra=(cond(C.PREGNANCY, -400),),
    ),
    scenario(
        "preg-status-pregnant",
        "pregnancy-status 82810-3 = Pregnancy 10 d before S",
        "pregnancy_lactation",
        extra=(obs(C.PREGNANCY_STATUS, at=-10, value_code=C.PREGNANCY, category="social-history"),),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-hcg-positive",
        "urine hCG positive 10 d before S",
        "pregnancy_lactation",
        extra=(obs(C.HCG_URINE, at=-10, value_code=C.POSITIVE, interpretation=C.I_POS),),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-hcg-positive-60d",
        "urine hCG positive 60 d before S (outside 30 d)",
        "pregnancy_lactation",
        extra=(obs(C.HCG_URINE, at=-60, value_code=C.POSITIVE, interpretation=C.I_POS),),
    ),
    scenario(
        "preg-lactation",
        "active lactation (currently breastfeeding)",
        "pregnancy_lactation",
        extra=(cond(C.LACTATION, -60),),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-delivery-recent",
        "delivery (O80 encounter diagnosis) 200 d before S",
        "pregnancy_lactation",
        extra=(cond(C.DELIVERY_O80, -200, clinical=None, category="encounter-diagnosis"),),
        expect={"pregnancy_lactation": "review"},
    ),
    scenario(
        "preg-male-spurious-code",
        "male with an active pregnancy code",
        "pregnancy_lactation",
        gender="male",
        extra=(cond(C.PREGNANCY, -100),),
    ),
    # ---------------- E4 chronic illness ----------------
    scenario(
        "chronic-heart-failure",
        "active heart failure (SNOMED)",
        "chronic_illness",
        extra=(cond(C.HEART_FAILURE, -1000),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-heart-failure-icd",
        "active heart failure I50.9",
        "chronic_illness",
        extra=(cond(C.HEART_FAILURE_I509, -1000),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-malignancy",
        "active malignant neoplastic disease",
        "chronic_illness",
        extra=(cond(C.MALIGNANCY, -200),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-eskd",
        "active end-stage renal disease",
        "chronic_illness",
        extra=(cond(C.ESKD, -700),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-hiv",
        "active HIV disease B20",
        "chronic_illness",
        extra=(cond(C.HIV_B20, -2000),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-resolved-cancer",
        "breast cancer resolved 1000 d before S",
        "chronic_illness",
        extra=(cond(C.BREAST_CANCER, -2500, clinical="resolved", abatement=-1000),),
    ),
    # ---------------- several answers at once ----------------
    scenario(
        "review-multiple-unknowns",
        "unspecified lupus only, no autoantibody test, headache 20 d ago",
        "mixed",
        sle=(cond(C.LUPUS_UNSPECIFIED, -900),),
        ab=(),
        extra=(cond(C.MIGRAINE, -20),),
        expect={"sle": "unknown", "autoantibody": "unknown", "cns_lupus": "review"},
    ),
)


# --- spec v1.1 ("Clarifications (v1.1)") ------------------------------------------------------
# One patient per v1.1 rule; answers read from the spec text (v1.1 wins over earlier sentences).
# Partial dates are built from S, so a scenario means the same for any as_of; where the answer
# depends on where S falls in the calendar, ``expect_at`` computes it (windows are inclusive,
# [S - N days, S], and W = [S - 24 calendar months, S], as docs/criteria.md states).


def month_of(offset: int) -> Callable[[date], str]:
    """The 'YYYY-MM' month holding day S + offset."""
    return lambda s: (s + timedelta(days=offset)).isoformat()[:7]


def year_of(offset: int) -> Callable[[date], str]:
    return lambda s: str((s + timedelta(days=offset)).year)


def _month_bounds(d: date) -> tuple[date, date]:
    first = d.replace(day=1)
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt - timedelta(days=1)


def _w_start(s: date) -> date:
    return fb.years_before(s, 2)  # S - 24 calendar months (29 Feb -> 28 Feb)


def _preg_straddle(s: date) -> dict[str, str]:
    # Onset month holding S-300: wholly inside the 300 days -> excluded; straddling -> review.
    first, _ = _month_bounds(s - timedelta(days=300))
    return {"pregnancy_lactation": "excluded" if first >= s - timedelta(days=300) else "review"}


def _med_end_month(s: date) -> str:
    return _month_bounds(s - timedelta(days=100))[0].isoformat()[:7]


def _med_end_month_start(s: date) -> str:
    # 60 days up to the 1st of the end month, 87-90 up to its last day: only the v1.1 reading
    # (a month end means its last day) reaches 84.
    return (_month_bounds(s - timedelta(days=100))[0] - timedelta(days=59)).isoformat()


def _w_start_month(s: date) -> str:
    return _w_start(s).isoformat()[:7]


def _w_start_plus_85(s: date) -> str:
    return (_w_start(s) + timedelta(days=85)).isoformat()


def _start_straddle(s: date) -> dict[str, str]:
    # Start month holding W's first day w, end w+85. A month wholly inside W means its first
    # day (met). Otherwise it straddles w: read from its first day the era clipped to W has 86
    # days (met), from its last day 86-(last-w): below 84 when last - w > 2, so the partial
    # start cannot decide (unknown); when both readings agree (last - w <= 2) they decide.
    w = _w_start(s)
    first, last = _month_bounds(w)
    if first == w:
        return {"therapy": "met"}
    return {"therapy": "unknown" if (last - w).days > 2 else "met"}


ORPHAN_SUFFIX = "-nopatient"


def _orphan_condition(ctx: Ctx) -> list[Resource]:
    # A record whose patient has no Patient resource: counted in run.json, never a patient row.
    return [fb.condition(ctx, C.SLE, onset=-900, subject=ctx.pid + ORPHAN_SUFFIX)]


# R4 dropped Condition.abatementBoolean (STU3); v1.1 names it as hospitals still send it.
NOT_R4_FIELDS: frozenset[str] = frozenset({"abatementBoolean"})


def _panel(ctx: Ctx) -> list[Resource]:
    comp = {
        "code": C.DSDNA_IU.concept(),
        "valueQuantity": {"value": 150, "unit": IU, "system": C.UCUM, "code": IU},
        "interpretation": [C.I_HIGH.concept()],
        "referenceRange": [{"high": {"value": 30, "unit": IU, "system": C.UCUM, "code": IU}}],
    }
    return [fb.observation(ctx, {"text": "Lupus autoantibody panel"}, at=-30, components=[comp])]


def proc(code: Code, at: int) -> Spec:
    return lambda ctx: [fb.procedure(ctx, code, at=at)]


HC_TOPICAL = "hydrocortisone, the only glucocorticoid, "
NOT_MET = {"therapy": "not_met"}
LN_CLASS_V_DISPLAY = Code(C.SNOMED, C.LN.code, "SLE glomerulonephritis, ISN/RPS class V")
_CMP = "autoantibody"


def _cmp(name: str, comparator: str, value: float, answer: str, why: str) -> Scenario:
    return scenario(
        f"lab-comparator-{name}",
        f"anti-dsDNA '{comparator}{value:g}' IU/mL, reference high 30: {why}",
        _CMP,
        ab=(
            obs(
                C.DSDNA_IU,
                at=-30,
                quantity=(value, IU),
                comparator=comparator,
                ref_high=30,
                ref_unit=IU,
            ),
        ),
        expect={_CMP: answer},
    )


V11_SCENARIOS: tuple[Scenario, ...] = (
    # ---------------- v1.1 dates and windows ----------------
    scenario(
        "date-sle-recorded-after-as-of",
        "only SLE record: onset S-900 but recordedDate S+10 (not on record at S)",
        "sle",
        sle=(cond(C.SLE, -900, recorded=10),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "date-ln-recorded-after-as-of",
        "lupus nephritis class IV, onset S-300, recorded S+5 (ignored)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -300, recorded=5),),
    ),
    scenario(
        "date-headache-month-straddle-90d",
        "active headache, onset and recordedDate "
        "'YYYY-MM' of the month holding S-90 (at least partly inside 90 days)",
        "cns_lupus",
        extra=(cond(C.HEADACHE, month_of(-90), recorded=month_of(-90)),),
        expect={"cns_lupus": "review"},
    ),
    scenario(
        "date-seizure-year-straddle-365d",
        "active seizure dated 'YYYY', the year holding S-365 (straddles or inside the 365 days)",
        "cns_lupus",
        extra=(cond(C.SEIZURE, year_of(-365), recorded=year_of(-365)),),
        expect={"cns_lupus": "review"},
    ),
    scenario(
        "date-pregnancy-month-straddle-300d",
        "active pregnancy with onset 'YYYY-MM', the "
        "month holding S-300 (straddles: review; wholly inside when S-300 is a 1st)",
        "pregnancy_lactation",
        extra=(cond(C.PREGNANCY, month_of(-300), recorded=month_of(-300)),),
        expect_at=_preg_straddle,
    ),
    scenario(
        "date-med-end-month-precision",
        "azathioprine effectivePeriod ends 'YYYY-MM': "
        "through its last day the era reaches 84 days, to its 1st only 60",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            ms(C.AZATHIOPRINE, start=_med_end_month_start, end=_med_end_month),
        ),
    ),
    scenario(
        "date-med-start-straddles-window",
        "azathioprine start 'YYYY-MM' = month of "
        "S-24 months, end 85 days after it: the partial start cannot decide",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            ms(C.AZATHIOPRINE, start=_w_start_month, end=_w_start_plus_85),
        ),
        expect_at=_start_straddle,
    ),
    scenario(
        "date-taper-three-steps",
        "prednisone MedicationRequest, 3 dosageInstructions of "
        "40 days each (union 120 d; the first step alone 40 d)",
        "therapy",
        therapy=(
            mr(C.PREDNISONE, authored=-301, steps=((-300, -261), (-260, -221), (-220, -181))),
            *IS_BASE,
        ),
    ),
    scenario(
        "date-inpatient-open-order",
        "azathioprine: active inpatient MedicationRequest, no end (unknown duration, not run to S)",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            mr(C.AZATHIOPRINE, authored=-200, status="active", category=C.MR_INPATIENT),
        ),
        expect={"therapy": "unknown"},
    ),
    scenario(
        "date-acute-open-order",
        "azathioprine: active MedicationRequest, "
        "courseOfTherapyType acute, no end (unknown duration)",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            mr(C.AZATHIOPRINE, authored=-200, status="active", course=C.MR_ACUTE),
        ),
        expect={"therapy": "unknown"},
    ),
    scenario(
        "date-outpatient-open-order",
        "azathioprine: active community MedicationRequest, no end (runs to S)",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            mr(C.AZATHIOPRINE, authored=-200, status="active", category=C.MR_COMMUNITY),
        ),
    ),
    # ---------------- v1.1 activity at S ----------------
    scenario(
        "act-abatement-after-as-of",
        "lupus nephritis class IV, clinicalStatus resolved, abatementDateTime S+20 (active at S)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -300, clinical="resolved", abatement=20),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "act-abatement-age-past",
        "lupus nephritis class IV, no clinicalStatus, "
        "abatementAge 30 a (patient 35: abated about 5 years before S)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -2500, clinical=None, abatement_age_years=30),),
    ),
    scenario(
        "act-abatement-age-future",
        "lupus nephritis class IV, clinicalStatus resolved, "
        "abatementAge 36 a (patient 35: its low end is after S, active)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -2500, clinical="resolved", abatement_age_years=36),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "act-abatement-string-no-status",
        "lupus nephritis class IV, no clinicalStatus, abatementString (activity unknown)",
        "lupus_nephritis",
        extra=(
            cond(C.LN_CLASS_IV, -900, clinical=None, abatement_string="after induction therapy"),
        ),
        expect={"lupus_nephritis": "review"},
    ),
    scenario(
        "act-abatement-boolean-no-status",
        "lupus nephritis class IV, no clinicalStatus, "
        "abatementBoolean true (STU3-style; activity unknown)",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -900, clinical=None, abatement_boolean=True),),
        expect={"lupus_nephritis": "review"},
    ),
    scenario(
        "act-sle-abatement-boolean",
        "only SLE record: no clinicalStatus, abatementBoolean true (I2 does not need activity)",
        "sle",
        sle=(cond(C.SLE, -2000, clinical=None, abatement_boolean=True),),
    ),
    scenario(
        "act-remission-no-date",
        "lupus nephritis class IV, clinicalStatus remission, no abatement date",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -900, clinical="remission"),),
    ),
    scenario(
        "act-resolved-no-date",
        "lupus nephritis class IV, clinicalStatus resolved, no abatement date",
        "lupus_nephritis",
        extra=(cond(C.LN_CLASS_IV, -900, clinical="resolved"),),
    ),
    scenario(
        "act-cancer-remission-no-date",
        "malignancy, clinicalStatus remission, no abatement date",
        "chronic_illness",
        extra=(cond(C.MALIGNANCY, -900, clinical="remission"),),
    ),
    # ---------------- v1.1 code systems ----------------
    scenario(
        "code-sle-snomed-oid",
        "SLE coded with system urn:oid:2.16.840.1.113883.6.96",
        "sle",
        sle=(cond(C.SLE_SNOMED_OID, -900),),
    ),
    scenario(
        "code-sle-icd10cm-oid",
        "M32.9 with system urn:oid:2.16.840.1.113883.6.90",
        "sle",
        sle=(cond(C.SLE_M329_OID, -900),),
    ),
    scenario(
        "code-sle-icd10cm-blank",
        "ICD-10-CM 'M32 9' (blank for the dot)",
        "sle",
        sle=(cond(C.SLE_M329_BLANK, -900),),
    ),
    scenario(
        "code-dsdna-loinc-oid",
        "anti-dsDNA POS coded with system urn:oid:2.16.840.1.113883.6.1",
        "autoantibody",
        ab=(obs(C.DSDNA_IF_OID, at=-30, interpretation=C.I_POS),),
    ),
    scenario(
        "code-azathioprine-rxnorm-oid",
        "azathioprine coded with system urn:oid:2.16.840.1.113883.6.88",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE_OID, start=-300, end=-30)),
    ),
    scenario(
        "code-sle-who-icd10-m321",
        "only SLE record: WHO ICD-10 M32.1 (http://hl7.org/fhir/sid/icd-10)",
        "sle",
        sle=(cond(C.SLE_WHO_M321, -900),),
    ),
    scenario(
        "code-sle-who-icd10-undotted",
        "only SLE record: WHO ICD-10 'M321' written without the dot",
        "sle",
        sle=(cond(C.SLE_WHO_M321_UNDOTTED, -900),),
    ),
    scenario(
        "code-who-icd10-m320-only",
        "only lupus record: WHO ICD-10 M32.0 (drug-induced)",
        "sle",
        sle=(cond(C.DRUG_INDUCED_WHO_M320, -900),),
        expect={"sle": "not_met"},
    ),
    scenario(
        "code-interp-v2-0078-pos",
        "anti-dsDNA interpretation POS in terminology.hl7.org/CodeSystem/v2-0078",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I2_POS),),
    ),
    scenario(
        "code-interp-v2-0078-old-high",
        "anti-dsDNA interpretation H in the older hl7.org/fhir/v2/0078",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I2_OLD_HIGH),),
    ),
    scenario(
        "code-interp-v2-0078-old-normal",
        "anti-dsDNA interpretation N in the older hl7.org/fhir/v2/0078 (negative)",
        "autoantibody",
        ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I2_OLD_NEG),),
        expect={"autoantibody": "not_met"},
    ),
    # ---------------- v1.1 medications ----------------
    scenario(
        "med-ndc-products",
        "prednisone and azathioprine coded only by NDC package codes",
        "therapy",
        therapy=(
            ms(C.PREDNISONE_NDC, start=-600, end=-100),
            *MMF_ONLY,
            ms(C.AZATHIOPRINE_NDC, start=-300, end=-30),
        ),
    ),
    scenario(
        "med-snomed-substance-medication",
        "azathioprine: Medication resource coded only by SNOMED substance 372574004",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            ms(C.AZATHIOPRINE_SUBSTANCE, start=-300, end=-30, ref="resource"),
        ),
    ),
    scenario(
        "med-text-caps-sig",
        "azathioprine only as text 'AZATHIOPRINE 50MG TABS 1 PO BID'",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            ms(None, text="AZATHIOPRINE 50MG TABS 1 PO BID", start=-300, end=-30),
        ),
    ),
    scenario(
        "med-text-brand-imuran",
        "azathioprine only as brand text 'Imuran 50 mg tablet'",
        "therapy",
        therapy=(*GC_BASE, *MMF_ONLY, ms(None, text="Imuran 50 mg tablet", start=-300, end=-30)),
    ),
    scenario(
        "med-text-salt-mycophenolate-sodium",
        "mycophenolic acid only as salt text 'mycophenolate sodium 360 mg delayed release tablet'",
        "therapy",
        therapy=(
            *GC_BASE,
            ms(
                None,
                text="mycophenolate sodium 360 mg delayed release tablet",
                start=-500,
                end=-200,
            ),
            ms(C.AZATHIOPRINE, start=-300, end=-30),
        ),
    ),
    scenario(
        "med-text-salt-prednisolone",
        "glucocorticoid only as salt text 'prednisolone sodium phosphate 15 mg/5 mL oral solution'",
        "therapy",
        therapy=(
            ms(
                None,
                text="prednisolone sodium phosphate 15 mg/5 mL oral solution",
                start=-600,
                end=-100,
            ),
            *IS_BASE,
        ),
    ),
    scenario(
        "med-anifrolumab-brand-text",
        "Saphnelo (anifrolumab) infusions every 28 d x4 given by text (era 112 d) + MMF",
        "therapy",
        therapy=(
            *GC_BASE,
            *MMF_ONLY,
            *(
                ma(None, at=-400 + 28 * k, text="Saphnelo (anifrolumab-fnia) 300 mg IV infusion")
                for k in range(4)
            ),
        ),
    ),
    scenario(
        "med-inhaled-budesonide-v3-route",
        HC_TOPICAL.replace("hydrocortisone", "budesonide")
        + "ingredient-coded, route v3 IPINHL (inhaled)",
        "therapy",
        therapy=(ms(C.BUDESONIDE, start=-500, end=-100, route=C.ROUTE_V3_INHALATION), *IS_BASE),
        expect=NOT_MET,
    ),
    scenario(
        "med-topical-hc-edqm-route",
        HC_TOPICAL + "route EDQM 20003000 Cutaneous use",
        "therapy",
        therapy=(
            ms(C.HYDROCORTISONE, start=-500, end=-100, route=C.ROUTE_EDQM_CUTANEOUS),
            *IS_BASE,
        ),
        expect=NOT_MET,
    ),
    scenario(
        "med-topical-hc-route-display-only",
        HC_TOPICAL + "route coding with display 'Topical' and no code",
        "therapy",
        therapy=(
            ms(C.HYDROCORTISONE, start=-500, end=-100, route={"coding": [{"display": "Topical"}]}),
            *IS_BASE,
        ),
        expect=NOT_MET,
    ),
    scenario(
        "med-topical-hc-form-snomed",
        HC_TOPICAL + "Medication.form SNOMED 385101003 Ointment",
        "therapy",
        therapy=(
            ms(C.HYDROCORTISONE, start=-500, end=-100, ref="resource", form=C.FORM_OINTMENT),
            *IS_BASE,
        ),
        expect=NOT_MET,
    ),
    # ---------------- v1.1 labs ----------------
    scenario(
        "lab-string-weakly-positive",
        "anti-dsDNA valueString 'weakly positive'",
        _CMP,
        ab=(obs(C.DSDNA_IF, at=-30, value_string="weakly positive"),),
    ),
    scenario(
        "lab-string-low-positive",
        "anti-dsDNA valueString 'Low positive'",
        _CMP,
        ab=(obs(C.DSDNA_IF, at=-30, value_string="Low positive"),),
    ),
    scenario(
        "lab-string-trace",
        "anti-dsDNA valueString 'trace' (equivocal)",
        _CMP,
        ab=(obs(C.DSDNA_IF, at=-30, value_string="trace"),),
        expect={_CMP: "unknown"},
    ),
    scenario(
        "lab-ref-text-only-above",
        "75 IU/mL, referenceRange.text '<30 IU/mL' only",
        _CMP,
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(75, IU), ref_text="<30 IU/mL"),),
    ),
    scenario(
        "lab-ref-text-only-below",
        "20 IU/mL, referenceRange.text '<30 IU/mL' only",
        _CMP,
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(20, IU), ref_text="<30 IU/mL"),),
        expect={_CMP: "not_met"},
    ),
    scenario(
        "lab-ref-text-range-above",
        "45 IU/mL, referenceRange.text '0-30' only",
        _CMP,
        ab=(obs(C.DSDNA_IU, at=-30, quantity=(45, IU), ref_text="0-30"),),
    ),
    scenario(
        "lab-ref-text-titer",
        "titer valueString '1:320', referenceRange.text '<1:80' only",
        _CMP,
        ab=(obs(C.DSDNA_TITER, at=-30, value_string="1:320", ref_text="<1:80"),),
    ),
    _cmp("gt-above", ">", 40, "met", "> with X above the high is above"),
    _cmp("gt-below", ">", 20, "unknown", "> with X below the high is equivocal"),
    _cmp("ge-above", ">=", 31, "met", ">= with X above the high is above"),
    _cmp("ge-at", ">=", 30, "unknown", ">= with X at the high is equivocal"),
    _cmp("lt-at", "<", 30, "not_met", "< with X at the high is at or below"),
    _cmp("le-below", "<=", 20, "not_met", "<= with X below the high is at or below"),
    _cmp("lt-above", "<", 40, "unknown", "< with X above the high is equivocal"),
    scenario(
        "lab-panel-component",
        "panel Observation (code text only) whose component is anti-dsDNA 150 IU/mL, H",
        _CMP,
        ab=(_panel,),
    ),
    scenario(
        "lab-value-cc-text-positive",
        "anti-dsDNA valueCodeableConcept with text 'Positive' only",
        _CMP,
        ab=(obs(C.DSDNA_IF, at=-30, value_text="Positive"),),
    ),
    scenario(
        "lab-value-cc-text-negative",
        "anti-dsDNA valueCodeableConcept with text 'Negative' only",
        _CMP,
        ab=(obs(C.DSDNA_IF, at=-30, value_text="Negative"),),
        expect={_CMP: "not_met"},
    ),
    # ---------------- v1.1 pregnancy / lactation ----------------
    scenario(
        "preg-hcg-equivocal",
        "urine hCG interpretation E (equivocal) 10 d before S",
        "pregnancy_lactation",
        extra=(obs(C.HCG_URINE, at=-10, interpretation=C.I_EQUIVOCAL),),
        expect={"pregnancy_lactation": "review"},
    ),
    scenario(
        "preg-hcg-equivocal-60d",
        "urine hCG interpretation E (equivocal) 60 d before S (outside 30 d)",
        "pregnancy_lactation",
        extra=(obs(C.HCG_URINE, at=-60, interpretation=C.I_EQUIVOCAL),),
    ),
    scenario(
        "preg-hcg-quantitative-no-range",
        "serum hCG 12 mIU/mL, no reference range, 10 d before S",
        "pregnancy_lactation",
        extra=(obs(C.HCG_QUANT, at=-10, quantity=(12, "m[IU]/mL")),),
        expect={"pregnancy_lactation": "review"},
    ),
    scenario(
        "preg-z3201-recent",
        "Z32.01 pregnancy test positive, encounter diagnosis 10 d before S",
        "pregnancy_lactation",
        extra=(
            cond(C.PREG_TEST_POSITIVE_Z3201, -10, clinical=None, category="encounter-diagnosis"),
        ),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-breastfeeding-status-obs",
        "Breastfeeding status 63895-7 = Mother currently breastfeeding, 10 d before S",
        "pregnancy_lactation",
        extra=(
            obs(C.BREASTFEEDING_STATUS, at=-10, value_code=C.LACTATION, category="social-history"),
        ),
        expect={"pregnancy_lactation": "excluded"},
    ),
    scenario(
        "preg-breastfeeding-status-obs-60d",
        "Breastfeeding status 63895-7 = Mother currently breastfeeding, 60 d before S "
        "(outside 30 d)",
        "pregnancy_lactation",
        extra=(
            obs(C.BREASTFEEDING_STATUS, at=-60, value_code=C.LACTATION, category="social-history"),
        ),
    ),
    scenario(
        "preg-suppressed-lactation",
        "active O92.5 suppressed lactation 60 d before S: not lactation (v1.1), but a puerperium "
        "code dates a birth within 365 d: review (possible lactation), never excluded",
        "pregnancy_lactation",
        extra=(cond(C.SUPPRESSED_LACTATION_O925, -60),),
        expect={"pregnancy_lactation": "review"},
    ),
    *(
        scenario(
            f"preg-antenatal-{tag}",
            f"active {code.code} ({what}) 60 d before S: pregnancy, not delivery",
            "pregnancy_lactation",
            extra=(cond(code, -60, category="encounter-diagnosis"),),
            expect={"pregnancy_lactation": "excluded"},
        )
        for tag, code, what in (
            ("z34-supervision", C.SUPERVISION_Z3400, "supervision of normal pregnancy"),
            ("o09-high-risk", C.HIGH_RISK_O0993, "supervision of high risk pregnancy"),
            ("o34-maternal-care", C.MATERNAL_CARE_O34211, "maternal care"),
            ("o47-false-labour", C.FALSE_LABOUR_O479, "false labour"),
        )
    ),
    scenario(
        "preg-delivery-procedure-snomed",
        "Procedure SNOMED 11466000 cesarean section 100 d before S",
        "pregnancy_lactation",
        extra=(proc(C.CESAREAN, -100),),
        expect={"pregnancy_lactation": "review"},
    ),
    scenario(
        "preg-delivery-procedure-pcs",
        "Procedure ICD-10-PCS 10E0XZZ delivery 200 d before S",
        "pregnancy_lactation",
        extra=(proc(C.DELIVERY_PCS, -200),),
        expect={"pregnancy_lactation": "review"},
    ),
    scenario(
        "preg-delivery-procedure-old",
        "Procedure SNOMED cesarean section 500 d before S (outside 365 d)",
        "pregnancy_lactation",
        extra=(proc(C.CESAREAN, -500),),
    ),
    # ---------------- v1.1 E1 / E4 ----------------
    scenario(
        "ln-class-iv-in-text",
        "active lupus nephritis 68815009 with code.text 'Lupus nephritis, ISN/RPS class IV-G'",
        "lupus_nephritis",
        extra=(cond(C.LN, -300, text="Lupus nephritis, ISN/RPS class IV-G"),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "ln-class-v-in-display",
        "active lupus nephritis 68815009 whose coding display names ISN/RPS class V",
        "lupus_nephritis",
        extra=(cond(LN_CLASS_V_DISPLAY, -300),),
        expect={"lupus_nephritis": "excluded"},
    ),
    scenario(
        "chronic-bcc-skin-c44",
        "active C44.91 basal cell carcinoma of skin (not a major chronic illness)",
        "chronic_illness",
        extra=(cond(C.BCC_SKIN_C4491, -200),),
    ),
    scenario(
        "chronic-merkel-c4a",
        "active C4A.9 Merkel cell carcinoma",
        "chronic_illness",
        extra=(cond(C.MERKEL_C4A9, -200),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-carcinoid-c7a",
        "active C7A.00 malignant carcinoid tumour",
        "chronic_illness",
        extra=(cond(C.CARCINOID_C7A00, -200),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-chf-88805009",
        "active chronic congestive heart failure 88805009 (Synthea's code)",
        "chronic_illness",
        extra=(cond(C.CHF_CHRONIC, -1000),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-dialysis-procedure-recent",
        "hemodialysis Procedure 30 d before S (active dialysis)",
        "chronic_illness",
        extra=(proc(C.HEMODIALYSIS, -30),),
        expect={"chronic_illness": "review"},
    ),
    scenario(
        "chronic-dialysis-procedure-old",
        "hemodialysis Procedure 200 d before S (not within 90 d)",
        "chronic_illness",
        extra=(proc(C.HEMODIALYSIS, -200),),
    ),
    scenario(
        "chronic-dialysis-dependence-z992",
        "active Z99.2 dependence on renal dialysis",
        "chronic_illness",
        extra=(cond(C.DIALYSIS_DEPENDENCE_Z992, -400),),
        expect={"chronic_illness": "review"},
    ),
    # ---------------- v1.1 patients ----------------
    scenario(
        "age-deceased-boolean",
        "deceasedBoolean true, no date",
        "age",
        deceased_boolean=True,
        expect={"age": "not_met"},
    ),
    scenario(
        "misc-record-without-patient",
        "full candidate; one more SLE Condition whose "
        "subject has no Patient resource (counted in run.json, no patient row)",
        "all",
        extra=(_orphan_condition,),
    ),
)


SCENARIOS = SCENARIOS + V11_SCENARIOS


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in SCENARIOS}
