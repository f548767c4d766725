"""Small builders of FHIR R4 resource dicts.

Every date is given as a day offset from the screening date S (negative = before S), so a
scenario means the same thing for any ``as_of``. Dates are written date-only (no time zone
to misread).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cohort.synth import codes as C
from fhir_cohort.synth.codes import Code

Resource = dict[str, Any]


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
    return r


def condition(
    ctx: Ctx,
    code: Code | Sequence[Code],
    *,
    onset: int | None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    abatement: int | None = None,
    recorded: int | str | None = "onset",
    severity: Code | None = None,
    category: str = "problem-list-item",
) -> Resource:
    """A Condition; ``recorded`` defaults to the onset day so date readings agree."""
    codings = [code] if isinstance(code, Code) else list(code)
    r: Resource = {
        "resourceType": "Condition",
        "id": ctx.rid("c"),
        "subject": ctx.subject,
        "category": [
            {"coding": [{"system": C.COND_CATEGORY, "code": category}]},
        ],
        "code": {"coding": [c.coding() for c in codings], "text": codings[0].display},
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
        r["onsetDateTime"] = ctx.day(onset)
    if abatement is not None:
        r["abatementDateTime"] = ctx.day(abatement)
    rec = onset if recorded == "onset" else recorded
    if isinstance(rec, int):
        r["recordedDate"] = ctx.day(rec)
    return r


def med_concept(code: Code | None, text: str | None = None) -> dict[str, Any]:
    if code is None:
        return {"text": text or ""}
    return code.concept(text)


def _days(n: int) -> dict[str, Any]:
    return {"value": n, "unit": "days", "system": C.UCUM, "code": "d"}


def medication(ctx: Ctx, code: Code, *, rid: str | None = None) -> Resource:
    return {
        "resourceType": "Medication",
        "id": rid or ctx.rid("m"),
        "code": code.concept(),
    }


def _set_medication(
    r: Resource, ctx: Ctx, code: Code | None, text: str | None, ref: str | None
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
        med = medication(ctx, code)
        extra.append(med)
        r["medicationReference"] = {"reference": f"Medication/{med['id']}"}
    else:
        r["medicationCodeableConcept"] = med_concept(code, text)
    return extra


def med_statement(
    ctx: Ctx,
    code: Code | None,
    *,
    start: int | None = None,
    end: int | None = None,
    at: int | None = None,
    status: str = "completed",
    text: str | None = None,
    ref: str | None = None,
    bounds_days: int | None = None,
    route: Code | None = None,
) -> list[Resource]:
    r: Resource = {
        "resourceType": "MedicationStatement",
        "id": ctx.rid("ms"),
        "status": status,
        "subject": ctx.subject,
    }
    extra = _set_medication(r, ctx, code, text, ref)
    if at is not None:
        r["effectiveDateTime"] = ctx.day(at)
    elif start is not None:
        period = {"start": ctx.day(start)}
        if end is not None:
            period["end"] = ctx.day(end)
        r["effectivePeriod"] = period
    dosage: dict[str, Any] = {}
    if bounds_days is not None:
        dosage["timing"] = {"repeat": {"boundsDuration": _days(bounds_days)}}
    if route is not None:
        dosage["route"] = route.concept(route.display)
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
) -> list[Resource]:
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
    if bounds is not None:
        r["dosageInstruction"] = [
            {
                "timing": {
                    "repeat": {
                        "boundsPeriod": {"start": ctx.day(bounds[0]), "end": ctx.day(bounds[1])},
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                    }
                }
            }
        ]
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
) -> list[Resource]:
    r: Resource = {
        "resourceType": "MedicationAdministration",
        "id": ctx.rid("ma"),
        "status": status,
        "subject": ctx.subject,
        "effectiveDateTime": ctx.day(at),
    }
    extra = _set_medication(r, ctx, code, None, ref)
    return [*extra, r]


def observation(
    ctx: Ctx,
    code: Code,
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
) -> Resource:
    r: Resource = {
        "resourceType": "Observation",
        "id": ctx.rid("o"),
        "status": status,
        "category": [{"coding": [{"system": C.OBS_CATEGORY, "code": category}]}],
        "code": code.concept(),
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
    return {
        "resourceType": "Procedure",
        "id": ctx.rid("p"),
        "status": "completed",
        "code": code.concept(),
        "subject": ctx.subject,
        "performedDateTime": ctx.day(at),
    }
