"""Small builders of FHIR R4 resource dicts.

Every date is given as a day offset from the screening date S (negative = before S), so a
scenario means the same thing for any ``as_of``. Dates are written date-only (no time zone
to misread).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cohort.synth import codes as C
from fhir_cohort.synth.codes import Code

Resource = dict[str, Any]
# A date: a day offset from S, or a function of S giving a FHIR date string (partial dates).
When = int | Callable[[date], str]


@dataclass
class Ctx:
    """Per-patient build context: patient id, screening date and a resource-id counter."""

    pid: str
    as_of: date
    _n: int = field(default=0)

    def rid(self, tag: str) -> str:
        self._n += 1
        return f"{self.pid}-{tag}{self._n}"

    def day(self, offset: int) -> str:
        return (self.as_of + timedelta(days=offset)).isoformat()

    def when(self, w: When) -> str:
        return self.day(w) if isinstance(w, int) else w(self.as_of)

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}


def years_before(d: date, years: int) -> date:
    """``d`` moved back by whole years (29 Feb -> 28 Feb)."""
    y = d.year - years
    day = min(d.day, calendar.monthrange(y, d.month)[1])
    return date(y, d.month, day)


def patient(
    ctx: Ctx,
    *,
    gender: str,
    birth_date: str | None,
    deceased: str | None = None,
    deceased_boolean: bool | None = None,
    family: str = "Synthetic",
    given: str = "Pat",
) -> Resource:
    r: Resource = {
        "resourceType": "Patient",
        "id": ctx.pid,
        "meta": {"source": "fhir-cohort-synth"},
        "identifier": [{"system": "urn:fhir-cohort:synth", "value": ctx.pid}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
    }
    if birth_date is not None:
        r["birthDate"] = birth_date
    if deceased is not None:
        r["deceasedDateTime"] = deceased
    elif deceased_boolean is not None:
        r["deceasedBoolean"] = deceased_boolean
    return r


def condition(
    ctx: Ctx,
    code: Code | Sequence[Code],
    *,
    onset: When | None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    abatement: When | None = None,
    recorded: When | str | None = "onset",
    severity: Code | None = None,
    category: str = "problem-list-item",
    text: str | None = None,
    abatement_age_years: int | None = None,
    abatement_string: str | None = None,
    abatement_boolean: bool | None = None,
    subject: str | None = None,
) -> Resource:
    """A Condition; ``recorded`` defaults to the onset day so date readings agree.

    ``subject`` names another patient id (a record whose patient may not exist).
    """
    codings = [code] if isinstance(code, Code) else list(code)
    r: Resource = {
        "resourceType": "Condition",
        "id": ctx.rid("c"),
        "subject": {"reference": f"Patient/{subject}"} if subject else ctx.subject,
        "category": [
            {"coding": [{"system": C.COND_CATEGORY, "code": category}]},
        ],
        "code": {"coding": [c.coding() for c in codings], "text": text or codings[0].display},
    }
    if clinical is not None:
        r["clinicalStatus"] = {"coding": [{"system": C.COND_CLINICAL, "code": clinical}]}
    if verification is not None:
        r["verificationStatus"] = {
            "coding": [{"system": C.COND_VERIFICATION, "code": verification}]
        }
    if severity is not None:
        r["severity"] = severity.concept()
    if onset is not None:
        r["onsetDateTime"] = ctx.when(onset)
    if abatement is not None:
        r["abatementDateTime"] = ctx.when(abatement)
    elif abatement_age_years is not None:
        r["abatementAge"] = {
            "value": abatement_age_years,
            "unit": "years",
            "system": C.UCUM,
            "code": "a",
        }
    elif abatement_string is not None:
        r["abatementString"] = abatement_string
    elif abatement_boolean is not None:
        # abatementBoolean is an R4 choice the R4B models dropped; kept here as hospitals send it.
        r["abatementBoolean"] = abatement_boolean
    rec = onset if recorded == "onset" else recorded
    if rec is not None and not isinstance(rec, str):
        r["recordedDate"] = ctx.when(rec)
    return r


def med_concept(code: Code | None, text: str | None = None) -> dict[str, Any]:
    if code is None:
        return {"text": text or ""}
    return code.concept(text)


def _days(n: int) -> dict[str, Any]:
    return {"value": n, "unit": "days", "system": C.UCUM, "code": "d"}


def medication(
    ctx: Ctx, code: Code, *, rid: str | None = None, form: Code | None = None
) -> Resource:
    r: Resource = {
        "resourceType": "Medication",
        "id": rid or ctx.rid("m"),
        "code": code.concept(),
    }
    if form is not None:
        r["form"] = form.concept()
    return r


def concept_of(c: Code | dict[str, Any]) -> dict[str, Any]:
    """A CodeableConcept from a Code (coding + display as text) or as given."""
    return c.concept(c.display) if isinstance(c, Code) else c


def _set_medication(
    r: Resource,
    ctx: Ctx,
    code: Code | None,
    text: str | None,
    ref: str | None,
    form: Code | None = None,
) -> list[Resource]:
    """Encode the medication inline, as a contained Medication or as a separate resource."""
    extra: list[Resource] = []
    if ref == "contained":
        assert code is not None
        med = medication(ctx, code, rid="med1")
        r["contained"] = [med]
        r["medicationReference"] = {"reference": "#med1"}
    elif ref == "resource":
        assert code is not None
        med = medication(ctx, code, form=form)
        extra.append(med)
        r["medicationReference"] = {"reference": f"Medication/{med['id']}"}
    else:
        r["medicationCodeableConcept"] = med_concept(code, text)
    return extra


def med_statement(
    ctx: Ctx,
    code: Code | None,
    *,
    start: When | None = None,
    end: When | None = None,
    at: int | None = None,
    status: str = "completed",
    text: str | None = None,
    ref: str | None = None,
    bounds_days: int | None = None,
    route: Code | dict[str, Any] | None = None,
    form: Code | None = None,
) -> list[Resource]:
    r: Resource = {
        "resourceType": "MedicationStatement",
        "id": ctx.rid("ms"),
        "status": status,
        "subject": ctx.subject,
    }
    extra = _set_medication(r, ctx, code, text, ref, form)
    if at is not None:
        r["effectiveDateTime"] = ctx.day(at)
    elif start is not None:
        period = {"start": ctx.when(start)}
        if end is not None:
            period["end"] = ctx.when(end)
        r["effectivePeriod"] = period
    dosage: dict[str, Any] = {}
    if bounds_days is not None:
        dosage["timing"] = {"repeat": {"boundsDuration": _days(bounds_days)}}
    if route is not None:
        dosage["route"] = concept_of(route)
    if dosage:
        r["dosage"] = [dosage]
    return [*extra, r]


def med_request(
    ctx: Ctx,
    code: Code | None,
    *,
    authored: int,
    status: str = "completed",
    intent: str = "order",
    bounds: tuple[int, int] | None = None,
    validity_start: int | None = None,
    supply_days: int | None = None,
    repeats: int | None = None,
    do_not_perform: bool | None = None,
    text: str | None = None,
    ref: str | None = None,
    steps: Sequence[tuple[int, int]] = (),
    category: Code | None = None,
    course: Code | None = None,
) -> list[Resource]:
    """``bounds`` gives one dosageInstruction; ``steps`` one per (start, end) (a taper)."""
    r: Resource = {
        "resourceType": "MedicationRequest",
        "id": ctx.rid("mr"),
        "status": status,
        "intent": intent,
        "subject": ctx.subject,
        "authoredOn": ctx.day(authored),
    }
    extra = _set_medication(r, ctx, code, text, ref)
    if do_not_perform is not None:
        r["doNotPerform"] = do_not_perform
    if category is not None:
        r["category"] = [category.concept()]
    if course is not None:
        r["courseOfTherapyType"] = course.concept()
    periods = [bounds] if bounds is not None else list(steps)
    if periods:
        r["dosageInstruction"] = [
            {
                "sequence": k + 1,
                "timing": {
                    "repeat": {
                        "boundsPeriod": {"start": ctx.day(lo), "end": ctx.day(hi)},
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                    }
                },
            }
            for k, (lo, hi) in enumerate(periods)
        ]
        if bounds is not None:
            del r["dosageInstruction"][0]["sequence"]
    disp: dict[str, Any] = {}
    if validity_start is not None:
        disp["validityPeriod"] = {"start": ctx.day(validity_start)}
    if repeats is not None:
        disp["numberOfRepeatsAllowed"] = repeats
    if supply_days is not None:
        disp["expectedSupplyDuration"] = _days(supply_days)
    if disp:
        r["dispenseRequest"] = disp
    return [*extra, r]


def dispense(
    ctx: Ctx,
    code: Code | None,
    *,
    handed: int,
    days_supply: int,
    status: str = "completed",
    text: str | None = None,
    ref: str | None = None,
) -> list[Resource]:
    r: Resource = {
        "resourceType": "MedicationDispense",
        "id": ctx.rid("md"),
        "status": status,
        "subject": ctx.subject,
        "whenHandedOver": ctx.day(handed),
        "daysSupply": {"value": days_supply, "unit": "day", "system": C.UCUM, "code": "d"},
    }
    extra = _set_medication(r, ctx, code, text, ref)
    return [*extra, r]


def administration(
    ctx: Ctx,
    code: Code | None,
    *,
    at: int,
    status: str = "completed",
    ref: str | None = None,
    text: str | None = None,
) -> list[Resource]:
    r: Resource = {
        "resourceType": "MedicationAdministration",
        "id": ctx.rid("ma"),
        "status": status,
        "subject": ctx.subject,
        "effectiveDateTime": ctx.day(at),
    }
    extra = _set_medication(r, ctx, code, text, ref)
    return [*extra, r]


def observation(
    ctx: Ctx,
    code: Code | dict[str, Any],
    *,
    at: int,
    status: str = "final",
    quantity: tuple[float, str] | None = None,
    comparator: str | None = None,
    value_code: Code | None = None,
    value_string: str | None = None,
    ratio: tuple[int, int] | None = None,
    interpretation: Code | None = None,
    ref_high: float | None = None,
    ref_unit: str | None = None,
    ref_text: str | None = None,
    category: str = "laboratory",
    value_text: str | None = None,
    components: Sequence[dict[str, Any]] = (),
) -> Resource:
    """An Observation; ``code`` may be a whole CodeableConcept (e.g. a panel named by text)."""
    r: Resource = {
        "resourceType": "Observation",
        "id": ctx.rid("o"),
        "status": status,
        "category": [{"coding": [{"system": C.OBS_CATEGORY, "code": category}]}],
        "code": code.concept() if isinstance(code, Code) else code,
        "subject": ctx.subject,
        "effectiveDateTime": ctx.day(at),
    }
    if quantity is not None:
        q: dict[str, Any] = {
            "value": quantity[0],
            "unit": quantity[1],
            "system": C.UCUM,
            "code": quantity[1],
        }
        if comparator is not None:
            q["comparator"] = comparator
        r["valueQuantity"] = q
    elif value_code is not None:
        r["valueCodeableConcept"] = value_code.concept()
    elif value_string is not None:
        r["valueString"] = value_string
    elif ratio is not None:
        r["valueRatio"] = {"numerator": {"value": ratio[0]}, "denominator": {"value": ratio[1]}}
    elif value_text is not None:
        r["valueCodeableConcept"] = {"text": value_text}
    if interpretation is not None:
        r["interpretation"] = [interpretation.concept()]
    if ref_high is not None or ref_text is not None:
        rr: dict[str, Any] = {}
        if ref_high is not None:
            high: dict[str, Any] = {"value": ref_high}
            if ref_unit:
                high.update({"unit": ref_unit, "system": C.UCUM, "code": ref_unit})
            rr["high"] = high
        if ref_text is not None:
            rr["text"] = ref_text
        r["referenceRange"] = [rr]
    if components:
        r["component"] = list(components)
    return r


def encounter(ctx: Ctx, *, at: int) -> Resource:
    return {
        "resourceType": "Encounter",
        "id": ctx.rid("e"),
        "status": "finished",
        "class": C.AMBULATORY.coding(),
        "type": [C.CHECKUP.concept()],
        "subject": ctx.subject,
        "period": {"start": ctx.day(at), "end": ctx.day(at)},
    }


def procedure(ctx: Ctx, code: Code, *, at: int) -> Resource:
    """A completed Procedure on day ``at``."""
    return {
        "resourceType": "Procedure",
        "id": ctx.rid("p"),
        "status": "completed",
        "code": code.concept(),
        "subject": ctx.subject,
        "performedDateTime": ctx.day(at),
    }
