"""The ``patient`` query: age at S (from a possibly partial birthDate), administrative sex,
and death on or before S.

Each field given is one test; the answer is their Kleene conjunction (any false -> false,
else any unknown -> unknown). A missing birth date makes an age test unknown whatever
``missing`` says: the patient exists, the attribute is unrecorded. ``within`` and
``min_count`` do not apply to a patient (one record, no date).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any

from fhir_cohort.engine.evaluators.common import Evidence, after_as_of, iso
from fhir_cohort.engine.queries import QueryType, register
from fhir_cohort.engine.rules import Result, Scope

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


def _bounds(node: Any) -> str:
    if node.max_age is None:
        return f">= {node.min_age}"
    if node.min_age is None:
        return f"<= {node.max_age}"
    return f"{node.min_age}-{node.max_age}"


def _age_ok(age: int, node: Any) -> bool:
    if node.min_age is not None and age < node.min_age:
        return False
    return not (node.max_age is not None and age > node.max_age)


def _alive(p: Any, as_of: dt.date, ev: list[Evidence]) -> tuple[bool | None, str]:
    """Not deceased on or before S: False when dead by S (deceasedBoolean true without a date
    included, v1.1), None when a partial death date may be on or before S."""
    if p.deceased is not True:
        return True, ""
    dd = p.deceased_date
    after = after_as_of(dd, as_of, getattr(p, "deceased_high", None))
    if dd is None or after is False:
        note, value, reason = "deceased on or before as-of date", False, ""
        reason = "deceased on or before the screening date"
    elif after is None:
        note, value = "partial death date may be on or before as-of date", None
        reason = "a partial death date may be on or before the screening date"
    else:
        note, value, reason = "death after as-of date ignored", True, ""
    ev.append(Evidence("Patient", str(p.patient_id), None, None, None, iso(dd), "deceased", note))
    return value, reason


def _age(p: Any, node: Any, as_of: dt.date, ev: list[Evidence]) -> tuple[bool | None, str]:
    pid = str(p.patient_id)
    rng = birth_range(p.birth_date_raw)
    if rng is None:
        ev.append(Evidence("Patient", pid, None, None, None, None, None, "birthDate missing"))
        return None, "birth date missing"
    lo_age, hi_age = age_on(rng[1], as_of), age_on(rng[0], as_of)
    value = f"age {lo_age}" if lo_age == hi_age else f"age {lo_age}-{hi_age}"
    ok_lo, ok_hi = _age_ok(lo_age, node), _age_ok(hi_age, node)
    precision = "" if rng[0] == rng[1] else " (partial birthDate)"
    if ok_lo and ok_hi:
        ev.append(Evidence("Patient", pid, None, None, None, None, value, f"age {_bounds(node)}"))
        return True, f"{value} at screening{precision}"
    if not ok_lo and not ok_hi:
        note = f"age not {_bounds(node)}"
        ev.append(Evidence("Patient", pid, None, None, None, None, value, note))
        return False, f"{value} at screening, not {_bounds(node)}{precision}"
    note = "partial birthDate: earliest and latest birthday disagree"
    ev.append(Evidence("Patient", pid, None, None, None, None, value, note))
    return None, f"{value} at screening: partial birth date is ambiguous"


def birth_key(raw: str | None, as_of: dt.date) -> tuple[int, int, bool] | None:
    """All that :func:`_age` reads of a birthDate at S: the completed years at the latest and
    the earliest birthday, and whether the date is partial (None: no usable date). Patients
    equal in it (and in the other Patient fields) answer every age test alike."""
    rng = birth_range(raw)
    if rng is None:
        return None
    return age_on(rng[1], as_of), age_on(rng[0], as_of), rng[0] != rng[1]


def _sex(p: Any, node: Any, ev: list[Evidence]) -> list[tuple[bool | None, str]]:
    gender = None if p.gender is None else str(p.gender)
    out: list[tuple[bool | None, str]] = []
    if node.sexes is not None:
        if gender is None:
            out.append((None, "sex not recorded"))
        elif gender in node.sexes:
            out.append((True, f"sex {gender}"))
        else:
            out.append((False, f"sex {gender}, not " + "/".join(node.sexes)))
    if node.sexes_not is not None:
        if gender is not None and gender in node.sexes_not:
            out.append((False, f"not applicable (sex {gender})"))
        else:
            out.append((True, f"sex {gender or 'not recorded'}"))
    # A sexes_not gate that stays open is no finding: evidence only when a sex test decides.
    if gender is not None and (node.sexes is not None or any(v is False for v, _ in out)):
        ev.append(Evidence("Patient", str(p.patient_id), None, None, None, None, gender, "sex"))
    return out


def evaluate(node: Any, scope: Scope) -> Result:
    p = scope.data.patient
    ev: list[Evidence] = []
    tests: list[tuple[bool | None, str]] = []
    if node.deceased_is_false:
        alive, why = _alive(p, scope.as_of, ev)
        if alive is False:
            # Dead by S decides; the rest is not read (as the first shorthand did).
            return Result(False, why, ev)
        tests.append((alive, why))
    tests.extend(_sex(p, node, ev))
    if node.min_age is not None or node.max_age is not None:
        tests.append(_age(p, node, scope.as_of, ev))
    values = [v for v, _ in tests]
    if False in values:
        return Result(False, "; ".join(r for v, r in tests if v is False and r), ev)
    if None in values:
        unsure = [r for v, r in tests if v is None and r]
        if tests[0][0] is None and node.deceased_is_false and len(tests) > 1:
            # Alive is the unsure part: say what else was found.
            rest = [r for v, r in tests[1:] if r]
            unsure = [f"{'; '.join(rest)}, but {tests[0][1]}"] if rest else unsure
        return Result(None, "; ".join(unsure), ev)
    # reason: "" says nothing (a gate such as "not male" in front of the real test).
    said = "; ".join(r for _, r in tests if r) if node.reason is None else node.reason
    return Result(None if node.match == "possible" else True, said, ev)


def reads(node: Any) -> None:
    # Evaluated for every patient: its evidence names the patient.
    return None


register(QueryType("patient", evaluate, reads))
