"""Lab result interpretation: positive / negative / equivocal, by the spec's I4 precedence.

1. interpretation codes; 2. coded value; 3. value string words; 4. number or titer against
referenceRange.high; 5. anything else is equivocal.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from fhir_cohort.criteria.models import LabRules

POSITIVE = "positive"
NEGATIVE = "negative"
EQUIVOCAL = "equivocal"

_TITER = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*([-+]?\d+(?:\.\d+)?)\s*$")


class Reading(NamedTuple):
    result: str  # positive | negative | equivocal
    rule: str    # which rule decided: interpretation | coded value | string | reference | none
    value: str   # the value as read, for evidence


class Number(NamedTuple):
    value: float
    comparator: str | None  # None, "<", "<=", ">", ">="
    titer: bool


def parse_titer(text: str | None) -> Number | None:
    """'1:320' -> 320 (the dilution); '>1:640' keeps the comparator; None if not a titer.

    >>> parse_titer("1:320")
    Number(value=320.0, comparator=None, titer=True)
    >>> parse_titer("<1:80").comparator
    '<'
    >>> parse_titer("positive") is None
    True
    """
    if not text:
        return None
    m = _TITER.match(text)
    if not m:
        return None
    num, den = float(m.group(2)), float(m.group(3))
    if num <= 0:
        return None
    return Number(den / num, m.group(1), True)


def parse_number(text: str | None) -> Number | None:
    """A plain number with an optional comparator ('>200', '45.1'); titers via parse_titer."""
    if not text:
        return None
    t = parse_titer(text)
    if t is not None:
        return t
    m = _NUMBER.match(text)
    if not m:
        return None
    return Number(float(m.group(2)), m.group(1), False)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def _fmt(n: Number) -> str:
    core = f"1:{n.value:g}" if n.titer else f"{n.value:g}"
    return f"{n.comparator or ''}{core}"


def observation_value(row: Any) -> Number | None:
    """The row's numeric reading: quantity, ratio (titer) or a numeric/titer string."""
    if row.value_type == "ratio" and _is_num(row.ratio_numerator) and _is_num(
        row.ratio_denominator
    ):
        if row.ratio_numerator > 0:
            return Number(row.ratio_denominator / row.ratio_numerator, None, True)
        return None
    if _is_num(row.value_number):
        return Number(float(row.value_number), row.value_comparator or None, False)
    if row.value_type == "string":
        return parse_number(row.value_string)
    return None


def reference_high(row: Any, titer: bool) -> Number | None:
    """referenceRange.high as a Quantity (with comparator) or as a string like '<1:80'."""
    if _is_num(row.ref_high):
        v = float(row.ref_high)
        # A titer's high written as the ratio's value (1/80 = 0.0125) reads as dilution 80.
        if titer and 0 < v < 1:
            v = 1 / v
        return Number(v, row.ref_high_comparator or None, titer)
    if row.ref_high_string:
        return parse_number(str(row.ref_high_string))
    return None


def compare_to_high(value: Number, high: Number) -> str:
    """Positive above the reference high, negative at or below; uncertain comparators equivocal.

    A high written "<H" means normal is below H, so H itself is above normal.
    """
    h = high.value
    strict_high = high.comparator == "<"  # normal range is v < h

    def above(v: float) -> bool:
        return v >= h if strict_high else v > h

    v, c = value.value, value.comparator
    if c in (None, "="):
        return POSITIVE if above(v) else NEGATIVE
    if c == ">":
        # true value > v: above when every value greater than v is above.
        return POSITIVE if v >= h else EQUIVOCAL
    if c == ">=":
        return POSITIVE if above(v) else EQUIVOCAL
    if c == "<":
        # true value < v <= h: at or below the high (and below a strict high).
        return NEGATIVE if v <= h else EQUIVOCAL
    if c == "<=":
        return NEGATIVE if not above(v) else EQUIVOCAL
    return EQUIVOCAL


def _norm_text(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").split()).strip(" .;:!")


def match_words(text: str, rules: LabRules) -> str | None:
    """Word rule (3): exact phrase, else the phrase opening the text; longest phrase first.

    >>> from fhir_cohort.criteria.models import LabRules
    >>> match_words("Not detected", LabRules())
    'negative'
    >>> match_words("POSITIVE (high)", LabRules())
    'positive'
    """
    t = _norm_text(text)
    if not t:
        return None
    table = [(w, POSITIVE) for w in rules.positive_strings]
    table += [(w, NEGATIVE) for w in rules.negative_strings]
    table += [(w, EQUIVOCAL) for w in rules.equivocal_strings]
    table.sort(key=lambda p: -len(p[0]))
    for word, result in table:
        if t == _norm_text(word):
            return result
    for word, result in table:
        if re.match(rf"{re.escape(_norm_text(word))}\b", t):
            return result
    return None


def interpret(row: Any, rules: LabRules, ctx: Any) -> Reading:
    """Apply the precedence rules to one observation row."""
    interp = tuple(row.interpretation_codes or ())
    for vs_ids, result in (
        (rules.interpretation_positive, POSITIVE),
        (rules.interpretation_negative, NEGATIVE),
        (rules.interpretation_equivocal, EQUIVOCAL),
    ):
        if ctx.token_in(vs_ids, interp):
            return Reading(result, "interpretation", ",".join(interp))
    codes = tuple(row.value_codes or ())
    for vs_ids, result in (
        (rules.result_positive, POSITIVE),
        (rules.result_negative, NEGATIVE),
        (rules.result_equivocal, EQUIVOCAL),
    ):
        if ctx.token_in(vs_ids, codes):
            return Reading(result, "coded value", ",".join(codes))
    if row.value_string:
        word = match_words(str(row.value_string), rules)
        if word is not None:
            return Reading(word, "string", str(row.value_string))
    value = observation_value(row)
    if value is not None:
        high = reference_high(row, value.titer)
        shown = _fmt(value) + (f" {row.value_unit}" if row.value_unit and not value.titer else "")
        if high is None:
            return Reading(EQUIVOCAL, "no reference range", shown)
        result = compare_to_high(value, high)
        return Reading(result, "reference", f"{shown} (ref high {_fmt(high)})")
    shown = str(row.value_string or ",".join(codes) or "")
    return Reading(EQUIVOCAL, "none", shown)
