"""I1 age at S from a possibly partial birthDate; deceased on or before S fails."""

from __future__ import annotations

import calendar
import datetime as dt
import re

from fhir_cohort.criteria.models import AgeCriterion
from fhir_cohort.engine.evaluators.common import (
    Context,
    Evidence,
    Outcome,
    PatientData,
    after_as_of,
    iso,
)

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def birth_range(raw: str | None) -> tuple[dt.date, dt.date] | None:
    """Earliest and latest possible birthday of a FHIR (partial) date.

    >>> birth_range("1990-02")
    (datetime.date(1990, 2, 1), datetime.date(1990, 2, 28))
    >>> birth_range("1990")
    (datetime.date(1990, 1, 1), datetime.date(1990, 12, 31))
    """
    if not raw:
        return None
    m = _DATE.match(str(raw).strip())
    if not m:
        return None
    y = int(m.group(1))
    try:
        if m.group(3):
            d = dt.date(y, int(m.group(2)), int(m.group(3)))
            return d, d
        if m.group(2):
            mo = int(m.group(2))
            return dt.date(y, mo, 1), dt.date(y, mo, calendar.monthrange(y, mo)[1])
        return dt.date(y, 1, 1), dt.date(y, 12, 31)
    except ValueError:
        return None


def age_on(birth: dt.date, on: dt.date) -> int:
    """Completed years; a 29 February birthday completes on 1 March in common years."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _ok(age: int, crit: AgeCriterion) -> bool:
    if crit.min_years is not None and age < crit.min_years:
        return False
    return not (crit.max_years is not None and age > crit.max_years)


def _bounds(crit: AgeCriterion) -> str:
    if crit.max_years is None:
        return f">= {crit.min_years}"
    if crit.min_years is None:
        return f"<= {crit.max_years}"
    return f"{crit.min_years}-{crit.max_years}"


def evaluate_age(crit: AgeCriterion, ctx: Context, data: PatientData) -> Outcome:
    p = data.patient
    as_of = ctx.as_of
    ev: list[Evidence] = []
    pid = str(p.patient_id)
    death_unsure = False
    if crit.deceased_is_not_met and p.deceased is True:
        dd = p.deceased_date
        after = after_as_of(dd, as_of, getattr(p, "deceased_high", None))
        # deceasedBoolean true without a date is deceased (v1.1): not_met.
        if dd is None or after is False:
            note = "deceased on or before as-of date"
        elif after is None:
            death_unsure = True
            note = "partial death date may be on or before as-of date"
        else:
            note = "death after as-of date ignored"
        ev.append(Evidence("Patient", pid, None, None, None, iso(dd), "deceased", note))
        if dd is None or after is False:
            return Outcome("not_met", "deceased on or before the screening date", ev)
    rng = birth_range(p.birth_date_raw)
    if rng is None:
        ev.append(Evidence("Patient", pid, None, None, None, None, None, "birthDate missing"))
        return Outcome("unknown", "birth date missing", ev)
    lo_age, hi_age = age_on(rng[1], as_of), age_on(rng[0], as_of)
    value = f"age {lo_age}" if lo_age == hi_age else f"age {lo_age}-{hi_age}"
    ok_lo, ok_hi = _ok(lo_age, crit), _ok(hi_age, crit)
    precision = "" if rng[0] == rng[1] else " (partial birthDate)"
    if ok_lo and ok_hi and death_unsure:
        return Outcome(
            "unknown", f"{value} at screening, but a partial death date may be on or before it", ev
        )
    if ok_lo and ok_hi:
        ev.append(Evidence("Patient", pid, None, None, None, None, value, f"age {_bounds(crit)}"))
        return Outcome("met", f"{value} at screening{precision}", ev)
    if not ok_lo and not ok_hi:
        ev.append(
            Evidence("Patient", pid, None, None, None, None, value, f"age not {_bounds(crit)}")
        )
        return Outcome("not_met", f"{value} at screening, not {_bounds(crit)}{precision}", ev)
    ev.append(
        Evidence(
            "Patient",
            pid,
            None,
            None,
            None,
            None,
            value,
            "partial birthDate: earliest and latest birthday disagree",
        )
    )
    return Outcome("unknown", f"{value} at screening: partial birth date is ambiguous", ev)
