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

    @property
    def patient_id(self) -> str:
        return f"s-{self.name}"

    def answers(self, as_of: date) -> dict[str, str]:
        out = dict(self.expected)
        if "age" not in self.expected:
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
    scenario("eligible-statements", "SLE, prednisone + MMF + azathioprine statements, "
             "anti-dsDNA high", "all"),
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
    scenario("eligible-sle-undated", "SLE Condition with no onset and no recordedDate", "sle",
             sle=(cond(C.SLE, None, recorded=None),)),
    scenario("eligible-deceased-after-as-of", "deceasedDateTime after S (alive at S)", "age",
             deceased=30),
    scenario("eligible-preliminary-lab", "anti-dsDNA positive with status preliminary",
             "autoantibody",
             ab=(obs(C.DSDNA_IU, at=-40, status="preliminary", quantity=(90, IU), ref_high=30,
                     ref_unit=IU),)),
    # ---------------- I1 age ----------------
    scenario("age-17", "17 years old at S (18th birthday 60 days after S)", "age",
             birth=lambda s: (fb.years_before(s, 18) + timedelta(days=60)).isoformat()),
    scenario("age-missing-birthdate", "no Patient.birthDate", "age", birth=lambda s: None),
    scenario("age-partial-year-adult", "birthDate 'YYYY' 40 years before S", "age",
             birth=lambda s: str(s.year - 40)),
    scenario("age-partial-year-straddle", "birthDate 'YYYY' whose Jan 1 gives 18 and Dec 31 "
             "gives 17 at S", "age", birth=_straddle_birth),
    scenario("age-partial-month-adult", "birthDate 'YYYY-MM' 30 years before S", "age",
             birth=lambda s: fb.years_before(s, 30).isoformat()[:7]),
    scenario("age-deceased-before-as-of", "deceasedDateTime 30 days before S", "age",
             deceased=-30),
    # ---------------- I2 SLE ----------------
    scenario("sle-icd10-m3214-dotted", "ICD-10-CM M32.14 (dotted); also active lupus "
             "nephritis without severity", "sle",
             sle=(cond(C.SLE_M3214, -900),), expect={"lupus_nephritis": "review"}),
    scenario("sle-icd10-m329-undotted", "ICD-10-CM 'M329' written without the dot", "sle",
             sle=(cond(C.SLE_M329_UNDOTTED, -900),)),
    scenario("sle-icd10-m329", "ICD-10-CM M32.9", "sle", sle=(cond(C.SLE_M329, -900),)),
    scenario("sle-icd9-7100", "ICD-9-CM 710.0", "sle", sle=(cond(C.SLE_ICD9, -3000),)),
    scenario("sle-organ-involvement", "SNOMED SLE descendant 239887007", "sle",
             sle=(cond(C.SLE_ORGAN, -900),)),
    scenario("sle-only-unspecified-lupus", "only SNOMED 200936003 Lupus erythematosus "
             "(Synthea style)", "sle", sle=(cond(C.LUPUS_UNSPECIFIED, -900),),
             expect={"sle": "unknown"}),
    scenario("sle-only-drug-induced", "only drug-induced lupus M32.0", "sle",
             sle=(cond(C.DRUG_INDUCED_M320, -900),), expect={"sle": "not_met"}),
    scenario("sle-only-discoid", "only discoid lupus L93.0", "sle",
             sle=(cond(C.DISCOID_L930, -900),), expect={"sle": "not_met"}),
    scenario("sle-provisional", "SLE with verificationStatus provisional", "sle",
             sle=(cond(C.SLE, -900, verification="provisional"),), expect={"sle": "unknown"}),
    scenario("sle-differential", "SLE with verificationStatus differential", "sle",
             sle=(cond(C.SLE, -900, verification="differential"),), expect={"sle": "unknown"}),
    scenario("sle-refuted-plus-unspecified", "SLE refuted + 200936003 confirmed", "sle",
             sle=(cond(C.SLE, -900, verification="refuted"), cond(C.LUPUS_UNSPECIFIED, -900)),
             expect={"sle": "unknown"}),
    scenario("sle-entered-in-error-only", "SLE entered-in-error only", "sle",
             sle=(cond(C.SLE, -900, verification="entered-in-error", clinical=None),),
             expect={"sle": "not_met"}),
    scenario("sle-after-as-of", "SLE onset and recordedDate 20 days after S only", "sle",
             sle=(cond(C.SLE, 20),), expect={"sle": "not_met"}),
    scenario("sle-none", "no lupus record at all (otherwise a full candidate)", "sle",
             sle=(), expect={"sle": "not_met"}),
    # ---------------- I3 therapy ----------------
    scenario("therapy-one-immunosuppressant", "prednisone + MMF only", "therapy",
             therapy=(*GC_BASE, *MMF_ONLY), expect={"therapy": "not_met"}),
    scenario("therapy-no-glucocorticoid", "MMF + azathioprine, no glucocorticoid", "therapy",
             therapy=IS_BASE, expect={"therapy": "not_met"}),
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
    scenario("therapy-83-days", "prednisone: one dispense of 83 days supply", "therapy",
             therapy=(md(C.PREDNISONE, handed=-300, days_supply=83), *IS_BASE),
             expect={"therapy": "not_met"}),
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
    scenario("therapy-hcq-second-agent", "prednisone + MMF + hydroxychloroquine", "therapy",
             therapy=(*GC_BASE, *MMF_ONLY, ms(C.HYDROXYCHLOROQUINE, start=-700, end=-10)),
             expect={"therapy": "not_met"}),
    scenario("therapy-hc-cream-only-gc", "hydrocortisone topical cream is the only "
             "glucocorticoid", "therapy", therapy=(GC_CREAM, *IS_BASE),
             expect={"therapy": "not_met"}),
    scenario("therapy-inhaled-budesonide-only-gc", "inhaled budesonide is the only "
             "glucocorticoid", "therapy", therapy=(GC_INHALED, *IS_BASE),
             expect={"therapy": "not_met"}),
    scenario("therapy-unknown-duration-statement", "azathioprine MedicationStatement with "
             "effectiveDateTime only (unknown duration)", "therapy",
             therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, at=-200)),
             expect={"therapy": "unknown"}),
    scenario("therapy-unknown-duration-request", "azathioprine MedicationRequest completed, "
             "authoredOn only (unknown end)", "therapy",
             therapy=(*GC_BASE, *MMF_ONLY, mr(C.AZATHIOPRINE, authored=-200)),
             expect={"therapy": "unknown"}),
    *(
        scenario(f"therapy-request-{tag}", f"second immunosuppressant only in a "
                 f"MedicationRequest that does not count ({tag})", "therapy",
                 therapy=(*GC_BASE, *MMF_ONLY,
                          mr(C.AZATHIOPRINE, authored=-300, bounds=(-300, -100), **kw)),
                 expect={"therapy": "not_met"})
        for tag, kw in (
            ("cancelled", {"status": "cancelled"}),
            ("draft", {"status": "draft"}),
            ("entered-in-error", {"status": "entered-in-error"}),
            ("do-not-perform", {"do_not_perform": True}),
            ("proposal", {"intent": "proposal"}),
        )
    ),
    *(
        scenario(f"therapy-statement-{status}", f"second immunosuppressant only in a "
                 f"MedicationStatement with status {status}", "therapy",
                 therapy=(*GC_BASE, *MMF_ONLY,
                          ms(C.AZATHIOPRINE, start=-300, end=-100, status=status)),
                 expect={"therapy": "not_met"})
        for status in ("not-taken", "entered-in-error", "intended")
    ),
    scenario("therapy-after-as-of", "azathioprine statement starting 10 days after S",
             "therapy", therapy=(*GC_BASE, *MMF_ONLY, ms(C.AZATHIOPRINE, start=10, end=200)),
             expect={"therapy": "not_met"}),
    scenario("therapy-cyclophosphamide-single-dose", "one cyclophosphamide infusion "
             "(30 d coverage)", "therapy",
             therapy=(*GC_BASE, *MMF_ONLY, ma(C.CYCLOPHOSPHAMIDE, at=-200)),
             expect={"therapy": "not_met"}),
    # ---------------- I4 autoantibodies ----------------
    scenario("ab-interpretation-pos", "anti-dsDNA Crithidia IF with interpretation POS only",
             "autoantibody", ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I_POS),)),
    scenario("ab-interpretation-high-overrides-value", "interpretation H on a value below "
             "the reference high (interpretation rule applies first)", "autoantibody",
             ab=(obs(C.DSDNA_IU, at=-30, quantity=(10, IU), ref_high=30, ref_unit=IU,
                     interpretation=C.I_HIGH),)),
    scenario("ab-interpretation-neg", "anti-dsDNA interpretation NEG in L", "autoantibody",
             ab=(obs(C.DSDNA_IU, at=-30, quantity=(10, IU), ref_high=30, ref_unit=IU,
                     interpretation=C.I_NEG),), expect={"autoantibody": "not_met"}),
    scenario("ab-interpretation-ind", "anti-dsDNA interpretation IND (equivocal)",
             "autoantibody", ab=(obs(C.DSDNA_IF, at=-30, interpretation=C.I_IND),),
             expect={"autoantibody": "unknown"}),
    scenario("ab-value-code-positive", "anti-nucleosome valueCodeableConcept SNOMED Positive",
             "autoantibody", ab=(obs(C.NUCLEOSOME, at=-30, value_code=C.POSITIVE),)),
    scenario("ab-value-code-negative", "anti-Sm valueCodeableConcept SNOMED Negative",
             "autoantibody", ab=(obs(C.SM_IF, at=-30, value_code=C.NEGATIVE),),
             expect={"autoantibody": "not_met"}),
    scenario("ab-string-detected", "valueString 'Detected'", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-30, value_string="Detected"),)),
    scenario("ab-string-not-detected", "valueString 'not detected'", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-30, value_string="not detected"),),
             expect={"autoantibody": "not_met"}),
    scenario("ab-string-borderline", "valueString 'borderline'", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-30, value_string="borderline"),),
             expect={"autoantibody": "unknown"}),
    scenario("ab-quantity-above-ref", "75 IU/mL, reference high 30, no interpretation",
             "autoantibody", ab=(obs(C.DSDNA_IU, at=-30, quantity=(75, IU), ref_high=30,
                                     ref_unit=IU),)),
    scenario("ab-quantity-at-ref", "30 IU/mL, reference high 30 (at = negative)",
             "autoantibody", ab=(obs(C.DSDNA_IU, at=-30, quantity=(30, IU), ref_high=30,
                                     ref_unit=IU),), expect={"autoantibody": "not_met"}),
    scenario("ab-quantity-gt-comparator", "'>30' IU/mL, reference high 30 (> counts as "
             "above)", "autoantibody",
             ab=(obs(C.DSDNA_IU, at=-30, quantity=(30, IU), comparator=">", ref_high=30,
                     ref_unit=IU),)),
    scenario("ab-titer-ratio-positive", "titer valueRatio 1/320, reference 1:80",
             "autoantibody", ab=(obs(C.DSDNA_TITER, at=-30, ratio=(1, 320), ref_high=80,
                                     ref_text="1:80"),)),
    scenario("ab-titer-string-negative", "titer valueString '1:40', reference 1:80",
             "autoantibody", ab=(obs(C.DSDNA_TITER, at=-30, value_string="1:40", ref_high=80,
                                     ref_text="1:80"),), expect={"autoantibody": "not_met"}),
    scenario("ab-number-no-range", "anti-Sm 2.5 with no reference range or interpretation "
             "(equivocal)", "autoantibody",
             ab=(obs(C.SM_UNITS, at=-30, quantity=(2.5, "U/mL")),),
             expect={"autoantibody": "unknown"}),
    scenario("ab-positive-older-than-lookback", "only positive 400 days before S",
             "autoantibody", ab=(obs(C.DSDNA_IF, at=-400, interpretation=C.I_POS),),
             expect={"autoantibody": "unknown"}),
    scenario("ab-negative-in-lookback-positive-before", "negative in L, positive 500 days "
             "before S (not 'never positive')", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-100, interpretation=C.I_NEG),
                 obs(C.DSDNA_IF, at=-500, interpretation=C.I_POS)),
             expect={"autoantibody": "unknown"}),
    scenario("ab-negative-only", "two negative tests in L, never positive", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-100, interpretation=C.I_NEG),
                 obs(C.SM_IF, at=-200, value_code=C.NEGATIVE)),
             expect={"autoantibody": "not_met"}),
    scenario("ab-none", "no autoantibody test at all", "autoantibody", ab=(),
             expect={"autoantibody": "unknown"}),
    scenario("ab-cancelled-positive-final-negative", "positive with status cancelled "
             "(ignored) + final negative", "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-30, status="cancelled", interpretation=C.I_POS),
                 obs(C.DSDNA_IF, at=-60, interpretation=C.I_NEG)),
             expect={"autoantibody": "not_met"}),
    scenario("ab-entered-in-error-positive", "only positive is entered-in-error (ignored)",
             "autoantibody",
             ab=(obs(C.DSDNA_IF, at=-30, status="entered-in-error", interpretation=C.I_POS),),
             expect={"autoantibody": "unknown"}),
    scenario("ab-sm-rnp-positive", "Sm/RNP positive (counts as anti-Sm)", "autoantibody",
             ab=(obs(C.SM_RNP, at=-30, interpretation=C.I_POS),)),
    scenario("ab-sm-units-positive", "anti-Sm 45 U/mL above reference high 20",
             "autoantibody", ab=(obs(C.SM_UNITS, at=-30, quantity=(45, "U/mL"), ref_high=20,
                                     ref_unit="U/mL"),)),
    scenario("ab-positive-after-as-of", "positive 10 days after S (ignored) + negative in L",
             "autoantibody", ab=(obs(C.DSDNA_IF, at=10, interpretation=C.I_POS),
                                 obs(C.DSDNA_IF, at=-20, interpretation=C.I_NEG)),
             expect={"autoantibody": "not_met"}),
    # ---------------- E1 lupus nephritis ----------------
    scenario("ln-active-class-iv", "active lupus nephritis WHO class IV", "lupus_nephritis",
             extra=(cond(C.LN_CLASS_IV, -300),), expect={"lupus_nephritis": "excluded"}),
    scenario("ln-active-severe", "active lupus nephritis with severity 24484000",
             "lupus_nephritis", extra=(cond(C.LN, -300, severity=C.SEVERE),),
             expect={"lupus_nephritis": "excluded"}),
    scenario("ln-active-class-ii", "active lupus nephritis class II, no severity",
             "lupus_nephritis", extra=(cond(C.LN_CLASS_II, -300),),
             expect={"lupus_nephritis": "review"}),
    scenario("ln-resolved-class-iv", "class IV, clinicalStatus resolved, abated 200 d "
             "before S", "lupus_nephritis",
             extra=(cond(C.LN_CLASS_IV, -900, clinical="resolved", abatement=-200),)),
    scenario("ln-inactive-class-iv", "class IV, clinicalStatus inactive", "lupus_nephritis",
             extra=(cond(C.LN_CLASS_IV, -900, clinical="inactive"),)),
    scenario("ln-refuted-class-iv", "class IV, verificationStatus refuted",
             "lupus_nephritis", extra=(cond(C.LN_CLASS_IV, -300, verification="refuted"),)),
    scenario("ln-no-status-abated", "class IV, no clinicalStatus, abatement before S "
             "(not active)", "lupus_nephritis",
             extra=(cond(C.LN_CLASS_IV, -900, clinical=None, abatement=-100,
                         category="encounter-diagnosis"),)),
    scenario("ln-no-status-open", "class IV, no clinicalStatus, no abatement (active)",
             "lupus_nephritis",
             extra=(cond(C.LN_CLASS_IV, -300, clinical=None, category="encounter-diagnosis"),),
             expect={"lupus_nephritis": "excluded"}),
    # ---------------- E2 CNS lupus / neuro ----------------
    scenario("cns-active-cns-lupus", "active SLE encephalitis", "cns_lupus",
             extra=(cond(C.CNS_LUPUS, -200),), expect={"cns_lupus": "excluded"}),
    scenario("cns-seizure-recent", "active seizure recorded 100 d before S", "cns_lupus",
             extra=(cond(C.SEIZURE, -100),), expect={"cns_lupus": "review"}),
    scenario("cns-seizure-inactive", "seizure 100 d before S, clinicalStatus inactive",
             "cns_lupus", extra=(cond(C.SEIZURE, -100, clinical="inactive"),)),
    scenario("cns-psychosis-old", "active psychosis recorded 500 d before S", "cns_lupus",
             extra=(cond(C.PSYCHOSIS, -500),)),
    scenario("cns-headache-recent", "active headache recorded 30 d before S", "cns_lupus",
             extra=(cond(C.HEADACHE, -30),), expect={"cns_lupus": "review"}),
    scenario("cns-headache-120d", "active headache recorded 120 d before S", "cns_lupus",
             extra=(cond(C.HEADACHE, -120),)),
    # ---------------- E3 pregnancy / lactation ----------------
    scenario("preg-active-recent", "active pregnancy, onset 100 d before S",
             "pregnancy_lactation", extra=(cond(C.PREGNANCY, -100),),
             expect={"pregnancy_lactation": "excluded"}),
    scenario("preg-onset-400d", "active pregnancy with onset 400 d before S (stale)",
             "pregnancy_lactation", extra=(cond(C.PREGNANCY, -400),)),
    scenario("preg-status-pregnant", "pregnancy-status 82810-3 = Pregnancy 10 d before S",
             "pregnancy_lactation",
             extra=(obs(C.PREGNANCY_STATUS, at=-10, value_code=C.PREGNANCY,
                        category="social-history"),),
             expect={"pregnancy_lactation": "excluded"}),
    scenario("preg-hcg-positive", "urine hCG positive 10 d before S", "pregnancy_lactation",
             extra=(obs(C.HCG_URINE, at=-10, value_code=C.POSITIVE, interpretation=C.I_POS),),
             expect={"pregnancy_lactation": "excluded"}),
    scenario("preg-hcg-positive-60d", "urine hCG positive 60 d before S (outside 30 d)",
             "pregnancy_lactation",
             extra=(obs(C.HCG_URINE, at=-60, value_code=C.POSITIVE, interpretation=C.I_POS),)),
    scenario("preg-lactation", "active lactation (currently breastfeeding)",
             "pregnancy_lactation", extra=(cond(C.LACTATION, -60),),
             expect={"pregnancy_lactation": "excluded"}),
    scenario("preg-delivery-recent", "delivery (O80 encounter diagnosis) 200 d before S",
             "pregnancy_lactation",
             extra=(cond(C.DELIVERY_O80, -200, clinical=None,
                         category="encounter-diagnosis"),),
             expect={"pregnancy_lactation": "review"}),
    scenario("preg-male-spurious-code", "male with an active pregnancy code",
             "pregnancy_lactation", gender="male", extra=(cond(C.PREGNANCY, -100),)),
    # ---------------- E4 chronic illness ----------------
    scenario("chronic-heart-failure", "active heart failure (SNOMED)", "chronic_illness",
             extra=(cond(C.HEART_FAILURE, -1000),), expect={"chronic_illness": "review"}),
    scenario("chronic-heart-failure-icd", "active heart failure I50.9", "chronic_illness",
             extra=(cond(C.HEART_FAILURE_I509, -1000),), expect={"chronic_illness": "review"}),
    scenario("chronic-malignancy", "active malignant neoplastic disease", "chronic_illness",
             extra=(cond(C.MALIGNANCY, -200),), expect={"chronic_illness": "review"}),
    scenario("chronic-eskd", "active end-stage renal disease", "chronic_illness",
             extra=(cond(C.ESKD, -700),), expect={"chronic_illness": "review"}),
    scenario("chronic-hiv", "active HIV disease B20", "chronic_illness",
             extra=(cond(C.HIV_B20, -2000),), expect={"chronic_illness": "review"}),
    scenario("chronic-resolved-cancer", "breast cancer resolved 1000 d before S",
             "chronic_illness",
             extra=(cond(C.BREAST_CANCER, -2500, clinical="resolved", abatement=-1000),)),
    # ---------------- several answers at once ----------------
    scenario("review-multiple-unknowns", "unspecified lupus only, no autoantibody test, "
             "headache 20 d ago", "mixed", sle=(cond(C.LUPUS_UNSPECIFIED, -900),), ab=(),
             extra=(cond(C.MIGRAINE, -20),),
             expect={"sle": "unknown", "autoantibody": "unknown", "cns_lupus": "review"}),
)


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in SCENARIOS}
