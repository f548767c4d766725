"""Numeric results against a threshold with a UCUM unit, three-valued.

Units are converted by ``ucumvert`` (a parser of the full UCUM grammar, generated from the
official ucum-essence.xml, that builds ``pint`` units from UCUM codes; docs/criteria.md says why
this library). A result's unit is its valueQuantity.code when the system is UCUM, else its unit
text read as a UCUM code. Nothing is compared silently: a missing unit, a unit that does not
parse, units that are not commensurable (mg/dL and mmol/L need a molar mass: never guessed), or
annotations that differ (``mL/min`` is not ``mL/min/{1.73_m2}``) give unknown with the reason.
A result with a comparator (``<5``) is an interval: true only if every value in it passes.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple

UCUM_SYSTEM = "http://unitsofmeasure.org"

_ANNOTATION = re.compile(r"\{[^}]*\}")


class Interval(NamedTuple):
    lo: float
    lo_closed: bool
    hi: float
    hi_closed: bool


def result_interval(value: float, comparator: str | None) -> Interval:
    """The values a result with a comparator may stand for (``<5``: below 5)."""
    inf = math.inf
    return {
        "<": Interval(-inf, False, value, False),
        "<=": Interval(-inf, False, value, True),
        ">": Interval(value, False, inf, False),
        ">=": Interval(value, True, inf, False),
    }.get(comparator or "", Interval(value, True, value, True))


def _threshold_intervals(comparator: str, t: float) -> list[Interval]:
    inf = math.inf
    return {
        ">": [Interval(t, False, inf, False)],
        ">=": [Interval(t, True, inf, False)],
        "<": [Interval(-inf, False, t, False)],
        "<=": [Interval(-inf, False, t, True)],
        "=": [Interval(t, True, t, True)],
        "!=": [Interval(-inf, False, t, False), Interval(t, False, inf, False)],
    }[comparator]


def _inside(a: Interval, b: Interval) -> bool:
    """a is a subset of b."""
    lo_ok = a.lo > b.lo or (a.lo == b.lo and (b.lo_closed or not a.lo_closed))
    hi_ok = a.hi < b.hi or (a.hi == b.hi and (b.hi_closed or not a.hi_closed))
    return lo_ok and hi_ok


def _meets(a: Interval, b: Interval) -> bool:
    """a and b share a value."""
    lo, lo_c = (a.lo, a.lo_closed) if a.lo > b.lo else (b.lo, b.lo_closed)
    if a.lo == b.lo:
        lo_c = a.lo_closed and b.lo_closed
    hi, hi_c = (a.hi, a.hi_closed) if a.hi < b.hi else (b.hi, b.hi_closed)
    if a.hi == b.hi:
        hi_c = a.hi_closed and b.hi_closed
    return lo < hi or (lo == hi and lo_c and hi_c)


def compare(value: float, comparator: str | None, op: str, threshold: float) -> bool | None:
    """Whether a result (``comparator`` ``value``) satisfies ``op threshold``: True when every
    value the result stands for does, False when none does, else None.

    >>> compare(4.0, "<", "<", 5.0), compare(6.0, "<", "<", 5.0), compare(5.0, "<", ">=", 5.0)
    (True, None, False)
    """
    res = result_interval(value, comparator)
    parts = _threshold_intervals(op, threshold)
    if any(_inside(res, p) for p in parts):
        return True
    if not any(_meets(res, p) for p in parts):
        return False
    return None


# --------------------------------------------------------------------------- units


@functools.cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@functools.lru_cache(maxsize=4096)
def _parse(code: str) -> Any:
    """A pint unit for a UCUM code; raises ValueError when it is not UCUM."""
    reg = _registry()
    try:
        q = reg.from_ucum(code)
    except Exception as exc:  # lark and pint raise their own error trees
        raise ValueError(f"{code!r} is not a UCUM unit") from exc
    return reg.Quantity(1, q) if not hasattr(q, "to") else q


def annotations(code: str) -> list[str]:
    return sorted(a.lower() for a in _ANNOTATION.findall(code))


def convert(value: float, source: str, target: str) -> float:
    """``value`` in UCUM ``source`` expressed in UCUM ``target``; ValueError when it cannot
    be (not UCUM, not commensurable, different annotations)."""
    if source == target:
        return value
    if annotations(source) != annotations(target):
        raise ValueError(f"{source} and {target} differ in annotation")
    a, b = _parse(source), _parse(target)
    try:
        factor = (a / b).to("dimensionless").magnitude
    except Exception as exc:
        raise ValueError(f"{source} cannot be converted to {target}") from exc
    # Round away binary noise (150 mg/dL is 1.5 g/L, not 1.5000000000000002).
    return float(f"{value * float(factor):.12g}")


def result_unit(row: Any) -> str | None:
    """The result's unit as UCUM: valueQuantity.code when its system is UCUM, else the unit
    text (read as UCUM, never guessed beyond that)."""
    code = getattr(row, "value_unit_code", None)
    if code:
        return str(code)
    unit = getattr(row, "value_unit", None)
    return str(unit).strip() if unit and str(unit).strip() else None


def compare_quantity(row: Any, number: Any, threshold: Any) -> tuple[bool | None, str]:
    """(verdict, evidence text) of one result row against a :class:`Threshold`."""
    if number is None:
        shown = row.value_string or ",".join(row.value_codes or ()) or "no value"
        return None, f"{shown}: not a number"
    if number.titer:
        return None, f"titer 1:{number.value:g}: not a quantity"
    unit = result_unit(row)
    shown = f"{number.comparator or ''}{number.value:g}" + (f" {unit}" if unit else "")
    want = f"{threshold.comparator} {threshold.value:g} {threshold.unit}"
    if unit is None:
        if threshold.unit != "1":
            return None, f"{shown}: no unit, cannot compare with {want}"
        unit = "1"
    try:
        value = convert(number.value, unit, threshold.unit)
    except ValueError as exc:
        return None, f"{shown}: {exc}"
    verdict = compare(value, number.comparator, threshold.comparator, threshold.value)
    conv = "" if unit == threshold.unit else f" = {value:g} {threshold.unit}"
    word = {True: "meets", False: "fails", None: "cannot tell"}[verdict]
    return verdict, f"{shown}{conv}: {word} {want}"
